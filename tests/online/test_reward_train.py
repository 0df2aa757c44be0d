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


def test_a_cost_model_refuses_a_margin_and_any_model_a_negative_max_grad_norm(tmp_path):
    """A cost model's loss has no margin (it would be silently ignored); a negative max_grad_norm would flip the
    gradients (0 means no clipping, as in the offline trainer)."""
    path = tmp_path / "pairs.jsonl"
    with pytest.raises(UserError, match="margin=0.5: a cost model"):
        config_for(path, "kind=cost", "margin=0.5")
    with pytest.raises(UserError, match="max_grad_norm must be >= 0"):
        config_for(path, "max_grad_norm=-1")
    assert config_for(path, "kind=cost", "max_grad_norm=0").max_grad_norm == 0


def test_max_grad_norm_zero_trains_without_clipping(tmp_path):
    """clip_grad_norm_(…, 0) zeroes every gradient: 0 must mean "no clipping" and give the unclipped run's steps."""
    from safealign.online.reward_train import run_reward_training

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    logged = {}
    for norm in ("0", "1e9"):
        config = config_for(path, f"output_dir={tmp_path / norm}", "max_steps=3", "eval_fraction=0",
                            "per_device_train_batch_size=2", "learning_rate=5e-2", f"max_grad_norm={norm}")
        run_reward_training(config)
        logged[norm] = [json.loads(line) for line in (tmp_path / norm / "metrics.jsonl").read_text().splitlines()]
    assert logged["0"] == logged["1e9"]
    assert logged["0"][0]["grad_norm"] > 0
