"""LoRA restricted to the last N blocks: only those blocks get adapters."""

from __future__ import annotations

import pytest

from safealign.errors import UserError
from safealign.models import LoraSettings, apply_lora
from safealign.models.tiny import tiny_model


def test_last_layers_adapts_only_the_top_blocks():
    model = apply_lora(tiny_model(num_layers=4), LoraSettings(r=2, alpha=4, last_layers=1))
    adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in model.named_parameters() if "lora_" in name}
    assert adapted == {"3"}


def test_last_layers_must_be_positive():
    with pytest.raises(UserError, match="last_layers"):
        LoraSettings(last_layers=0)
