"""``safealign diagnose`` on a hub id pinned to a revision (``--model-revision``/``model_revision``), offline from the
fake hub cache of tests/hub_helpers.py (``main`` and the tag ``v1`` hold different weights)."""

from __future__ import annotations

import json

import pytest
import torch

from hub_helpers import REPO
from safealign.cli import main
from safealign.config import load_config
from safealign.errors import UserError
from safealign.models.tiny import tiny_model
from safealign.pipelines.diagnose import DiagnoseConfig
from tests.diagnostics.test_diag_cli import ROWS


def test_the_model_and_a_ref_naming_the_same_hub_id_load_at_the_revision(capsys, tmp_path, hub_cache, model_loads):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["diagnose", "ranking", "--data", str(data), "--model", REPO, "--model-revision", "v1", "--ref", REPO,
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == REPO and out["model_revision"] == "v1"
    seed1 = tiny_model(seed=1).get_input_embeddings().weight
    loads = [(spec, kwargs.get("revision"), torch.equal(model.get_input_embeddings().weight, seed1))
             for spec, kwargs, model in model_loads]
    assert loads == [(REPO, "v1", True), (REPO, "v1", True)]  # the model, then --ref: the same model


def test_a_revision_for_a_model_that_is_no_hub_id_is_refused_naming_the_key(no_model_load):
    with pytest.raises(UserError, match="model_revision='v1'.*tiny random"):
        load_config(DiagnoseConfig, None, ["model=tiny-random", "data=pairs.jsonl", "model_revision=v1"])
