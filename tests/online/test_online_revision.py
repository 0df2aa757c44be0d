"""Online and reward-model training of a hub id pinned to a revision (``model_revision``), offline from the fake hub
cache of tests/hub_helpers.py (``main`` and the tag ``v1`` hold different weights)."""

from __future__ import annotations

import json

import pytest
import torch

from hub_helpers import REPO, V1
from safealign.config import load_config
from safealign.errors import UserError
from safealign.models.identity import weights_fingerprint
from safealign.models.tiny import tiny_model
from safealign.online.config import OnlineConfig
from safealign.online.reward_train import RewardConfig
from tests.online.test_online_trainer import RECIPES, TINY, tiny_config


def embeddings_of_seed(model, seed: int) -> bool:
    return torch.equal(model.get_input_embeddings().weight, tiny_model(seed=seed).get_input_embeddings().weight)


def online_config(tmp_path, *overrides: str) -> OnlineConfig:
    return load_config(OnlineConfig, RECIPES / "e_rlhf_rloo.yaml",
                       [*TINY, f"model={REPO}", f"output_dir={tmp_path / 'run'}", *overrides])


def test_online_and_reward_configs_refuse_a_revision_for_a_model_that_is_no_hub_id(no_model_load):
    for schema in (OnlineConfig, RewardConfig):
        with pytest.raises(UserError, match="model_revision='v1'.*built-in model"):
            load_config(schema, None, ["model_revision=v1", "data.path=x.jsonl"] if schema is RewardConfig
                        else ["model_revision=v1"])


def test_the_online_fingerprint_names_a_revision_and_only_then(tmp_path, hub_cache):
    from safealign.online.run import online_fingerprint, online_settings_fingerprint

    unset, v1 = online_fingerprint(online_config(tmp_path)), online_fingerprint(online_config(tmp_path,
                                                                                              "model_revision=v1"))
    assert "model_revision" not in unset.values and v1.values["model_revision"] == "v1"
    assert v1.values["model.weights"] == weights_fingerprint(hub_cache / "snapshots" / V1) != unset.values[
        "model.weights"]
    # what compare-online's finished stages were recorded under: a config without the key digests the same
    assert "model_revision" not in online_settings_fingerprint(online_config(tmp_path)).values


def test_a_pinned_online_run_trains_that_revision_and_saves_an_adapter_naming_it(tmp_path, hub_cache, model_loads):
    from safealign.online.run import run_online

    result = run_online(tiny_config(tmp_path, "max_steps=1", f"model={REPO}", "model_revision=v1",
                                    f"reference.model={REPO}", reward="length_reward"))
    loads = [(spec, kwargs.get("revision"), embeddings_of_seed(model, 1)) for spec, kwargs, model in model_loads]
    assert loads == [(REPO, "v1", True), (REPO, "v1", True)]  # the policy, and the reference naming the same hub id
    assert json.loads((result.final_dir / "adapter_config.json").read_text())["revision"] == "v1"
    assert json.loads((result.output_dir / "fingerprint.json").read_text())["values"]["model_revision"] == "v1"


def test_a_reward_model_trained_at_a_revision_records_it(tmp_path, hub_cache):
    from safealign.online.reward_train import run_reward_training
    from tests.online.test_reward_train import ROWS

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    config = load_config(RewardConfig, None, [f"model={REPO}", "model_revision=v1", f"data.path={path}",
                                              f"output_dir={tmp_path / 'rm'}", "max_steps=1", "eval_fraction=0"])
    result = run_reward_training(config)
    from safealign.eval.reward_model import load_reward_model

    model, _, meta = load_reward_model(result.final_dir)
    assert meta == {"kind": "reward", "base": REPO, "base_revision": "v1", "max_length": 512,
                    "max_prompt_length": 256}  # the data.* defaults it was trained with, which scoring uses
    assert embeddings_of_seed(model.backbone, 1)
    assert json.loads((tmp_path / "rm" / "fingerprint.json").read_text())["values"]["model_revision"] == "v1"
