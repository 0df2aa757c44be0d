"""An adapter remembers the base it was trained on (``base_identity.json`` beside its adapter_config.json, written
wherever safealign saves one) and refuses to load onto other weights at the path or hub id it names: a local base
overwritten by another run (an unpinned hub base whose ``main`` moved: tests/train/test_train_revision.py). Loading
onto a base of another architecture is a UserError naming the adapter and the base, not peft's size mismatch."""

from __future__ import annotations

import json
import logging

import pytest

from safealign.errors import UserError
from safealign.models.load import load_model
from safealign.models.lora import BASE_RECORD, LoraSettings
from safealign.models.tiny import tiny_model, tiny_tokenizer
from tests.online.test_online_trainer import tiny_config


def save_tiny(path, seed=0, **shape):
    tiny_model(seed=seed, **shape).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_an_online_runs_adapter_refuses_a_local_base_overwritten_with_other_weights(tmp_path):
    from safealign.online.run import run_online

    base = save_tiny(tmp_path / "base")
    result = run_online(tiny_config(tmp_path, "max_steps=1", f"model={base}", reward="length_reward"))
    assert json.loads((result.final_dir / BASE_RECORD).read_text())["identity"]["path"] == str(base.resolve())
    load_model(str(result.final_dir))
    save_tiny(base, seed=1)  # another run wrote its model to the same folder: same architecture, other weights
    with pytest.raises(UserError, match=f"adapter {result.final_dir}.*{base}.*other weights"):
        load_model(str(result.final_dir))
    save_tiny(base, seed=0)
    load_model(str(result.final_dir))  # the original base again
    config = base / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "rope_theta": 1234.0}))
    with pytest.raises(UserError, match="config.json"):
        load_model(str(result.final_dir))


def _plain_adapter(base, adapter):
    """An adapter saved as peft saves it, without safealign's record: as every adapter saved before it existed."""
    model, _ = load_model(str(base), lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    model.save_pretrained(adapter)
    return adapter


def test_an_adapter_saved_before_base_records_loads_as_before(tmp_path, caplog):
    base = save_tiny(tmp_path / "base")
    adapter = _plain_adapter(base, tmp_path / "adapter")
    assert not (adapter / BASE_RECORD).exists()
    save_tiny(base, seed=1)
    with caplog.at_level(logging.INFO, logger="safealign.models.identity"):
        load_model(str(adapter))
    assert f"{adapter}" in caplog.text and "not checked" in caplog.text


def test_an_adapter_on_a_base_of_another_architecture_is_a_user_error_naming_both(tmp_path):
    base = save_tiny(tmp_path / "base")
    adapter = _plain_adapter(base, tmp_path / "adapter")
    save_tiny(base, hidden_size=64)
    with pytest.raises(UserError, match=f"adapter {adapter}.*base model {base}"):
        load_model(str(adapter))


def test_a_damaged_base_record_is_named(tmp_path):
    base = save_tiny(tmp_path / "base")
    adapter = _plain_adapter(base, tmp_path / "adapter")
    (adapter / BASE_RECORD).write_text("{not json")
    with pytest.raises(UserError, match=f"{adapter / BASE_RECORD}"):
        load_model(str(adapter))
