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


def test_a_second_run_is_told_whether_the_folder_holds_a_trained_model_or_an_unfinished_run(tmp_path):
    """A run killed before final/ must not be described as a trained model; both are refused without --overwrite."""
    import shutil

    from safealign.online.reward_train import run_reward_training

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    config = config_for(path, f"output_dir={tmp_path / 'rm'}", "max_steps=1", "eval_fraction=0")
    run_reward_training(config)
    with pytest.raises(UserError, match="holds a trained reward model"):
        run_reward_training(config)
    shutil.rmtree(tmp_path / "rm" / "final")  # as if killed before the end
    (tmp_path / "rm" / "train_summary.json").unlink()
    with pytest.raises(UserError, match="holds an unfinished reward-model run.*pass --overwrite to start it again"):
        run_reward_training(config)
    assert run_reward_training(config, overwrite=True).final_dir.is_dir()
