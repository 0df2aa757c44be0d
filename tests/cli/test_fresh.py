"""``--fresh`` on ``safealign demo`` and ``safealign sweep`` deletes the output directory (the demo: only its own
outputs): never while a live process holds a lock in it (a run's run.lock, a sweep worker's claim.lock, shared.lock or
lifetime lock); a stale lock is no bar."""

from __future__ import annotations

import pytest

from lock_helpers import assert_lifetime_lock_refuses_fresh, dead_pid, write_lock

from safealign.cli import main


class Ran(Exception):
    """The command went on past --fresh (the pipeline is stubbed: nothing is computed)."""


def fresh(command, out, monkeypatch):
    """Run ``command`` with ``--fresh`` on ``out``, its pipeline stubbed; its exit code (None: it went on)."""
    def stub(*args, **kwargs):
        raise Ran

    if command == "demo":
        monkeypatch.setattr("safealign.pipelines.demo.run_demo", stub)
        argv = ["demo", "--output-dir", str(out), "--model", "tiny-random", "--fresh"]
    else:
        monkeypatch.setattr("safealign.pipelines.sweep.run_sweep", stub)
        argv = ["sweep", "configs/sweep/e_effect.yaml", f"output_dir={out}", "model=tiny-random", "--fresh"]
    try:
        return main(argv)
    except Ran:
        return None


@pytest.mark.parametrize(("command", "held"), [("demo", "run.lock"), ("sweep", "cells/beta=0.1/dpo/seed0/claim.lock"),
                                               ("sweep", "shared.lock")])  # fmt: skip
def test_fresh_is_refused_while_a_live_process_holds_a_lock_in_the_directory(tmp_path, monkeypatch, capsys, sleeper,
                                                                            command, held):  # fmt: skip
    out = tmp_path / "run"
    path = write_lock(out / held, sleeper.pid)
    (out / "summary.json").write_text("{}")
    assert fresh(command, out, monkeypatch) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"pid {sleeper.pid}" in err and "--fresh" in err
    assert (out / "summary.json").exists() and path.exists()  # nothing deleted


@pytest.mark.parametrize("command", ["demo", "sweep"])
def test_fresh_deletes_a_directory_whose_locks_are_stale(tmp_path, monkeypatch, command):
    out = tmp_path / "run"
    write_lock(out / "cells" / "x" / "claim.lock", dead_pid())
    write_lock(out / "run.lock", dead_pid())
    (out / "summary.json").write_text("{}")
    assert fresh(command, out, monkeypatch) is None  # went on to the (stubbed) run
    assert not (out / "summary.json").exists() and not (out / "run.lock").exists()


def test_fresh_is_refused_while_a_sweep_worker_holds_its_lifetime_lock(tmp_path, monkeypatch, capsys, sleeper):
    from safealign.io.run_lock import worker_lock_path

    out = tmp_path / "run"
    path = write_lock(worker_lock_path(out, sleeper.pid), sleeper.pid)  # a worker between claims: no other lock
    (out / "summary.json").write_text("{}")
    assert fresh("sweep", out, monkeypatch) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"pid {sleeper.pid}" in err
    assert (out / "summary.json").exists() and path.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sweep_worker_and_the_launcher_hold_a_lifetime_lock_that_refuses_fresh(tmp_path, monkeypatch, workers):
    """A worker holds no claim.lock or shared.lock while it starts, polls for cells, waits for shared.lock or writes
    the tables, and the --workers launcher holds none at all: each holds workers/<host>-<pidns>-<pid>.lock for its whole
    life, so another command's --fresh is refused meanwhile, and leaves none behind."""
    out = tmp_path / "run"
    target = "sweep.run_sweep" if workers == 1 else "sweep_workers.launch_workers"
    assert_lifetime_lock_refuses_fresh(monkeypatch, out, target, [
        "sweep", "configs/sweep/e_effect.yaml", f"output_dir={out}", "model=tiny-random", "--workers", str(workers)])
    assert not list(out.rglob("*.lock"))  # released when the command ends
