"""``--fresh`` on ``safealign demo`` and ``safealign sweep`` deletes the output directory: never while a live
process holds a lock in it (a run's run.lock, a sweep worker's claim.lock or shared.lock); a stale lock is no bar."""

from __future__ import annotations


import pytest

from lock_helpers import dead_pid, write_lock

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
