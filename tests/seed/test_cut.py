"""CUT (docs/seed-methods.md): the judgment format and template, the token terms by hand, and the batched
objective against a one-example-at-a-time brute force on tiny-random."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from safealign.data import PairEncoder, load_preferences
from safealign.data.collate import pad_sequences
from safealign.data.judgment import JUDGMENT_TEMPLATE, JudgmentCollator, encode_judgments, judgment_prompt
from safealign.losses.cut import EPS, cut_losses
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.cut import cut_objective
from safealign.train.logps import token_logps
from safealign.types import JudgmentExample

RECIPE = Path(__file__).parents[2] / "configs" / "train" / "cut_judgments.yaml"

ROWS = [
    {"prompt": "Name a prime.", "completion": "9 is prime.", "judgment": "Wrong: 9 = 3 x 3.", "score": 2},
    {"prompt": "Say hi.", "completion": "Hi there!", "judgment": "Friendly and correct.", "score": 9},
    {"prompt": "Add 2 and 2.", "completion": "It is 5.", "judgment": "Incorrect sum.", "score": "3"},
]


def test_format_is_detected_parses_scores_and_drops_bad_rows(tmp_path):
    path = tmp_path / "judged.jsonl"
    bad = [{"prompt": "x", "completion": "y", "judgment": 5, "score": 1},
           {"prompt": "x", "completion": "y", "judgment": "ok", "score": "high"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS + bad))
    parsed = load_preferences(path)
    assert parsed.format == "judgment"
    assert [type(i) for i in parsed.items] == [JudgmentExample] * 3
    assert [i.score for i in parsed.items] == [2.0, 9.0, 3.0]
    assert [(d.row, d.field) for d in parsed.dropped] == [(3, "judgment"), (4, "score")]


def test_a_row_may_leave_its_judgment_empty_or_out_and_reads_as_none(tmp_path):
    # the official code (wwxu21/CUT) gives a positive (score >= 7) no judgment: only its plain view is trained on
    rows = [{"prompt": "Say hi.", "completion": "Hi there!", "judgment": "", "score": 9},
            {"prompt": "Say hi.", "completion": "Hello!", "judgment": None, "score": 10},
            {"prompt": "Say hi.", "completion": "Hey.", "judgment": "  ", "score": 8}, *ROWS]
    path = tmp_path / "judged.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parsed = load_preferences(path)
    assert not parsed.dropped
    assert [i.judgment for i in parsed.items] == [None, None, None, *(r["judgment"] for r in ROWS)]


def test_cut_refuses_a_negative_row_without_a_judgment_naming_the_file_row_and_field(tmp_path):
    from safealign.errors import UserError
    from safealign.config import load_config
    from safealign.train.config import TrainConfig
    from safealign.train.objectives.cut import CutObjective

    path = tmp_path / "judged.jsonl"
    positive = {"prompt": "Say hi.", "completion": "Hello!", "judgment": None, "score": 9}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*ROWS, positive]))
    config = load_config(TrainConfig, RECIPE, [f"data.path={path}", "data.split=null", "model=tiny-random"])
    _, parsed = CutObjective().load_rows(config)  # a positive needs no judgment
    assert [r.judgment for r in parsed] == [*(r["judgment"] for r in ROWS), None]
    negative = {"prompt": "Say hi.", "completion": "Go away.", "judgment": "", "score": 1}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*ROWS, positive, negative]))
    with pytest.raises(UserError, match=rf"objective 'cut': {path} row 4: field 'judgment': .*score 1 < "
                                        r"positive_score=7\)"):
        CutObjective().load_rows(config)


def test_judgment_view_rewrites_the_last_user_turn_only():
    prompt = ({"role": "system", "content": "S"}, {"role": "user", "content": "Q"})
    out = judgment_prompt(prompt, "J")
    assert out[0] == prompt[0]
    assert out[1] == {"role": "user", "content": JUDGMENT_TEMPLATE.format(request="Q", judgment="J")}


def test_token_terms_by_hand():
    # example 0 negative with 3 tokens, example 1 positive with 2 tokens
    p_plain = torch.tensor([0.5, 0.2, 0.9, 0.4, 0.8])
    p_judged = torch.tensor([0.6, 0.1, 0.95, 0.7, 0.1])
    rows = torch.tensor([0, 0, 0, 1, 1])
    losses, metrics = cut_losses(p_plain.log(), p_judged.log(), rows, torch.tensor([True, False]),
                                 threshold=1.1, alpha=0.5)
    # ratios 1.2 (> 1.1: unlikelihood), 0.5 (NLL), 1.0556 (NLL)
    misalign = [-0.5 * math.log(1 - 0.5 + EPS), -math.log(0.2), -math.log(0.9)]
    align_n = -(math.log(0.6) + math.log(0.1) + math.log(0.95)) / 3
    assert losses[0].item() == pytest.approx(0.5 * (align_n + sum(misalign) / 3), rel=1e-5)
    assert losses[1].item() == pytest.approx(-(math.log(0.4) + math.log(0.8)) / 2, rel=1e-5)
    assert metrics["cut/flagged_fraction"].mean().item() == pytest.approx(1 / 3)


@torch.no_grad()
def one_example_loss(model, tok, row, positive_score=7.0, threshold=1.1, alpha=1.0) -> float:
    """Unbatched, full softmax per position, the formula written out."""
    encoder = PairEncoder(tok)
    prompt = ({"role": "user", "content": row["prompt"]},)
    response = tok(encoder.render_response(prompt, row["completion"]), add_special_tokens=False)["input_ids"]

    def probs(p):
        ids = tok(encoder.render_prompt(p), add_special_tokens=False)["input_ids"] + response
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        start = len(ids) - len(response)
        return [torch.softmax(logits[t - 1], -1)[ids[t]].item() for t in range(start, len(ids))]

    plain = probs(prompt)
    if float(row["score"]) >= positive_score:  # Align-P: the plain view only, no judgment needed
        return sum(-math.log(p) for p in plain) / len(plain)
    judged = probs(judgment_prompt(prompt, row["judgment"]))
    mis = [-alpha * math.log(1 - p + EPS) if q / p > threshold else -math.log(p) for p, q in zip(plain, judged)]
    return 0.5 * (sum(-math.log(q) for q in judged) / len(judged) + sum(mis) / len(mis))


def examples_of(rows) -> list[JudgmentExample]:
    return [JudgmentExample(({"role": "user", "content": r["prompt"]},), r["completion"], r["judgment"],
                            float(r["score"])) for r in rows]


def forwards(model, run) -> int:
    """How many forward passes (calls of the model's input embedding) ``run()`` makes, counted on a second call:
    the first one may also probe the model (safealign/train/logps.py, once per model)."""
    run()
    calls = []
    handle = model.get_input_embeddings().register_forward_pre_hook(lambda *_: calls.append(1))
    run()
    handle.remove()
    return len(calls)


def test_batched_objective_matches_brute_force_and_its_gradient_flows_through_both_views():
    model, tok = tiny_model(), tiny_tokenizer()
    rows = [*ROWS, {"prompt": "A colour?", "completion": "Blue.", "judgment": None, "score": 8}]
    encoded, report = encode_judgments(PairEncoder(tok), examples_of(rows))
    assert report.dropped == ()
    batch = JudgmentCollator(tok.pad_token_id)(encoded)
    assert batch["judged_rows"].tolist() == [0, 2]  # the negatives: only they are scored after their judgment
    # threshold 1.0: on a random model about half the tokens are flagged, so both branches are exercised
    out = cut_objective(model.eval(), batch, threshold=1.0, alpha=0.7)
    assert forwards(model, lambda: cut_objective(model, batch)) == 2
    expected = [one_example_loss(model, tok, r, threshold=1.0, alpha=0.7) for r in rows]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-4)
    assert 0 < out.metrics["cut/flagged_fraction"].mean().item() < 1
    out.losses.mean().backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


def two_view_losses(model, tok, rows, **kw) -> list[float]:
    """CUT's losses as computed before positives skipped their judgment view: every row scored after both views."""
    encoder, examples = PairEncoder(tok), examples_of(rows)

    def ids(text):
        return tuple(tok(text, add_special_tokens=False)["input_ids"])

    responses = [ids(encoder.render_response(ex.prompt, ex.completion)) for ex in examples]
    views = []
    for prompts in ([ex.prompt for ex in examples], [judgment_prompt(ex.prompt, ex.judgment) for ex in examples]):
        input_ids, attention, mask = pad_sequences([ids(encoder.render_prompt(p)) for p in prompts], responses,
                                                   tok.pad_token_id)
        views.append((token_logps(model, input_ids, attention, mask)[mask.bool()], mask.bool().nonzero()[:, 0]))
    (plain, rows_), (judged, _) = views
    negative = torch.tensor([ex.score < 7 for ex in examples])
    return cut_losses(plain, judged, rows_, negative, **kw)[0].tolist()


POSITIVES = [ROWS[1], {"prompt": "A colour?", "completion": "Blue, like the sky.", "judgment": "Apt.", "score": 8}]


@torch.no_grad()
def test_a_positive_only_batch_skips_the_judgment_view_and_its_loss_is_unchanged():
    model, tok = tiny_model().eval(), tiny_tokenizer()
    encoded, _ = encode_judgments(PairEncoder(tok), examples_of(POSITIVES))
    assert [e.judged_prompt_ids for e in encoded] == [None, None]
    batch = JudgmentCollator(tok.pad_token_id)(encoded)
    assert "judged_input_ids" not in batch and batch["judged_rows"].tolist() == []
    out = cut_objective(model, batch, threshold=1.0, alpha=0.7)
    assert forwards(model, lambda: cut_objective(model, batch)) == 1  # the plain view only
    assert out.losses.tolist() == pytest.approx(two_view_losses(model, tok, POSITIVES, threshold=1.0, alpha=0.7),
                                                rel=1e-6)
    assert out.metrics["cut/flagged_fraction"].numel() == 0 and out.metrics["cut/align_p"].numel() == 2


def test_a_positive_is_length_budgeted_by_its_plain_view_only():
    tok = tiny_tokenizer()
    judgment = "A long judgment that says a great deal about the response. " * 4
    rows = [{"prompt": "Say hi to me.", "completion": "Hi there, nice to meet you!", "judgment": judgment,
             "score": score} for score in (9, 2)]  # a positive, and a negative with the same long judgment

    def length(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    encoder = PairEncoder(tok)
    prompt = ({"role": "user", "content": rows[0]["prompt"]},)
    plain = length(encoder.render_prompt(prompt))
    response = length(encoder.render_response(prompt, rows[0]["completion"]))
    assert length(encoder.render_prompt(judgment_prompt(prompt, judgment))) > plain + response + 3
    # the whole plain view fits; the judgment view does not
    encoded, report = encode_judgments(PairEncoder(tok, max_length=plain + response + 3, max_prompt_length=None),
                                       examples_of(rows))
    assert report.dropped == (1,) and report.responses_truncated == 0  # the negative still needs its judged view
    assert len(encoded[0].response_ids) == response and encoded[0].prompt_ids == encoded[0].prompt_ids[:plain]
    # prompts cut to plain + 5 tokens: before, the positive's response was cut to fit beside the judgment view
    encoded, report = encode_judgments(PairEncoder(tok, max_length=plain + response + 3, max_prompt_length=plain + 5),
                                       examples_of(rows))
    assert [len(e.response_ids) for e in encoded] == [response, response - 2]
    assert report.responses_truncated == 1 and report.prompts_truncated == 1  # the negative's only
    assert len(encoded[0].prompt_ids) == plain and encoded[0].judged_prompt_ids is None


def test_encoding_names_the_row_a_template_rejects_and_logs_what_it_cut(caplog):
    from safealign.errors import UserError
    from safealign.models.tiny import CHATML_TEMPLATE

    picky = "{% if 'FORBIDDEN' in messages[-1]['content'] %}{{ raise_exception('no such word') }}{% endif %}"
    encoder = PairEncoder(tiny_tokenizer(), chat_template=picky + CHATML_TEMPLATE, max_length=48, max_prompt_length=40)
    def example(text, row):
        return JudgmentExample(({"role": "user", "content": text},), "An answer that goes on " * 3, "fine", 5.0,
                               source="j.jsonl", row=row)

    with pytest.raises(UserError, match=r"j\.jsonl row 1: the chat template rejected this conversation: no such word"):
        encode_judgments(encoder, [example("hi", 0), example("FORBIDDEN", 1)])
    with caplog.at_level("INFO"):
        _, report = encode_judgments(encoder, [example("hi", 0)])
    assert report.responses_truncated == 1 and report.prompts_truncated == 1
    assert any(r.levelname == "WARNING" and "judgment tokenization: 1 examples: 1 prompts left-truncated, 1 responses "
               "cut" in r.getMessage() for r in caplog.records)


def test_judgment_rows_rendered_by_the_template_fallback_are_counted(caplog):
    """CUT's encoder rendered a response with the response + eos_token fallback uncounted, as pairs once were
    (safealign/data/tokenize.py, TruncationReport.template_fallbacks)."""
    tok = tiny_tokenizer()
    odd = (  # renders the last user turn differently once an assistant turn follows
        "{% for m in messages %}{% if m['role'] == 'user' and not loop.last %}{{ 'U> ' + m['content'] + '\n' }}"
        "{% else %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT>' }}{% endif %}"
    )
    with caplog.at_level("WARNING"):
        _, report = encode_judgments(PairEncoder(tok, chat_template=odd), examples_of(POSITIVES))
    assert report.template_fallbacks == len(POSITIVES) and "response + eos_token" in caplog.text
    _, report = encode_judgments(PairEncoder(tok), examples_of(POSITIVES))
    assert report.template_fallbacks == 0
