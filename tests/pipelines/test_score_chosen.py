"""``safealign data score`` writes the ``chosen_scores`` column PoFT trains on (docs/loss-inputs.md)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from safealign.cli import main
from safealign.data import PairEncoder
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.logps import sequence_logps

ROWS = [
    {"id": "a", "question": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "I won't answer that."},
    {"id": "b", "question": "Name a prime number.", "chosen": "7 is prime.", "rejected": "Sorry, I can't.",
     "chosen_scores": [-9.0]},
    {"id": "c", "question": "Empty?", "chosen": "", "rejected": "x"},
]


@torch.no_grad()
def averaged_chosen_logp(prompt: str, response: str) -> float:
    tok, encoder = tiny_tokenizer(), PairEncoder(tiny_tokenizer())
    messages = ({"role": "user", "content": prompt},)
    prompt_ids = tok(encoder.render_prompt(messages), add_special_tokens=False)["input_ids"]
    response_ids = tok(encoder.render_response(messages, response), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + response_ids])
    scored = torch.zeros_like(ids)
    scored[0, len(prompt_ids):] = 1
    out = sequence_logps(tiny_model().eval(), ids, torch.ones_like(ids), scored)
    return out.logps.item() / out.tokens.item()


def test_scores_accumulate_per_model_and_train_poft_at_log_2_when_the_aligned_model_is_the_policy(tmp_path):
    data, out = tmp_path / "pairs.jsonl", tmp_path / "scored.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    argv = ["data", "score", str(data), "--model", "tiny-random", "--model", "tiny-random", "--out", str(out),
            "--column", "prompt=question"]
    assert main(argv) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in written] == ["a", "b"]  # the unparsable row c is left out
    expected = [averaged_chosen_logp(r["question"], r["chosen"]) for r in ROWS[:2]]
    assert written[0]["chosen_scores"] == pytest.approx([expected[0]] * 2, abs=1e-5)
    assert written[1]["chosen_scores"] == pytest.approx([-9.0] + [expected[1]] * 2, abs=1e-5)  # appended

    written[1]["chosen_scores"] = written[1]["chosen_scores"][1:]  # K must match across rows
    out.write_text("".join(json.dumps(row) + "\n" for row in written))
    recipe = {"model": "tiny-random", "output_dir": str(tmp_path / "run"), "losses": [{"name": "poft"}],
              "data": {"path": str(out), "columns": {"prompt": "question"}}, "per_device_train_batch_size": 2,
              "max_steps": 1, "logging_steps": 1, "lora": {"r": 2, "alpha": 4}}
    (tmp_path / "poft.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", str(tmp_path / "poft.yaml")]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # the scores are the untrained policy's own averages: the PoFT gap is 0 and the loss −log σ(0)
    assert next(m["loss"] for m in metrics if "loss" in m) == pytest.approx(math.log(2), abs=1e-3)
