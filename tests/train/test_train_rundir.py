"""A training run directory belongs to one configuration (safealign.io.rundir): a different config, with
or without --resume, fails before anything is written or loaded; --overwrite deletes the old run first."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from safealign.cli import main
from safealign.io.rundir import FINGERPRINT_NAME


@pytest.fixture()
def recipe(tmp_path, pairs_file):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "model": "tiny-random", "output_dir": str(tmp_path / "run"), "data": {"path": str(pairs_file)},
        "reference": {"cache_dir": str(tmp_path / "refcache")}, "lora": {"r": 4, "alpha": 8},
        "per_device_train_batch_size": 2, "max_steps": 4, "save_steps": 2, "learning_rate": 1e-2,
    }))  # fmt: skip
    return path


@pytest.fixture()
def trained(recipe, tmp_path):
    assert main(["train", str(recipe)]) == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    return run


def _snapshot(run):
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]  # fmt: skip


@pytest.mark.parametrize("flags", [[], ["--resume"]])
def test_different_config_fails_before_anything_is_written(trained, recipe, flags, capsys):
    before = _snapshot(trained)
    assert main(["train", str(recipe), "learning_rate=0.5", "lora.r=8", *flags]) == 2
    err = capsys.readouterr().err
    assert "holds an earlier train run with different settings" in err
    assert "learning_rate: 0.01 -> 0.5" in err and "lora.r: 4 -> 8" in err and "--overwrite" in err
    assert _snapshot(trained) == before  # config.yaml, metrics, final/ and checkpoints untouched


def test_same_config_without_resume_is_refused_and_resume_continues(trained, recipe, capsys):
    assert main(["train", str(recipe)]) == 2
    assert "pass --resume to continue it, or --overwrite" in capsys.readouterr().err
    assert main(["train", str(recipe), "--resume"]) == 0  # from checkpoint-4: nothing left to train
    assert _steps(trained) == [1, 2, 3, 4]


def test_settings_that_do_not_change_results_may_differ_on_resume(trained, recipe):
    assert main(["train", str(recipe), "logging_steps=2", "save_total_limit=3", "reference.batch_size=2",
                 "--resume"]) == 0  # fmt: skip


def test_overwrite_deletes_the_old_run_so_a_later_resume_cannot_pick_up_its_checkpoints(trained, recipe):
    assert main(["train", str(recipe), "max_steps=2", "learning_rate=0.02", "--overwrite"]) == 0
    assert sorted(p.name for p in trained.glob("checkpoint-*")) == ["checkpoint-2"]  # old checkpoint-4 gone
    assert _steps(trained) == [1, 2]
    saved = yaml.safe_load((trained / "config.yaml").read_text())
    assert saved["learning_rate"] == 0.02 and saved["max_steps"] == 2
    assert json.loads((trained / FINGERPRINT_NAME).read_text())["values"]["learning_rate"] == 0.02


def test_resume_and_overwrite_together_are_refused(trained, recipe, capsys):
    assert main(["train", str(recipe), "--resume", "--overwrite"]) == 2
    assert "pass one of them" in capsys.readouterr().err
    assert (trained / "checkpoint-4").is_dir()


def test_resume_without_a_run_fails_before_writing(recipe, tmp_path, capsys):
    assert main(["train", str(recipe), "--resume"]) == 2
    assert "no checkpoint of this run" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_changed_data_content_is_a_different_run(trained, recipe, pairs_file, capsys):
    pairs_file.write_text(pairs_file.read_text().replace("2 + 2 = 4.", "Four."))
    assert main(["train", str(recipe), "--resume"]) == 2
    assert "data.content" in capsys.readouterr().err


def test_run_without_fingerprint_is_checked_against_its_config_yaml(trained, recipe, capsys, caplog):
    (trained / FINGERPRINT_NAME).unlink()  # as written by the code before fingerprints
    assert main(["train", str(recipe), "lora.r=8", "--resume"]) == 2
    assert "lora.r: 4 -> 8" in capsys.readouterr().err
    with caplog.at_level(logging.INFO, logger="safealign.io.rundir"):
        assert main(["train", str(recipe), "--resume"]) == 0
    assert "made before run fingerprints" in caplog.text
