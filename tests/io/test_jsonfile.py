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
    assert read_json(path) == {"a": [1, 2], "t": "ü"} and not (path.parent / "summary.json.tmp").exists()


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"a": ')
    with pytest.raises(UserError, match=r"summary\.json: invalid JSON"):
        read_json(path)
    with pytest.raises(UserError, match="file not found"):
        read_json(tmp_path / "absent.json")
