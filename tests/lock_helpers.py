"""Lock files as a holder writes them, and pids of processes that are gone: for the lock tests (the live process
that holds a lock is the ``sleeper`` fixture of tests/conftest.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time


def write_lock(path, pid, host=None, started=None):
    """A lock at ``path`` held by ``pid`` (on this host unless ``host``), as safealign.io.lockfile writes one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "started": time.time() if started is None else started}))
    return path


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # exited and reaped: the pid names no process (until the system reuses it)
    return proc.pid


class RanPast(Exception):
    """The command went on to its (stubbed) work."""


def assert_lifetime_lock_refuses_fresh(monkeypatch, out, target, argv):
    """Run the CLI ``argv`` with the pipeline function ``target`` (``module.function`` under safealign.pipelines)
    stubbed by work that asks for ``--fresh`` on ``out``: the command's lifetime lock must refuse it, naming the
    lock and this process, exactly once."""
    import os

    import pytest

    from safealign.cli import main
    from safealign.errors import UserError
    from safealign.io.run_lock import delete_run_dir, worker_lock_path

    refusals = []

    def work(*args, **kwargs):  # the worker's (or launcher's) work, during which another command asks for --fresh
        try:
            delete_run_dir(out, "--fresh")
        except UserError as exc:
            refusals.append(str(exc))
        raise RanPast

    monkeypatch.setattr(f"safealign.pipelines.{target}", work)
    with pytest.raises(RanPast):
        main(argv)
    assert len(refusals) == 1 and str(worker_lock_path(out)) in refusals[0] and f"pid {os.getpid()}" in refusals[0]
