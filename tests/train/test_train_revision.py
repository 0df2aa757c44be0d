"""Training a hub id pinned to a revision (``model_revision``), offline from the fake hub cache of tests/hub_helpers.py
(``main`` and the tag ``v1`` hold different weights): the policy, a ``reference.model`` naming the same hub id and
the saved adapter's base all stand at that revision, and the run's fingerprint holds it only when it is set."""

from __future__ import annotations

import json

import pytest
import torch

from hub_helpers import MAIN, REPO, V1
from safealign.config import load_config, to_dict
from safealign.errors import UserError
from safealign.io.rundir import train_fingerprint
from safealign.models.identity import loaded_identity, model_identity, weights_fingerprint
from safealign.models.load import load_model
from safealign.models.tiny import tiny_model
from safealign.train.config import TrainConfig, same_model_revision
from safealign.train.run import run_training

DATA = ["data.path=pairs.jsonl"]


def embeddings_of_seed(model, seed: int) -> bool:
    """The input embeddings (frozen under LoRA, left alone by merging it) are the tiny model's of ``seed``."""
    return torch.equal(model.get_input_embeddings().weight, tiny_model(seed=seed).get_input_embeddings().weight)


def train_config(tmp_path, pairs_file, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, [
        f"model={REPO}", f"output_dir={tmp_path / 'run'}", f"data.path={pairs_file}",
        f"reference.cache_dir={tmp_path / 'refcache'}", "lora.r=4", "lora.alpha=8", "per_device_train_batch_size=4",
        "max_steps=1", "save_steps=1", "learning_rate=1e-2", *overrides])  # fmt: skip


def test_the_train_fingerprint_names_a_revision_and_only_then():
    def fingerprint(*overrides):
        return train_fingerprint(to_dict(load_config(TrainConfig, None, [f"model={REPO}", *DATA, *overrides])))

    unset, v1 = fingerprint(), fingerprint("model_revision=v1")
    assert "model_revision" not in unset.values and v1.values["model_revision"] == "v1"
    assert unset.digest != v1.digest != fingerprint("model_revision=main").digest
    before = to_dict(load_config(TrainConfig, None, [f"model={REPO}", *DATA]))
    del before["model_revision"]  # a config as recorded before the setting existed digests as an unset one
    assert train_fingerprint(before).digest == unset.digest


def test_a_revision_for_a_model_that_is_no_hub_id_is_refused_naming_the_key(tmp_path, no_model_load):
    with pytest.raises(UserError, match="model_revision='v1'.*built-in model"):
        load_config(TrainConfig, None, [*DATA, "model_revision=v1"])
    with pytest.raises(UserError, match="model_revision='v1'.*tiny random"):
        load_config(TrainConfig, None, [*DATA, "model=tiny-random", "model_revision=v1"])
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": REPO}))
    with pytest.raises(UserError, match="model_revision='v1'.*LoRA adapter folder, whose base its adapter_config"):
        load_config(TrainConfig, None, [*DATA, f"model={tmp_path / 'adapter'}", "model_revision=v1"])


def test_the_revision_reaches_the_reference_only_where_it_names_the_same_model():
    assert same_model_revision(REPO, REPO, "v1") == "v1"  # reference.model: the policy's hub id, the same model
    assert same_model_revision("org/other", REPO, "v1") is None  # another model: as its spec names it
    assert same_model_revision(None, REPO, "v1") is None


def test_a_pinned_run_trains_that_revision_and_its_adapter_loads_its_base_there(tmp_path, pairs_file, hub_cache,
                                                                               model_loads):
    config = train_config(tmp_path, pairs_file, "model_revision=v1", f"reference.model={REPO}")
    result = run_training(config)
    assert [(spec, kwargs.get("revision")) for spec, kwargs, _ in model_loads] == [(REPO, "v1")] * 2  # policy, ref
    assert all(embeddings_of_seed(model, 1) for *_, model in model_loads)
    snapshot = weights_fingerprint(hub_cache / "snapshots" / V1)
    recorded = json.loads((result.output_dir / "fingerprint.json").read_text())["values"]
    assert recorded["model_revision"] == "v1"
    assert recorded["model.weights"] == recorded["reference.weights"] == snapshot
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    for key in ("model_identity", "reference_identity"):
        assert summary[key]["requested_revision"] == "v1" and summary[key]["revision"] == V1, key
    # the saved adapter names its base's revision (peft's adapter_config.json `revision`), so loading it later, as
    # an evaluation does, loads the base at that revision
    assert json.loads((result.final_dir / "adapter_config.json").read_text())["revision"] == "v1"
    assert summary["final_identity"]["base"] == model_identity(REPO, "v1")
    adapter, _ = load_model(str(result.final_dir))  # the module's own, not the spied safealign.models.load_model
    assert embeddings_of_seed(adapter, 1)
    assert loaded_identity(adapter)["base"]["revision"] == V1
    # resumed without the revision it was trained at: refused, naming the setting
    with pytest.raises(UserError, match="different settings.*model_revision"):
        run_training(train_config(tmp_path, pairs_file, f"reference.model={REPO}"), resume=True)


def test_an_unpinned_run_records_no_revision_anywhere(tmp_path, pairs_file, hub_cache):
    result = run_training(train_config(tmp_path, pairs_file))
    assert "model_revision" not in json.loads((result.output_dir / "fingerprint.json").read_text())["values"]
    assert json.loads((result.final_dir / "adapter_config.json").read_text())["revision"] is None
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    assert "requested_revision" not in summary["model_identity"]
    assert summary["final_identity"]["base"] == model_identity(REPO)


def test_the_demo_refuses_a_train_revision_it_would_not_use():
    from safealign.pipelines.demo_config import load_demo_config

    with pytest.raises(UserError, match="train.model_revision: every demo stage sets train.model_revision itself"):
        load_demo_config([f"model={REPO}", "train.model_revision=v1"])
    config = load_demo_config([f"model={REPO}"])
    config.train.model_revision = "v1"  # set in code, past the overrides: the config's own check
    with pytest.raises(UserError, match="train.model_revision: the demo trains the model named by `model`"):
        config.validate()


def test_a_trained_adapter_refuses_an_unpinned_hub_base_whose_main_moved(tmp_path, pairs_file, hub_cache):
    from safealign.models.lora import BASE_RECORD

    result = run_training(train_config(tmp_path, pairs_file))
    for folder in (result.final_dir, result.output_dir / "checkpoint-1"):  # the trainer's save hook: every save
        record = json.loads((folder / BASE_RECORD).read_text())
        assert record["identity"]["hub_id"] == REPO and record["identity"]["revision"] == MAIN, folder
    load_model(str(result.final_dir))  # the base it was trained on: loads
    (hub_cache / "refs" / "main").write_text(V1)  # main moved to other weights
    with pytest.raises(UserError) as caught:
        load_model(str(result.final_dir))
    message = str(caught.value)
    assert str(result.final_dir) in message and REPO in message
    assert MAIN in message and V1 in message  # the commit it was trained at, and the one main names now
