"""Recipe options for speed and memory on tiny models (CPU): length grouping, the reference pass, activation
checkpointing, 8-bit optimizers and the 8B full-fine-tuning recipe (docs/performance.md)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch

from safealign.config import load_config
from safealign.data.tokenize import EncodedPair
from safealign.errors import UserError
from safealign.io.rundir import train_fingerprint
from safealign.config import to_dict
from safealign.models.tiny import tiny_model
from safealign.train import reference as reference_module
from safealign.train.config import TrainConfig
from safealign.train.reference import compute_reference_columns
from safealign.train.run import item_tokens, run_training
from safealign.train.trainer import PreferenceTrainer

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "train" / "e_dpo_8b_full_1gpu.yaml"
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


def config(tmp_path, pairs_file, name: str = "run", **overrides) -> TrainConfig:
    cfg = TrainConfig(model="tiny-random", output_dir=str(tmp_path / name), max_steps=2, learning_rate=1e-2,
                      per_device_train_batch_size=2, save_steps=10, logging_steps=1)
    cfg.data.path = str(pairs_file)
    cfg.reference.cache_dir = str(tmp_path / "refcache")
    cfg.lora.enabled = False
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def losses(result) -> list[dict]:
    rows = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "loss" in row]


def pairs(lengths: list[int]) -> list[EncodedPair]:
    return [EncodedPair(index=i, prompt_ids=(5,) * n, ref_prompt_ids=None, chosen_ids=(6,) * (i + 1),
                        rejected_ids=(7,) * 2, harmful=False) for i, n in enumerate(lengths)]


# --------------------------------------------------------------------------- length grouping
def test_group_lengths_sampler_puts_similar_lengths_together(tmp_path):
    from safealign.train.run import ListDataset, training_arguments

    items = pairs([(7 * i) % 61 + 1 for i in range(64)])
    lengths = [item_tokens(p) for p in items]
    assert lengths[1] == 2 * 8 + 2 + 2  # both rows: the prompt twice, chosen and rejected
    cfg = TrainConfig(model="tiny-random", output_dir=str(tmp_path), per_device_train_batch_size=2)
    trainer = PreferenceTrainer(model=tiny_model(), args=training_arguments(cfg), train_dataset=ListDataset(items),
                                data_collator=lambda rows: rows, loss=_loss(), group_lengths=lengths)
    torch.manual_seed(0)
    order = list(trainer._get_train_sampler())
    assert sorted(order) == list(range(64))
    assert lengths[order[0]] == max(lengths)  # the longest batch first: an out-of-memory error shows at once
    # megabatches of min(64 // (2 * 4), 50) = 8 batches, each sorted longest first (its head may be swapped)
    for start in range(0, 64, 16):
        block = [lengths[i] for i in order[start : start + 16]][1:]
        assert block == sorted(block, reverse=True)
    assert [lengths[i] for i in order] != sorted(lengths, reverse=True)  # not a global sort: still shuffled
    plain = PreferenceTrainer(model=tiny_model(), args=training_arguments(cfg), train_dataset=ListDataset(items),
                              data_collator=lambda rows: rows, loss=_loss())
    assert not hasattr(plain._get_train_sampler(), "lengths")


def _loss():
    from safealign.losses import LossSpec, build_loss

    return build_loss([LossSpec(name="dpo")])


def test_group_by_length_trains_and_is_part_of_the_fingerprint(tmp_path, pairs_file):
    result = run_training(config(tmp_path, pairs_file, group_by_length=True))
    assert len(losses(result)) == 2
    from safealign.io.rundir import Fingerprint, differing_keys

    defaults = to_dict(TrainConfig())
    current = train_fingerprint(to_dict(TrainConfig()), defaults=defaults)
    # speed-only keys never count
    assert not {"logps", "packing", "reference.batch_tokens"} & set(current.values)
    # a run recorded before group_by_length/optimizer existed still matches while they are at their defaults ...
    added = ("group_by_length", "optimizer")
    recorded = Fingerprint("train", {k: v for k, v in current.values.items() if k not in added})
    assert differing_keys(recorded, current) == []
    # ... and not once they change what is computed
    eight_bit = train_fingerprint(to_dict(TrainConfig(optimizer="adamw_8bit")), defaults=defaults)
    assert differing_keys(recorded, eight_bit) == ["optimizer"]
    grouped = train_fingerprint(to_dict(TrainConfig(group_by_length=True)), defaults=defaults)
    assert differing_keys(recorded, grouped) == ["group_by_length"]  # it changes the batches


# --------------------------------------------------------------------------- reference pass
def _encoded_pairs(n: int = 7) -> list[EncodedPair]:
    g = torch.Generator().manual_seed(0)
    ids = lambda k: tuple(torch.randint(3, 200, (k,), generator=g).tolist())  # noqa: E731
    return [EncodedPair(index=i, prompt_ids=ids(3 + i), ref_prompt_ids=None, chosen_ids=ids(2 + i % 3),
                        rejected_ids=ids(4 - i % 3), harmful=False) for i in range(n)]


def test_reference_pass_batches_by_tokens_and_backs_off_on_out_of_memory(monkeypatch, caplog):
    model, items = tiny_model(), _encoded_pairs()
    one_by_one = compute_reference_columns(model, items, batch_size=1)
    by_tokens = compute_reference_columns(model, items, batch_size=8, batch_tokens=40)
    torch.testing.assert_close(by_tokens, one_by_one, atol=1e-5, rtol=0)
    seen = []
    score = reference_module._score_rows

    def small_memory(model, views, rows, *args):
        seen.append(len(rows))
        if len(rows) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return score(model, views, rows, *args)

    monkeypatch.setattr(reference_module, "_score_rows", small_memory)
    with caplog.at_level(logging.WARNING, logger="safealign.train.reference"):
        table = compute_reference_columns(model, items, batch_size=8)
    torch.testing.assert_close(table, one_by_one, atol=1e-5, rtol=0)
    assert seen[:3] == [7, 4, 2] and max(seen[3:]) <= 2
    assert "retrying with 4" in caplog.text and "retrying with 2" in caplog.text


def test_reference_pass_needs_no_autograd(monkeypatch):
    grad_enabled = []
    score = reference_module._score_rows
    monkeypatch.setattr(reference_module, "_score_rows",
                        lambda *a: grad_enabled.append(torch.is_grad_enabled()) or score(*a))
    compute_reference_columns(tiny_model(), _encoded_pairs(3), batch_size=2)
    assert grad_enabled == [False, False]


def test_summary_reports_the_reference_pass_share(tmp_path, pairs_file):
    result = run_training(config(tmp_path, pairs_file))
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    assert summary["reference_pass_seconds"] > 0 and summary["train_seconds"] > 0
    share = summary["reference_pass_seconds"] / (summary["reference_pass_seconds"] + summary["train_seconds"])
    assert 0 < summary["reference_pass_share"] < 1
    # the seconds are rounded to 0.01 each, which moves the share by at most 0.01 / total (plus its own rounding):
    # a relative tolerance failed under load when the tiny reference pass took a few hundredths of a second
    total = summary["reference_pass_seconds"] + summary["train_seconds"]
    assert summary["reference_pass_share"] == pytest.approx(share, abs=0.01 / total + 1e-3)


# --------------------------------------------------------------------------- memory options
def test_activation_checkpointing_gives_the_same_training(tmp_path, pairs_file):
    plain = losses(run_training(config(tmp_path, pairs_file, "plain")))
    checkpointed = losses(run_training(config(tmp_path, pairs_file, "ckpt", gradient_checkpointing=True)))
    for a, b in zip(plain, checkpointed, strict=True):
        for key in ("loss", "logps/chosen", "logps/rejected", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key


@pytest.mark.skipif(HAS_BNB, reason="bitsandbytes is installed: the missing-package error cannot be shown")
@pytest.mark.parametrize("optimizer", ["adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"])
def test_8bit_optimizer_without_bitsandbytes_is_refused_before_loading(tmp_path, pairs_file, optimizer,
                                                                       no_model_load):
    with pytest.raises(UserError, match=f"optimizer={optimizer} needs bitsandbytes, which is not installed"):
        run_training(config(tmp_path, pairs_file, optimizer=optimizer))


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed (pip install bitsandbytes)")
def test_8bit_optimizer_trains(tmp_path, pairs_file):
    rows = losses(run_training(config(tmp_path, pairs_file, optimizer="adamw_8bit")))
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)


def test_unknown_option_values_are_refused():
    for key, value in (("logps", "liger"), ("packing", "all"), ("optimizer", "adafactor")):
        with pytest.raises(UserError, match=f"{key} must be one of"):
            TrainConfig(**{key: value})


def test_8b_full_recipe_trains_a_tiny_model_without_a_second_model(tmp_path, pairs_file, monkeypatch):
    """The recipe's options on tiny-random (the optimizer swapped for torch AdamW when bitsandbytes is absent):
    cached reference, so no frozen copy of the policy is made; activation checkpointing; fused, packed."""
    overrides = ["model=tiny-random", f"output_dir={tmp_path / 'run'}", f"data.path={pairs_file}",
                 "data.split=null", "data.max_length=64", "data.max_prompt_length=32", "max_steps=2",
                 f"reference.cache_dir={tmp_path / 'refcache'}"] + ([] if HAS_BNB else ["optimizer=adamw"])
    cfg = load_config(TrainConfig, RECIPE, overrides)
    assert (cfg.lora.enabled, cfg.reference.mode, cfg.gradient_checkpointing) == (False, "cache", True)
    assert (cfg.logps, cfg.packing, cfg.group_by_length) == ("fused", "pairs", True)
    from safealign.train import reference

    copies = []  # run.py makes a frozen copy of the policy for a live reference under full fine-tuning
    real_copy = reference.frozen_copy
    monkeypatch.setattr(reference, "frozen_copy", lambda model: copies.append(type(model)) or real_copy(model))
    result = run_training(cfg)
    assert copies == []
    assert "precomputed reference log-probs" in result.reference
    assert len(losses(result)) == 2


@pytest.mark.parametrize("key, value", [("packing", "pairs"), ("group_by_length", True), ("logps", "naive")])
def test_objectives_refuse_the_preference_batch_options(tmp_path, pairs_file, key, value, no_model_load):
    cfg = config(tmp_path, pairs_file, **{key: value})
    cfg.objective.name = "circuit_breakers"
    with pytest.raises(UserError, match=f"{key}={value} applies to preference losses only"):
        run_training(cfg)


@pytest.mark.parametrize("names", [["aot"], ["dpo", "aot_unpaired"]])
def test_a_batch_coupled_loss_refuses_one_pair_per_device_before_loading(tmp_path, pairs_file, names,
                                                                         no_model_load):
    """AOT sorts within each micro-batch: one pair per device makes every step plain cDPO, recorded as aot."""
    from safealign.train.config import LossConfig

    cfg = config(tmp_path, pairs_file, per_device_train_batch_size=1)
    cfg.losses = [LossConfig(name) for name in names]
    with pytest.raises(UserError, match=rf"loss {names[-1]} .*per_device_train_batch_size=1.*at least 2"):
        run_training(cfg)
    assert not (tmp_path / "run").exists()  # refused before the output directory is claimed


def test_batch_coupling_is_declared_at_registration():
    from safealign.losses import LossSpec, build_loss

    assert build_loss([LossSpec(name="aot")]).batch_coupled
    assert build_loss([LossSpec(name="dpo"), LossSpec(name="aot_unpaired")]).batch_coupled
    assert not build_loss([LossSpec(name="dpo")]).batch_coupled
