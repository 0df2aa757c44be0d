"""Forward hooks on chosen decoder layers (safealign/train/hooks.py) against output_hidden_states."""

from __future__ import annotations

import pytest
import torch

from safealign.errors import UserError
from safealign.models.lora import LoraSettings, apply_lora
from safealign.models.tiny import tiny_model
from safealign.train.hooks import capture_residuals, edit_residuals, forward_until, hidden_states, num_layers


def _inputs():
    torch.manual_seed(0)
    ids = torch.randint(3, 60, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return ids, mask


def test_captured_layers_equal_output_hidden_states_below_the_top():
    model = tiny_model(num_layers=3)
    ids, mask = _inputs()
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        got = hidden_states(model, [0, 1, 2], ids, mask)
    assert sorted(got) == [0, 1, 2]
    for layer in (0, 1, 2):
        torch.testing.assert_close(got[layer], reference[layer])


def test_the_top_layer_is_the_last_block_before_the_final_norm():
    model = tiny_model(num_layers=2)
    ids, mask = _inputs()
    with torch.no_grad():
        top = hidden_states(model, [2], ids, mask)[2]
        normed = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(model.model.norm(top), normed)


def test_stop_runs_no_block_after_the_deepest_layer_and_no_head():
    model = tiny_model(num_layers=4)
    calls = []
    for i, block in enumerate(model.model.layers):
        block.register_forward_hook(lambda *a, i=i: calls.append(i))
    model.lm_head.register_forward_hook(lambda *a: calls.append("head"))
    ids, mask = _inputs()
    got = hidden_states(model, [2, 1], ids, mask)
    assert calls == [0, 1] and sorted(got) == [1, 2]
    calls.clear()
    model(input_ids=ids, attention_mask=mask)  # the hooks are gone once the block ends
    assert calls == [0, 1, 2, 3, "head"]


def test_captured_states_keep_their_graph_through_a_lora_adapter():
    model = apply_lora(tiny_model(num_layers=2), LoraSettings(r=2, alpha=4, dropout=0.0))
    ids, mask = _inputs()
    states = hidden_states(model, [1], ids, mask)
    states[1].sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and "layers.0." in n]
    assert grads and all(g is not None for g in grads)


def test_an_edit_is_seen_by_its_block_and_by_a_capture_on_the_same_layer():
    model = tiny_model(num_layers=2)
    ids, mask = _inputs()
    with torch.no_grad():
        with capture_residuals(model, [1]) as seen, edit_residuals(model, {1: torch.zeros_like}):
            forward_until(model, input_ids=ids, attention_mask=mask)
        assert torch.count_nonzero(seen[1]) == 0
        with edit_residuals(model, {1: torch.zeros_like}):
            edited = model(input_ids=ids, attention_mask=mask).logits
        plain = model(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(edited, plain)


def test_layers_outside_the_model_are_refused_naming_the_depth():
    model = tiny_model(num_layers=2)
    assert num_layers(model) == 2
    with pytest.raises(UserError, match=r"0\.\.2"):
        with capture_residuals(model, [3]):
            pass
    with pytest.raises(UserError, match=r"0\.\.1"):
        with edit_residuals(model, {2: torch.zeros_like}):
            pass
