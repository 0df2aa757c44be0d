"""The policy and a separate reference model load on the device training runs on, in one dtype.

``training_args.use_cpu`` must mean CPU and fp32 for every model of the run, also on a machine with
CUDA (where ``load_model`` would otherwise pick CUDA and bf16); the TRL cross-check depends on it.
"""

from __future__ import annotations

import pytest
import torch

from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.config import LossConfig, TrainConfig
from safealign.train.run import run_training


@pytest.fixture()
def loads(monkeypatch):
    """Record the device and dtype of every ``load_model`` call; load on CPU regardless."""
    import safealign.models as models

    real, seen = models.load_model, []

    def recording(spec, *, device=None, dtype=None, **kwargs):
        seen.append((spec, device, dtype))
        return real(spec, device="cpu", dtype=dtype, **kwargs)

    monkeypatch.setattr(models, "load_model", recording)
    return seen


def config_for(tmp_path, pairs_file, reference_dir) -> TrainConfig:
    config = TrainConfig(model="tiny-random", output_dir=str(tmp_path / "run"))
    config.data.path = str(pairs_file)
    config.losses = [LossConfig(name="dpo")]
    config.lora.enabled = False
    config.reference.model = str(reference_dir)
    config.reference.cache_dir = str(tmp_path / "refcache")
    config.max_steps = 1
    config.save_steps = 1000
    config.training_args = {"use_cpu": True, "bf16": False}
    return config


@pytest.mark.parametrize("mode", ["cache", "live"])
def test_reference_loads_on_the_training_device_in_the_policy_dtype(tmp_path, pairs_file, loads, mode):
    reference_dir = tmp_path / "reference"
    tiny_model(seed=1).save_pretrained(reference_dir)
    tiny_tokenizer().save_pretrained(reference_dir)
    config = config_for(tmp_path, pairs_file, reference_dir)
    config.reference.mode = mode
    # a float64 policy: the reference must follow it, not load_model's own default (fp32 CPU, bf16 CUDA)
    run_training(config, model=tiny_model(seed=0).double(), tokenizer=tiny_tokenizer())
    assert loads == [(str(reference_dir), torch.device("cpu"), torch.float64)]


def test_policy_loads_on_the_training_device(tmp_path, pairs_file, loads):
    config = config_for(tmp_path, pairs_file, "unused")
    config.reference.model = None
    run_training(config)
    assert loads == [("tiny-random", torch.device("cpu"), None)]
