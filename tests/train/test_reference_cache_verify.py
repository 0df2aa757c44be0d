"""A reference-cache entry is verified before reuse: a cut-off file, values that don't match the stored
checksum, implausible log-probs or a missing checksum are reported and recomputed, never reused."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from safealign.data import PairEncoder
from safealign.data.formats import load_preferences
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.reference import load_or_compute_reference, table_checksum


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture()
def encoded(pairs_file):
    items, _ = PairEncoder(tiny_tokenizer()).encode_all(load_preferences(str(pairs_file)).items)
    return items


def _rewrite(path, table, **metadata_changes):
    """Replace the entry's table, keeping its header metadata except for ``metadata_changes``."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    metadata.update(metadata_changes)
    save_file({"reference_logps": table.contiguous()}, str(path), metadata={k: v for k, v in metadata.items() if v})


def _assert_recomputed(model, encoded, cache_dir, first, caplog, reason):
    with caplog.at_level(logging.WARNING, logger="safealign.train.reference"):
        again = load_or_compute_reference(model, encoded, cache_dir)
    assert not again.reused and torch.equal(again.table, first.table)
    assert any(reason in r.getMessage() and str(first.path) in r.getMessage() for r in caplog.records), caplog.text
    caplog.clear()
    healed = load_or_compute_reference(model, encoded, cache_dir)  # the entry was replaced by a good one
    assert healed.reused and torch.equal(healed.table, first.table)


def test_entry_carries_checksum_and_is_reused_when_intact(model, encoded, tmp_path):
    first = load_or_compute_reference(model, encoded, tmp_path)
    with safe_open(str(first.path), framework="pt") as handle:
        assert handle.metadata()["checksum"] == table_checksum(first.table)
    assert load_or_compute_reference(model, encoded, tmp_path).reused
    assert bool((first.table <= 0).all())  # the bound the check relies on holds for real log-probs


def test_truncated_file_is_reported_and_recomputed(model, encoded, tmp_path, caplog):
    first = load_or_compute_reference(model, encoded, tmp_path)
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) - 9])  # a crash mid-write on a filesystem without atomic rename
    _assert_recomputed(model, encoded, tmp_path, first, caplog, "unreadable")


def test_changed_values_with_intact_header_are_recomputed(model, encoded, tmp_path, caplog):
    first = load_or_compute_reference(model, encoded, tmp_path)
    _rewrite(first.path, first.table - 1.0)  # plausible log-probs, but not the ones that were computed
    _assert_recomputed(model, encoded, tmp_path, first, caplog, "checksum")


def test_positive_log_probs_are_implausible_even_with_a_matching_checksum(model, encoded, tmp_path, caplog):
    first = load_or_compute_reference(model, encoded, tmp_path)
    bad = first.table.abs()
    _rewrite(first.path, bad, checksum=table_checksum(bad))
    _assert_recomputed(model, encoded, tmp_path, first, caplog, "positive log-probs in rows [0, 1")


def test_non_finite_values_are_implausible(model, encoded, tmp_path, caplog):
    first = load_or_compute_reference(model, encoded, tmp_path)
    bad = first.table.clone()
    bad[3, 1] = float("nan")
    _rewrite(first.path, bad, checksum=table_checksum(bad))
    _assert_recomputed(model, encoded, tmp_path, first, caplog, "non-finite or positive log-probs in rows [3]")


def test_entry_without_checksum_is_not_trusted(model, encoded, tmp_path, caplog):
    first = load_or_compute_reference(model, encoded, tmp_path)
    _rewrite(first.path, first.table, checksum="")  # as written before entries carried a checksum
    _assert_recomputed(model, encoded, tmp_path, first, caplog, "without a checksum")
