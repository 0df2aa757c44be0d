"""``safealign compare-online --workers N`` (docs/online.md, "Several workers"): each (variant, seed) run computed
once by one of the workers, the table the single process's; a live worker's lock respected, a dead one's taken
over; tiny random model."""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest

from lock_helpers import assert_lifetime_lock_refuses_fresh
from safealign.cli import main
from tests.online.test_online_compare import SMALL
from tests.online.test_online_trainer import RECIPES, TINY
from tests.pipelines.test_sweep_workers import _same, hold_live_and_dead

TRAIN = "train_overrides=[" + ",".join(o for o in TINY if not o.startswith("save_steps")) + "]"


def args(out, *more):
    return ["compare-online", f"recipe={RECIPES / 'rlhf_rloo.yaml'}", TRAIN, f"output_dir={out}", *SMALL, *more]


def computed_stages(logs):
    return sorted(m for log in logs for m in re.findall(r"compare-online: stage (\S+)", log.read_text()))


def comparable(table):
    return table["metrics"], {name: {k: v for k, v in stage.items() if k != "train"}
                              for name, stage in table["stages"].items()}


def test_two_workers_compute_each_run_once_and_match_one_process(tmp_path, capsys):
    out = tmp_path / "cmp"
    # a comparison started by the plain command, without workers (seed 0 only) ...
    assert main(args(out, "seeds=[0]")) == 0
    fingerprints = {p: p.read_text() for p in out.glob("train/*/fingerprint.json")}
    done = {p: p.read_text() for p in out.glob("train/*/stage.json")}
    assert len(fingerprints) == len(done) == 2
    capsys.readouterr()
    # ... resumes under two worker processes, which share the two seed-1 runs between them
    assert main([*args(out), "--workers", "2"]) == 0
    logs = sorted((out / "workers").glob("worker-*.log"))
    assert len(logs) == 2
    assert computed_stages(logs) == ["e-seed1", "plain-seed1"], [log.read_text()[-3000:] for log in logs]
    # the seed-0 runs were neither redone nor re-fingerprinted: the number of workers is no setting of them
    assert all(p.read_text() == text for p, text in {**fingerprints, **done}.items())
    assert not list(out.glob("train/*/claim.lock")) and not (out / "shared.lock").exists()
    table = json.loads((out / "online_compare.json").read_text())  # written by the last worker to finish
    assert set(table["stages"]) == {"before", "plain-seed0", "plain-seed1", "e-seed0", "e-seed1"}
    assert "| direct_asr |" in capsys.readouterr().out  # and printed by the launcher

    # one process computing the workers' runs from the same base evaluation gives the same table
    single = tmp_path / "single"
    shutil.copytree(out, single, ignore=shutil.ignore_patterns("*-seed1", "workers", "online_compare.*"))
    assert main(args(single)) == 0
    alone = json.loads((single / "online_compare.json").read_text())
    assert _same(comparable(table), comparable(alone)), (comparable(table), comparable(alone))


def test_a_finished_training_run_under_other_settings_is_refused_not_relabelled(tmp_path):
    from safealign.errors import UserError
    from safealign.pipelines.online_compare import load_compare_config, run_online_compare

    out = tmp_path / "cmp"
    assert main(args(out, "seeds=[0]", "variants=[plain]")) == 0
    record = (out / "train" / "plain-seed0" / "stage.json").read_text()
    changed = TRAIN.replace("learning_rate=1e-3", "learning_rate=2e-3")
    assert changed != TRAIN
    config = load_compare_config(None, [*args(out, "seeds=[0]", "variants=[plain]")[1:], changed])
    with pytest.raises(UserError, match="learning_rate"):
        run_online_compare(config)  # the run trained at 1e-3 must not be recorded as the 2e-3 one
    assert (out / "train" / "plain-seed0" / "stage.json").read_text() == record


def test_a_live_workers_run_is_left_to_it_and_a_dead_ones_is_taken_over(tmp_path, sleeper, caplog,
                                                                         capsys):  # fmt: skip
    from safealign.pipelines.online_compare import load_compare_config, run_online_compare

    out = tmp_path / "cmp"
    overrides = args(out, "seeds=[0]")[1:]
    config = load_compare_config(None, overrides)
    live, dead = out / "train" / "plain-seed0", out / "train" / "e-seed0"
    gone = hold_live_and_dead(live, dead, sleeper.pid)
    with caplog.at_level(logging.INFO):
        run = run_online_compare(config)
    assert (run.computed, run.skipped, [d for d, _ in run.held]) == (1, 0, [live])
    assert run.table is None and not (out / "online_compare.json").exists()  # the live worker's run is not done
    assert (dead / "stage.json").exists() and not (live / "stage.json").exists()
    assert f"taking over the lock of pid {gone}" in caplog.text
    assert main(["compare-online", *overrides]) == 0  # the command says so and exits
    printed = capsys.readouterr().out
    assert "1 still running in other workers: plain-seed0 (pid" in printed and "writes the table" in printed

    sleeper.kill()
    sleeper.wait()  # that worker died: its run is free, and the worker that finishes it writes the table
    run = run_online_compare(config)
    assert (run.computed, run.skipped, run.held) == (1, 1, [])
    assert run.table is not None and (out / "online_compare.json").exists() and (live / "stage.json").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_and_the_launcher_hold_a_lifetime_lock_that_refuses_fresh(tmp_path, monkeypatch, workers):
    """As a sweep's (tests/cli/test_fresh.py): a worker holds no claim.lock or shared.lock while it starts, looks
    for a run or writes the table, and the --workers launcher holds none at all; each holds
    workers/<host>-<pidns>-<pid>.lock for its whole life, so a --fresh on the directory is refused meanwhile."""
    out = tmp_path / "cmp"
    target = "online_compare.run_online_compare" if workers == 1 else "sweep_workers.run_workers"
    assert_lifetime_lock_refuses_fresh(monkeypatch, out, target, [*args(out), "--workers", str(workers)])
    assert not list(out.rglob("*.lock"))  # released when the command ends


def test_workers_must_be_positive(tmp_path, capsys):
    assert main([*args(tmp_path / "cmp"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
