"""CUT (docs/seed-methods.md): the judgment format and template, the token terms by hand, and the batched
objective against a one-example-at-a-time brute force on tiny-random."""

from __future__ import annotations

import json
import math

import pytest
import torch

from safealign.data import PairEncoder, load_preferences
from safealign.data.judgment import JUDGMENT_TEMPLATE, JudgmentCollator, encode_judgments, judgment_prompt
from safealign.losses.cut import EPS, cut_losses
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.cut import cut_objective
from safealign.types import JudgmentExample

ROWS = [
    {"prompt": "Name a prime.", "completion": "9 is prime.", "judgment": "Wrong: 9 = 3 x 3.", "score": 2},
    {"prompt": "Say hi.", "completion": "Hi there!", "judgment": "Friendly and correct.", "score": 9},
    {"prompt": "Add 2 and 2.", "completion": "It is 5.", "judgment": "Incorrect sum.", "score": "3"},
]


def test_format_is_detected_parses_scores_and_drops_bad_rows(tmp_path):
    path = tmp_path / "judged.jsonl"
    bad = [{"prompt": "x", "completion": "y", "judgment": "", "score": 1},
           {"prompt": "x", "completion": "y", "judgment": "ok", "score": "high"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS + bad))
    parsed = load_preferences(path)
    assert parsed.format == "judgment"
    assert [type(i) for i in parsed.items] == [JudgmentExample] * 3
    assert [i.score for i in parsed.items] == [2.0, 9.0, 3.0]
    assert [(d.row, d.field) for d in parsed.dropped] == [(3, "judgment"), (4, "score")]


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

    plain, judged = probs(prompt), probs(judgment_prompt(prompt, row["judgment"]))
    if float(row["score"]) >= positive_score:
        return sum(-math.log(p) for p in plain) / len(plain)
    mis = [-alpha * math.log(1 - p + EPS) if q / p > threshold else -math.log(p) for p, q in zip(plain, judged)]
    return 0.5 * (sum(-math.log(q) for q in judged) / len(judged) + sum(mis) / len(mis))


def test_batched_objective_matches_brute_force_and_its_gradient_flows_through_both_views():
    model, tok = tiny_model(), tiny_tokenizer()
    examples = [JudgmentExample(({"role": "user", "content": r["prompt"]},), r["completion"], r["judgment"],
                                float(r["score"])) for r in ROWS]
    encoded, report = encode_judgments(PairEncoder(tok), examples)
    assert report.dropped == ()
    batch = JudgmentCollator(tok.pad_token_id)(encoded)
    # threshold 1.0: on a random model about half the tokens are flagged, so both branches are exercised
    out = cut_objective(model.eval(), batch, threshold=1.0, alpha=0.7)
    expected = [one_example_loss(model, tok, r, threshold=1.0, alpha=0.7) for r in ROWS]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-4)
    assert 0 < out.metrics["cut/flagged_fraction"].mean().item() < 1
    out.losses.mean().backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


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
