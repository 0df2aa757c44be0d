"""The attention implementation training loads its models with (``attn_implementation``; docs/performance.md): a
name transformers does not know is refused naming the key before anything loads; a known one reaches the policy's
and a ``reference.model``'s load; the run's fingerprint holds it only when it is set, so recorded digests stay."""

from __future__ import annotations

import json

import pytest

from safealign.config import load_config, to_dict
from safealign.errors import UserError
from safealign.io.rundir import train_fingerprint
from safealign.train.config import TrainConfig
from safealign.train.run import run_training

DATA = ["data.path=pairs.jsonl"]


@pytest.mark.parametrize("name", ["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"])
def test_the_implementations_transformers_knows_are_accepted(name):
    assert load_config(TrainConfig, None, [*DATA, f"attn_implementation={name}"]).attn_implementation == name


@pytest.mark.parametrize("name", ["flash_attention", "flash-attention-2", "paged|eager", "SDPA"])
def test_any_other_name_is_refused_naming_the_key_before_a_model_loads(name, no_model_load):
    with pytest.raises(UserError, match=r"attn_implementation=.*must be one of .*eager.*flash_attention_2.*sdpa"):
        load_config(TrainConfig, None, [*DATA, f"attn_implementation={name}"])


def test_the_train_fingerprint_names_the_implementation_only_once_set():
    def fingerprint(*overrides):
        return train_fingerprint(to_dict(load_config(TrainConfig, None, [*DATA, *overrides])))

    unset, eager = fingerprint(), fingerprint("attn_implementation=eager")
    assert "attn_implementation" not in unset.values and eager.values["attn_implementation"] == "eager"
    assert unset.digest != eager.digest != fingerprint("attn_implementation=sdpa").digest
    before = to_dict(load_config(TrainConfig, None, DATA))
    del before["attn_implementation"]  # a config recorded before the setting existed digests as an unset one
    assert train_fingerprint(before).digest == unset.digest


def test_the_policy_and_a_reference_model_load_with_it(tmp_path, pairs_file, model_loads):
    from tests.online.test_online_attention import attention_loads

    config = load_config(TrainConfig, None, [
        "model=tiny-random", "reference.model=tiny-random", "reference.mode=live", "attn_implementation=eager",
        f"output_dir={tmp_path / 'run'}", f"data.path={pairs_file}", "lora.r=4", "lora.alpha=8",
        "per_device_train_batch_size=4", "max_steps=1", "save_steps=10"])  # fmt: skip
    result = run_training(config)
    assert attention_loads(model_loads) == [("tiny-random", "eager", "eager")] * 2  # policy, reference
    recorded = json.loads((result.output_dir / "fingerprint.json").read_text())["values"]
    assert recorded["attn_implementation"] == "eager"
