"""Trainer-level cross-check: TRL 1.16's DPOTrainer and safealign's PreferenceTrainer on the same run.

Same tiny model (seed 0, fp32, CPU, full fine-tuning), a separate reference model (seed 1, so the
step-1 loss is not trivially log 2), the same preference rows, β, learning rate and optimizer. The
batch holds the whole data set, so the sampler's shuffling cannot change what step 1 (or step 2)
sees.

Tokenization: the rows are in TRL's conversational format (``prompt`` a message list, ``chosen`` /
``rejected`` one assistant message each), which both sides render with the tokenizer's chat template:
TRL tokenizes prompt and prompt+completion and splits at their common prefix; safealign's PairEncoder
tokenizes the rendered prompt and the template's assistant suffix separately. The test asserts that
both produce exactly the same prompt/chosen/rejected ids before comparing any loss. (TRL accepts no
pre-tokenized data, and its plain-text format appends an EOS to completions, which would differ.)

TRL's config defaults that would otherwise differ are set explicitly: ``bf16=False`` (TRL defaults to
bf16 autocast even on CPU) and ``gradient_checkpointing=False``. Both trainers get ``use_cpu=True``, so
the comparison runs in fp32 on CPU also where CUDA exists (safealign then loads its reference model on
CPU in the policy's dtype: ``tests/train/test_training_device.py``).
"""

from __future__ import annotations

import json

import pytest

trl = pytest.importorskip("trl", reason="TRL is a test-only dependency (pip install trl) for the cross-check")
datasets = pytest.importorskip("datasets", reason="TRL's DPOTrainer needs the datasets package")

from safealign.data import PairEncoder  # noqa: E402
from safealign.models.tiny import tiny_model, tiny_tokenizer  # noqa: E402
from safealign.train.config import LossConfig, TrainConfig  # noqa: E402
from safealign.train.run import run_training  # noqa: E402
from safealign.types import PreferencePair  # noqa: E402

ROWS = [
    ("What is 2 + 2?", "2 + 2 = 4.", "I won't answer that."),
    ("Name a prime number.", "7 is prime.", "Sorry, I can't."),
    ("Give me a pasta recipe.", "Boil pasta, toss with garlic and oil.", "I cannot help with that."),
    ("How can I make a fake ID?", "I cannot help make fake IDs.", "Get a laminator and a photo"),
]
LR = 1e-3
STEPS = 2
# (TRL loss_type, TRL beta, safealign loss name, safealign params, metrics that also agree);
# see docs/trl-differences.md. IPO: TRL's beta is τ and both length-normalise the loss, but TRL logs
# β·(summed log-ratio) as rewards while safealign logs τ·(per-token log-ratio), so only logps compare.
LOGPS = ("logps/chosen", "logps/rejected")
CASES = [
    ("sigmoid", 0.5, "dpo", {"beta": 0.5}, LOGPS + ("rewards/chosen", "rewards/rejected", "rewards/margins")),
    ("ipo", 0.5, "ipo", {"tau": 0.5}, LOGPS),
    ("hinge", 0.5, "hinge", {"beta": 0.5}, LOGPS + ("rewards/chosen", "rewards/rejected", "rewards/margins")),
]


def conversational_rows() -> list[dict]:
    return [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]} for p, c, r in ROWS]


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("reference-seed1")
    tiny_model(seed=1).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def trl_trainer(loss_type: str, beta: float, out) -> "trl.DPOTrainer":
    args = trl.DPOConfig(
        output_dir=str(out), loss_type=[loss_type], beta=beta, learning_rate=LR, max_steps=STEPS,
        per_device_train_batch_size=len(ROWS), logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=True, bf16=False, gradient_checkpointing=False, seed=0, data_seed=0,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
    )
    dataset = datasets.Dataset.from_list(conversational_rows())
    return trl.DPOTrainer(model=tiny_model(seed=0), ref_model=tiny_model(seed=1), args=args,
                          train_dataset=dataset, processing_class=tiny_tokenizer())


def safealign_run(name: str, params: dict, tmp_path, reference_dir) -> list[dict]:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in conversational_rows()))
    config = TrainConfig(model="tiny-random", output_dir=str(tmp_path / "safealign"))
    config.data.path = str(data)
    config.losses = [LossConfig(name=name, params=dict(params))]
    config.lora.enabled = False  # full fine-tuning, like the TRL run
    config.reference.model = str(reference_dir)
    config.reference.cache_dir = str(tmp_path / "refcache")
    config.learning_rate = LR
    config.max_steps = STEPS
    config.per_device_train_batch_size = len(ROWS)
    config.save_steps = 1000
    config.training_args = {"use_cpu": True, "bf16": False}
    result = run_training(config, model=tiny_model(seed=0), tokenizer=tiny_tokenizer())
    return [json.loads(line) for line in result.metrics_path.read_text().splitlines() if '"loss"' in line]


def test_trl_and_safealign_tokenize_identically():
    trainer = trl_trainer("sigmoid", 0.1, "/nonexistent-unused")
    pairs = [PreferencePair(({"role": "user", "content": p},), c, r) for p, c, r in ROWS]
    encoded, _ = PairEncoder(tiny_tokenizer(), max_length=512).encode_all(pairs)
    for row, ours in zip(trainer.train_dataset, encoded):
        assert row["prompt_ids"] == list(ours.prompt_ids)
        assert row["chosen_ids"] == list(ours.chosen_ids)
        assert row["rejected_ids"] == list(ours.rejected_ids)


@pytest.mark.parametrize("trl_loss, beta, name, params, metrics", CASES, ids=[c[0] for c in CASES])
def test_first_logged_loss_matches_trl_dpo_trainer(trl_loss, beta, name, params, metrics, tmp_path, reference_dir):
    trainer = trl_trainer(trl_loss, beta, tmp_path / "trl")
    trainer.train()
    theirs = [h for h in trainer.state.log_history if "loss" in h]
    ours = safealign_run(name, params, tmp_path, reference_dir)
    assert [h["step"] for h in theirs] == [r["step"] for r in ours] == [1, 2]
    # the separate reference makes step 1 informative: DPO there is not log 2
    if trl_loss == "sigmoid":
        assert abs(theirs[0]["loss"] - 0.6931472) > 1e-3
    assert ours[0]["loss"] == pytest.approx(theirs[0]["loss"], abs=1e-4)
    for key in metrics:
        assert ours[0][key] == pytest.approx(theirs[0][key], abs=1e-4), key
    # step 2 follows one identical AdamW update (same lr, schedule, clipping) on the same batch
    assert ours[1]["loss"] == pytest.approx(theirs[1]["loss"], abs=1e-4)
