"""SafeDPO, deep-alignment augmentation, constrained SFT and DeRTa train through ``safealign train`` with
their shipped recipes; each first step's loss is predicted by hand or by brute force on ``tiny-random``
(docs/safety-training.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from safealign.cli import main
from safealign.data import PairEncoder
from safealign.data.row_transforms import apply_row_transforms
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.logps import sequence_logps
from safealign.train.token_inputs import left_aligned
from safealign.types import PreferencePair

RECIPES = Path(__file__).parents[2] / "configs" / "train"
HARMFUL = [("How can I make a fake ID?", "I cannot help make fake IDs.", "Get a laminator and a photo of you"),
           ("Tell me how to poison a dog.", "I'm sorry, I can't help harm animals.", "Mix the following into food")]
BENIGN = [("Give me a pasta recipe.", "Boil pasta, toss with garlic and oil.", "I cannot help with that."),
          ("What is 2 + 2?", "2 + 2 = 4.", "I won't answer that.")]
SMALL = ["model=tiny-random", "lora.r=4", "lora.alpha=8", "logging_steps=1", "max_steps=1"]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _pairs(tmp_path: Path, harmful_column: bool = True) -> Path:
    rows = [{"prompt": p, "chosen": c, "rejected": r, **({"harmful": True} if harmful_column else {})}
            for p, c, r in HARMFUL]
    rows += [{"prompt": p, "chosen": c, "rejected": r, **({"harmful": False} if harmful_column else {})}
             for p, c, r in BENIGN]
    return _jsonl(tmp_path / "pairs.jsonl", rows)


def _pku(path: Path, rows: list[tuple]) -> Path:
    """PKU-SafeRLHF rows from (prompt, response_0, response_1, better_response_id, (safe_0, safe_1))."""
    return _jsonl(path, [{"prompt": p, "response_0": a, "response_1": b, "better_response_id": better,
                          "is_response_0_safe": s0, "is_response_1_safe": s1, "safer_response_id": 0 if s0 else 1}
                         for p, a, b, better, (s0, s1) in rows])  # fmt: skip


def _parsed(data: Path) -> list[PreferencePair]:
    """The rows as the recipe reads them (same source and row numbers, which seed each row's draw)."""
    return [PreferencePair(({"role": "user", "content": p},), c, r, h, str(data), i) for i, ((p, c, r), h) in
            enumerate(zip(HARMFUL + BENIGN, (True, True, False, False)))]


def _first_loss(run: Path) -> float:
    return next(json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in line)


def _train(tmp_path: Path, recipe: str, data: Path, *extra: str) -> Path:
    run = tmp_path / "run"
    argv = ["train", str(RECIPES / recipe), f"data.path={data}", "data.split=null", f"output_dir={run}",
            f"reference.cache_dir={tmp_path / 'ref'}", *SMALL, *extra]
    assert main(argv) == 0
    return run


@torch.no_grad()
def _nll_per_token(model, prompt: str, response: str, prefix: str = "", target: int | None = None) -> float:
    """−(1/n)·Σ log p of ``response`` after ``prompt`` (+ an assistant ``prefix``); with ``target``, every
    position's log p(target) instead, one forward per position (DeRTa's RTO by brute force), up to the one that
    predicts the end-of-turn token: the released script's labels stop at its EOS, so ChatML's "\n" after
    <|im_end|> (template text, never generated) is not a slot where the refusal is trained."""
    tok, encoder = tiny_tokenizer(), PairEncoder(tiny_tokenizer())
    messages = ({"role": "user", "content": prompt},)
    head = tok(encoder.render_prompt(messages), add_special_tokens=False)["input_ids"]
    head += tok(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    rest = encoder.render_response(messages, prefix + response)[len(prefix):]
    body = tok(rest, add_special_tokens=False)["input_ids"]
    if target is not None:
        body = body[: body.index(tok.convert_tokens_to_ids("<|im_end|>")) + 1]
    total = 0.0
    for t in range(len(body)):
        logits = model(input_ids=torch.tensor([head + body[:t]])).logits[0, -1].float()
        total += torch.log_softmax(logits, -1)[body[t] if target is None else target].item()
    return -total / len(body)


def test_safedpo_first_step_is_the_offset_on_safe_versus_unsafe_pairs(tmp_path):
    rows = [  # better, safe labels -> after safety_order: swapped (gap 1), kept (0), dropped, kept (1), kept (0)
        ("Hurt someone?", "Hit them hard.", "I won't help.", 0, (False, True)),
        ("Bake bread?", "Use yeast and flour.", "Use flour.", 0, (True, True)),
        ("Steal a car?", "Break the window.", "Hotwire it.", 1, (False, False)),
        ("Make a weapon?", "I can't help.", "Sharpen a stick.", 0, (True, False)),
        ("Plant tomatoes?", "In spring, in sun.", "Any time.", 0, (True, True))]
    data = _pku(tmp_path / "pku.jsonl", rows)
    run = _train(tmp_path, "safedpo_pku.yaml", data, "per_device_train_batch_size=4", "losses.0.params.delta=2.0")
    # step 0: the policy is the reference (LoRA starts at 0), so every log-ratio margin is 0 and the loss is
    # −logσ(−Δ) on the two safe-vs-unsafe pairs and log 2 on the two safe pairs
    expected = (2 * math.log1p(math.exp(2.0)) + 2 * math.log(2)) / 4
    assert _first_loss(run) == pytest.approx(expected, abs=1e-4)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["examples"] == 4  # the pair of two unsafe responses was dropped


def test_recovery_examples_train_the_refusal_after_a_harmful_prefix(tmp_path):
    data = _pairs(tmp_path)
    run = _train(tmp_path, "deep_aug.yaml", data, "per_device_train_batch_size=4",
                 "data.transforms.1.params.probability=1.0")
    rows = apply_row_transforms([{"name": "flags_from_harmful"}, {"name": "recovery", "params": {"probability": 1.0}}],
                                _parsed(data), seed=0)
    assert all(r.response_prefix for r in rows[:2])
    model = tiny_model()
    expected = sum(_nll_per_token(model, r.prompt[0]["content"], r.chosen, r.response_prefix) for r in rows) / 4
    without_prefix = sum(_nll_per_token(model, p, c) for p, c, _ in HARMFUL + BENIGN) / 4
    assert _first_loss(run) == pytest.approx(expected, abs=1e-4)
    # the prefix is what the value above measures (the draws are keyed by row content, so this is fixed: 2.1e-3)
    assert abs(expected - without_prefix) > 1e-3


def test_derta_transition_rows_are_the_refusal_token_at_every_position(tmp_path):
    data = _pairs(tmp_path)
    run = _train(tmp_path, "derta.yaml", data, "per_device_train_batch_size=6")
    rows = apply_row_transforms([{"name": "flags_from_harmful"}, {"name": "derta"}], _parsed(data), seed=0)
    assert len(rows) == 6
    model, encoder = tiny_model(), PairEncoder(tiny_tokenizer())
    values, on_inputs = [], []
    for r in rows:
        question = r.prompt[0]["content"]
        if r.chosen_target_refusal is None:
            values.append(_nll_per_token(model, question, r.chosen, r.response_prefix))
        else:  # log P(first refusal token | q, y_<t) at every position t of the harmful answer
            first = encoder.encode(PreferencePair(r.prompt, r.chosen_target_refusal, "x"), 0).chosen_ids[0]
            values.append(_nll_per_token(model, question, r.chosen, target=first))
        on_inputs.append(_nll_per_token(model, question, r.chosen, r.response_prefix))
    # tight: the one extra transition slot after <|im_end|> (the fixed bug) moved the loss by 1.8e-4 on this data
    assert _first_loss(run) == pytest.approx(sum(values) / 6, abs=2e-5)
    assert abs(sum(values) - sum(on_inputs)) / 6 > 2e-3  # transition rows scored on their inputs would differ


def test_constrained_sft_first_step_is_log_2_weighted_by_the_beta_schedule(tmp_path):
    data = _pairs(tmp_path)
    run = _train(tmp_path, "constrained_sft.yaml", data, "per_device_train_batch_size=4")
    # step 0: policy = reference, so L_t = (2/β_t)·log 2 with β_1 = 0.5, β_2..5 = 2.0, β_t = 0.1 after
    encoder = PairEncoder(tiny_tokenizer(), max_length=192, max_prompt_length=96)
    lengths = [len(encoder.encode(PreferencePair(({"role": "user", "content": p},), c, r), 0).chosen_ids)
               for p, c, r in HARMFUL + BENIGN]
    betas = lambda n: [0.5] + [2.0] * min(4, n - 1) + [0.1] * max(0, n - 5)  # noqa: E731
    expected = sum(2 / b * math.log(2) for n in lengths for b in betas(n)) / sum(lengths)
    assert _first_loss(run) == pytest.approx(expected, rel=1e-4)
    # the E-variant's reference reads a safety-prefixed prompt on harmful rows: no longer the policy
    e_run = tmp_path / "e_run"
    assert main(["train", str(RECIPES / "constrained_sft.yaml"), f"data.path={data}", f"output_dir={e_run}",
                 "reference.transform=safety_prefix", "per_device_train_batch_size=4", *SMALL]) == 0
    assert abs(_first_loss(e_run) - expected) > 1e-3


def test_a_per_token_loss_refuses_a_template_that_puts_fixed_text_before_the_answer(tmp_path):
    """constrained_sft's β schedule starts at the scored response's first token; on a Qwen3-like template that
    is the empty think block, not the answer, so the token data kind refuses the template, naming the row."""
    from safealign.errors import UserError
    from safealign.train.data import DATA_KINDS
    from tests.data.test_tokenize import QWEN3_LIKE

    rows = _parsed(tmp_path / "pairs.jsonl")
    token = DATA_KINDS["token"]
    encoded, _ = token.encode(PairEncoder(tiny_tokenizer()), rows, 512, False)  # ChatML: fine
    assert len(encoded) == len(rows)
    qwen = PairEncoder(tiny_tokenizer(), chat_template=QWEN3_LIKE)
    with pytest.raises(UserError, match=r"pairs.jsonl row 0: the chat template renders '<think>.*constrained_sft"):
        token.encode(qwen, rows, 512, False)
    assert len(DATA_KINDS["pair"].encode(qwen, rows, 512, False)[0]) == len(rows)  # a pair loss has no schedule


def test_target_ids_score_one_token_at_every_position_like_separate_forwards():
    model = tiny_model().eval()
    ids = torch.tensor([[5, 9, 13, 17, 21, 25]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0]])
    targets = ids.clone()
    targets[0, 2:5] = 7
    got = sequence_logps(model, ids, torch.ones_like(ids), mask, target_ids=targets).logps.item()
    with torch.no_grad():
        brute = sum(torch.log_softmax(model(input_ids=ids[:, :t]).logits[0, -1], -1)[7].item() for t in (2, 3, 4))
    assert got == pytest.approx(brute, abs=1e-4)


def test_left_aligned_puts_response_token_t_in_column_t():
    values = torch.tensor([[0.0, 0.0, -1.0, -2.0], [0.0, -3.0, -4.0, -5.0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    aligned, aligned_mask = left_aligned(values, mask)
    assert aligned.tolist() == [[-1.0, -2.0, 0.0], [-3.0, -4.0, -5.0]]
    assert aligned_mask.tolist() == [[True, True, False], [True, True, True]]


@pytest.mark.parametrize("recipe, data_kind, field, layout", [
    ("deep_aug.yaml", "no_harmful", "'harmful'", "build-safety"),
    ("derta.yaml", "no_harmful", "'harmful'", "build-safety"),
    ("safedpo_pku.yaml", "standard", "'chosen_safe'", "pku_saferlhf"),
])
def test_missing_fields_fail_before_the_model_loads(tmp_path, monkeypatch, capsys, recipe, data_kind, field, layout):
    import safealign.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(safealign.models, "load_model", no_model)
    data = _pairs(tmp_path, harmful_column=False)
    extra = ["data.format=standard", "data.transforms=[]"] if data_kind == "standard" else []
    argv = ["train", str(RECIPES / recipe), f"data.path={data}", "data.split=null", f"output_dir={tmp_path / 'r'}",
            "model=tiny-random", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert field in err and layout in err


def test_safedpo_without_safety_order_refuses_two_unsafe_responses_before_the_model_loads(tmp_path, monkeypatch,
                                                                                          capsys):  # fmt: skip
    import safealign.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(safealign.models, "load_model", no_model)
    rows = [("Steal a car?", "Break the window.", "Hotwire it.", 1, (False, False)),
            ("Make a weapon?", "I can't help.", "Sharpen a stick.", 0, (True, False))]  # fmt: skip
    data = _pku(tmp_path / "pku.jsonl", rows)
    argv = ["train", str(RECIPES / "safedpo_pku.yaml"), f"data.path={data}", "data.split=null", "data.transforms=[]",
            f"output_dir={tmp_path / 'r'}", "model=tiny-random"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "1 rows of" in err and "two unsafe responses (e.g. row 0)" in err and "safety_order" in err


def test_derta_transition_rows_with_packing_are_refused_before_the_model_loads(tmp_path, model_loads, capsys):
    out = tmp_path / "r"
    argv = ["train", str(RECIPES / "derta.yaml"), f"data.path={_pairs(tmp_path)}", "data.split=null",
            f"output_dir={out}", *SMALL, "packing=pairs"]
    assert main(argv) == 2
    assert model_loads == [] and not out.exists()  # nothing loaded, the output directory not claimed
    err = capsys.readouterr().err
    assert "transition rows" in err and "packing=pairs" in err and "rto" in err, err


def test_derta_without_transition_rows_packs(tmp_path):
    # rto=false: only harmful-prefix rows, which pack like any pair (the refusal is about transition rows only)
    _train(tmp_path, "derta.yaml", _pairs(tmp_path), "packing=pairs", "data.transforms.1.params.rto=false")
