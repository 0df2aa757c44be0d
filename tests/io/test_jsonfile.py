"""Atomic whole-file JSON and the one non-finite float rule."""

from __future__ import annotations

import math

import pytest

from safealign.errors import UserError
from safealign.io import finite_or_none, read_json, write_json


@pytest.mark.parametrize("value, expected", [
    (math.nan, None), (math.inf, None), (-math.inf, None), (1.5, 1.5), (0, 0), ("nan", "nan"), (None, None),
])  # fmt: skip
def test_finite_or_none(value, expected):
    assert finite_or_none(value) == expected


def test_write_json_is_atomic_and_read_back(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    write_json(path, {"a": [1, 2], "t": "ü"})
    assert read_json(path) == {"a": [1, 2], "t": "ü"} and not list(path.parent.glob("*.tmp"))


def test_two_writers_of_one_file_do_not_share_a_temporary_file(tmp_path, monkeypatch):
    """Sweep workers may rewrite the same summary at once: a second writer that runs while the first is between
    writing and renaming its temporary file must not pull that file away from under it."""
    import os
    import threading

    path = tmp_path / "summary.json"
    fsync = os.fsync
    interleaved = []

    def fsync_then_other_writer(fd):
        fsync(fd)
        if not interleaved:  # once: the other writer runs its whole write here, in its own thread
            interleaved.append(True)
            other = threading.Thread(target=write_json, args=(path, {"by": "other"}))
            other.start()
            other.join()

    monkeypatch.setattr(os, "fsync", fsync_then_other_writer)
    write_json(path, {"by": "first"})
    assert read_json(path) == {"by": "first"} and not list(tmp_path.glob("*.tmp"))


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"a": ')
    with pytest.raises(UserError, match=r"summary\.json: invalid JSON"):
        read_json(path)
    with pytest.raises(UserError, match="file not found"):
        read_json(tmp_path / "absent.json")


def test_write_json_is_strict_and_survives_a_lone_surrogate(tmp_path):
    """NaN/Infinity become null at any depth; a lone surrogate (UTF-8 cannot encode it) is written escaped."""
    import json

    path = tmp_path / "summary.json"
    lone = json.loads('"\\ud83d"')
    write_json(path, {"asr": math.nan, "by": {"x": [math.inf, 0.5]}, "t": lone, "u": "ü"})

    def reject(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    assert json.loads(path.read_text(encoding="utf-8"), parse_constant=reject) == {
        "asr": None, "by": {"x": [None, 0.5]}, "t": lone, "u": "ü"}
    assert read_json(path)["t"] == lone
