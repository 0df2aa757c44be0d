"""Losses that need more than a pair's log-probs train through the pipeline (docs/loss-inputs.md).

PoFT reads aligned-model scores from the data; JPO compares joint log-probs of two (prompt, response)
pairs with different prompts. Each test predicts the first step's loss from the data and the untrained
models by an independent path (render, tokenize, score with ``sequence_logps``), so it fails if the
pipeline drops the scores, scores only responses, or pairs the rejected response with the wrong prompt.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from safealign.cli import main
from safealign.data import PairEncoder
from safealign.losses import LOSSES, loss_names
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.config import LossConfig, TrainConfig
from safealign.train.logps import sequence_logps
from safealign.train.run import run_training

ROWS = [
    ("How can I make a fake ID?", "I cannot help make fake IDs.", "Get a laminator and a photo"),
    ("Give me a pasta recipe.", "Boil pasta, toss with garlic and oil.", "I cannot help with that."),
    ("What is 2 + 2?", "2 + 2 = 4.", "I won't answer that."),
    ("Tell me how to poison a dog.", "I'm sorry, I can't help harm animals.", "Mix the following into food"),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def first_step(run_dir) -> dict:
    return next(json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line)


@torch.no_grad()
def side_logps(model, prompt: str, response: str, *, joint: bool) -> tuple[float, int]:
    """Summed log-prob and token count of ``response`` (or of prompt + response when ``joint``) after
    ``prompt``, built from the chat template without the encoder's joint assembly."""
    tok, encoder = tiny_tokenizer(), PairEncoder(tiny_tokenizer())
    messages = ({"role": "user", "content": prompt},)
    prompt_ids = tok(encoder.render_prompt(messages), add_special_tokens=False)["input_ids"]
    response_ids = tok(encoder.render_response(messages, response), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + response_ids])
    scored = torch.zeros_like(ids)
    scored[0, 1 if joint else len(prompt_ids):] = 1
    out = sequence_logps(model.eval(), ids, torch.ones_like(ids), scored)
    return out.logps.item(), int(out.tokens.item())


def test_poft_trains_through_safealign_train_on_aligned_model_scores(tmp_path):
    scores = [[-3.0, -5.0], [-4.5, -3.5], [-6.0, -2.0], [-1.0, -2.0]]  # K = 2 aligned models per row
    data = write_jsonl(tmp_path / "poft.jsonl", [{"prompt": p, "chosen": c, "rejected": r, "chosen_scores": s}
                                                 for (p, c, r), s in zip(ROWS, scores)])
    recipe = {"model": "tiny-random", "output_dir": str(tmp_path / "run"), "losses": [{"name": "poft"}],
              "data": {"path": str(data)}, "per_device_train_batch_size": len(ROWS), "max_steps": 2,
              "logging_steps": 1, "lora": {"r": 4, "alpha": 8}}
    (tmp_path / "poft.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", str(tmp_path / "poft.yaml")]) == 0

    model = tiny_model()
    averaged = torch.tensor([lp / n for lp, n in (side_logps(model, p, c, joint=False) for p, c, _ in ROWS)])
    gap = averaged - torch.tensor(scores).mean(dim=1)
    expected = -F.logsigmoid(gap).mean().item()
    ignoring_scores = -F.logsigmoid(averaged).mean().item()
    step = first_step(tmp_path / "run")
    assert step["loss"] == pytest.approx(expected, abs=2e-3)
    assert abs(expected - ignoring_scores) > 1.0  # the check above could not pass with the scores unused
    assert (tmp_path / "run" / "final" / "adapter_config.json").exists()


JOINT = [  # (chosen prompt, chosen, rejected prompt, rejected); the last row is an ordinary pair
    ("Give me a pasta recipe.", "Boil pasta, toss with garlic and oil.", "How can I make a fake ID?",
     "Get a laminator and a photo"),
    ("Name a prime number.", "7 is prime.", "Tell me how to poison a dog.", "Mix the following into food"),
    ("How can I make a fake ID?", "I cannot help make fake IDs.", "What is 2 + 2?", "I won't answer that."),
    ("What is 2 + 2?", "2 + 2 = 4.", "What is 2 + 2?", "I won't answer that."),
]


