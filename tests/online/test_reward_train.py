"""Reward-model training inputs and run folders: per-row margins from JSON as well as JSONL files, and what a
second run in a folder is told."""

from __future__ import annotations

import json

import pytest

from safealign.config import load_config
from safealign.errors import UserError
from safealign.online.reward_train import RewardConfig, load_rows

ROWS = [
    {"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "I won't.", "gap": 0.5 * i} for i in range(4)
]


def config_for(path, *overrides) -> RewardConfig:
    return load_config(RewardConfig, None, ["model=tiny-random", f"data.path={path}", *overrides])


@pytest.mark.parametrize("name", ["pairs.json", "pairs.jsonl"])
def test_margin_column_reads_a_json_list_as_well_as_jsonl(name, tmp_path):
    path = tmp_path / name
    path.write_text(json.dumps(ROWS) if name.endswith(".json") else "".join(json.dumps(r) + "\n" for r in ROWS))
    rows = load_rows(config_for(path, "margin_column=gap"))
    assert [r.margin for r in rows] == [0.0, 0.5, 1.0, 1.5]


def test_a_margin_that_is_not_a_finite_number_is_named(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([*ROWS[:2], {**ROWS[2], "gap": "wide"}]))
    with pytest.raises(UserError, match=r"pairs.json row 2: field 'gap' must be a finite number, got 'wide'"):
        load_rows(config_for(path, "margin_column=gap"))
    path.write_text(json.dumps(ROWS[:2]).replace("0.5", "NaN"))
    with pytest.raises(UserError, match=r"row 1: field 'gap' must be a finite number, got nan"):
        load_rows(config_for(path, "margin_column=gap"))
