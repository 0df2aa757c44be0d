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