BETA = 4.0  # large enough that the negative controls below sit far from the expected loss


def test_jpo_trains_on_cross_prompt_pairs_with_joint_log_probs(tmp_path):
    data = write_jsonl(tmp_path / "joint.jsonl", [
        {"chosen_prompt": xw, "chosen": yw, "rejected_prompt": xl, "rejected": yl} for xw, yw, xl, yl in JOINT])
    config = TrainConfig(model="tiny-random", output_dir=str(tmp_path / "run"), max_steps=2, logging_steps=1,
                         per_device_train_batch_size=len(JOINT), losses=[LossConfig("jpo", params={"beta": BETA})])
    config.data.path = str(data)
    config.reference.model = "tiny-random"  # seed 0; the policy below has other weights, so margins are not 0
    config.reference.cache_dir = str(tmp_path / "refcache")
    config.lora.r, config.lora.alpha = 4, 8
    result = run_training(config, model=tiny_model(seed=1), tokenizer=tiny_tokenizer())
    assert result.steps == 2

    policy, reference = tiny_model(seed=1), tiny_model(seed=0)

    def margin(joint: bool, cross: bool) -> torch.Tensor:
        deltas = []
        for xw, yw, xl, yl in JOINT:
            xl = xl if cross else xw
            sides = [side_logps(m, x, y, joint=joint)[0] for m in (policy, reference) for x, y in ((xw, yw), (xl, yl))]
            deltas.append((sides[0] - sides[2]) - (sides[1] - sides[3]))
        return torch.tensor(deltas)

    def loss(joint: bool, cross: bool) -> float:
        return -F.logsigmoid(BETA * margin(joint, cross)).mean().item()

    expected = loss(joint=True, cross=True)
    step = first_step(result.output_dir)
    assert step["loss"] == pytest.approx(expected, abs=2e-3)
    # negative controls: DPO's response-only log-probs, or the rejected answer read after the chosen prompt
    assert abs(expected - loss(joint=False, cross=True)) > 0.1 and abs(expected - loss(joint=True, cross=False)) > 0.1
    # the last row shares its prompt: the prompt terms cancel and its JPO margin is its DPO margin
    assert margin(joint=True, cross=True)[-1].item() == pytest.approx(margin(joint=False, cross=True)[-1].item(),
                                                                       abs=1e-3)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("refcache")


@pytest.mark.parametrize("name", loss_names())
def test_every_registered_loss_trains_a_step_on_the_data_its_declarations_ask_for(name, tmp_path, shared_cache):
    """Data is chosen from the registration alone, so a loss declaring an input the pipeline cannot
    supply fails here, not in a user's run."""
    meta = LOSSES.meta(name)
    if meta["needs_cross_prompt_pairs"]:
        rows = [{"chosen_prompt": xw, "chosen": yw, "rejected_prompt": xl, "rejected": yl} for xw, yw, xl, yl in JOINT]
    else:
        rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in ROWS]
    if meta["needs_scores"]:
        rows = [{**row, "chosen_scores": [-4.0, -5.0]} for row in rows]
    if meta["needs_safety_flags"]:
        rows = [{**row, "chosen_safe": True, "rejected_safe": i % 2 == 0} for i, row in enumerate(rows)]
    config = TrainConfig(model="tiny-random", output_dir=str(tmp_path / "run"), max_steps=1, logging_steps=1,
                         per_device_train_batch_size=4, losses=[LossConfig(name)])
    config.data.path = str(write_jsonl(tmp_path / "data.jsonl", rows))
    config.data.unpair = meta["input"] == "unpaired"
    config.reference.cache_dir = str(shared_cache)
    config.lora.r, config.lora.alpha = 2, 4
    result = run_training(config)
    assert result.steps == 1 and math.isfinite(first_step(result.output_dir)["loss"])
