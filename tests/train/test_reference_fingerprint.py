"""The reference cache key follows the base weights, not how an adapter wraps them."""

from __future__ import annotations

import pytest
import torch

from safealign.errors import UserError
from safealign.models import LoraSettings, apply_lora
from safealign.models.tiny import tiny_model
from safealign.train import reference
from safealign.train.reference import model_fingerprint


def test_fingerprint_ignores_adapter_wrapping_but_sees_weight_changes():
    plain = model_fingerprint(tiny_model(num_layers=4))
    all_layers = model_fingerprint(apply_lora(tiny_model(num_layers=4), LoraSettings(r=2, alpha=4)))
    top_layer = model_fingerprint(apply_lora(tiny_model(num_layers=4), LoraSettings(r=2, alpha=4, last_layers=1)))
    assert plain == all_layers == top_layer
    changed = tiny_model(num_layers=4)
    with torch.no_grad():
        changed.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0  # element 0 is always in the sample
    assert model_fingerprint(changed) != plain
    assert model_fingerprint(tiny_model(num_layers=4, seed=1)) != plain


def test_fingerprint_sees_a_change_anywhere_in_a_large_matrix():
    """A strided sample of numel/4096 elements of a 4096-column matrix is its first column: a change elsewhere
    (a fine-tune touching some columns) gave the same key and reused another reference's log-probs."""
    model = torch.nn.Linear(4096, 64, bias=False)
    before = model_fingerprint(model)
    with torch.no_grad():
        model.weight[3, 1234] += 0.5
    assert model_fingerprint(model) != before


def test_non_finite_reference_log_probs_are_a_user_error_naming_the_rows(tmp_path, monkeypatch):
    table = torch.tensor([[-1.0, -2.0], [float("nan"), -2.0], [-1.0, float("-inf")]])
    monkeypatch.setattr(reference, "compute_reference_columns", lambda *args, **kwargs: table)
    with pytest.raises(UserError, match=r"not finite for rows \[1, 2\]"):
        reference.load_or_compute_reference(tiny_model(), [], tmp_path)
