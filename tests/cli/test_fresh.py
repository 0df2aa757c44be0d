"""``--fresh`` on ``safealign demo`` and ``safealign sweep`` deletes the output directory: never while a live
process holds a lock in it (a run's run.lock, a sweep worker's claim.lock or shared.lock); a stale lock is no bar."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from safealign.cli import main


class Ran(Exception):
    """The command went on past --fresh (the pipeline is stubbed: nothing is computed)."""


@pytest.fixture()
def sleeper():
    """A live process that is not this one."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def lock(path, pid):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": time.time()}))
    return path


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
    path = lock(out / held, sleeper.pid)
    (out / "summary.json").write_text("{}")
    assert fresh(command, out, monkeypatch) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"pid {sleeper.pid}" in err and "--fresh" in err
    assert (out / "summary.json").exists() and path.exists()  # nothing deleted


@pytest.mark.parametrize("command", ["demo", "sweep"])
def test_fresh_deletes_a_directory_whose_locks_are_stale(tmp_path, monkeypatch, command):
    out = tmp_path / "run"
    lock(out / "cells" / "x" / "claim.lock", dead_pid())
    lock(out / "run.lock", dead_pid())
    (out / "summary.json").write_text("{}")
    assert fresh(command, out, monkeypatch) is None  # went on to the (stubbed) run
    assert not (out / "summary.json").exists() and not (out / "run.lock").exists()
