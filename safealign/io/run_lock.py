"""One writer per run directory: ``run.lock`` (safealign/io/lockfile.py) while a process writes the run.

Two processes writing one output directory at once would interleave their records, checkpoints and summaries
under one fingerprint. :func:`~safealign.io.rundir.claim_run_dir` therefore takes the directory's lock before it
reads the fingerprint, and refuses -- naming the holder -- while another live process holds it; a lock left by a
process that died is taken over (lockfile.py). A process may claim a directory it already holds (a resumed stage).

The lock is released when the :func:`run_dir_session` it was taken in ends (the CLI runs every command in one),
or else when the process exits. Work that is shared by design (a sweep's root, which every worker claims) is
claimed without it; its pieces are claimed one by one with their own locks.
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import os
import shutil
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

from safealign.errors import UserError
from safealign.io.lockfile import Lock, current_holder, live_locks, namespace_tag, try_lock

RUN_LOCK = "run.lock"
WORKERS = "workers"  # under a sweep's or compare-online's directory: worker logs, each live worker's lifetime lock

_held: dict[str, Lock] = {}  # resolved run directory -> this process's lock on it
_sessions: list[list[str]] = []  # the directories each open session locked, innermost last


@contextlib.contextmanager
def run_dir_session() -> Iterator[None]:
    """Release, at the end of the block, every run directory locked inside it (and not by an outer session)."""
    _sessions.append([])
    try:
        yield
    finally:
        for key in _sessions.pop():
            lock = _held.pop(key, None)
            if lock is not None:
                lock.release()


def lock_run_dir(run: Path) -> bool:
    """Take ``run``'s lock for this process (creating ``run``); True when this call took it (False: already held
    here). Raises UserError while another live process holds it."""
    key = os.path.realpath(run)
    if key in _held:
        return False
    path = Path(run) / RUN_LOCK
    lock = try_lock(path)
    if lock is None and current_holder(path) is None:  # released (or its holder died) between the two looks
        lock = try_lock(path)
    if lock is None:
        holder = current_holder(path)
        who = holder.describe() if holder is not None else "another process"
        elsewhere = holder is not None and holder.unseen() is not None
        way_out = (f"That host's process cannot be seen from here: once it is known to be gone (a stopped "
                   f"container or machine), delete {path}, or use another output directory" if elsewhere
                   else "Wait for it to finish, or use another output directory")
        raise UserError(f"{run} is being written by {who} ({path}); two runs in one directory would mix their "
                        f"results. {way_out}")
    _held[key] = lock
    if _sessions:
        _sessions[-1].append(key)
    return True


def unlock_run_dir(run: Path) -> None:
    """Give back a lock :func:`lock_run_dir` took (a claim that failed its checks)."""
    key = os.path.realpath(run)
    lock = _held.pop(key, None)
    if lock is None:
        return
    lock.release()
    for keys in _sessions:
        if key in keys:
            keys.remove(key)


def worker_lock_path(folder: str | os.PathLike, pid: int | None = None) -> Path:
    """``folder/workers/<host>-<pid namespace>-<pid>.lock``: the lifetime lock of process ``pid`` (default: this
    one) in this process's pid namespace -- two containers sharing a host name may run workers of one pid. Where the
    namespace cannot be read, ``<host>-<pid>.lock`` as earlier versions named it (any ``*.lock`` there is read)."""
    parts = [socket.gethostname(), namespace_tag(), str(os.getpid() if pid is None else pid)]
    return Path(folder) / WORKERS / ("-".join(p for p in parts if p) + ".lock")


@contextlib.contextmanager
def worker_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold :func:`worker_lock_path` for the block: the life of a sweep or compare-online worker or of the
    ``--workers`` launcher.

    A worker holds no other lock while it starts, looks for a cell (run) to claim, waits for ``shared.lock`` or
    writes the tables, and the launcher never holds one; :func:`delete_run_dir` (``--fresh``) must refuse all the
    same, or it deletes the directory under them. One left by a killed process is stale and ignored, like any lock."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output directory {folder} is a file; name a directory")
    lock = try_lock(worker_lock_path(folder))  # None: this process holds it already (an outer block releases it)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def delete_run_dir(run: str | os.PathLike, flag: str, outputs: Sequence[str] | None = None) -> None:
    """Delete ``run`` for ``flag`` (``--fresh``); refused while a live process holds a lock in it (a run's
    ``run.lock``, a sweep or compare-online worker's ``claim.lock``, ``shared.lock`` or lifetime lock
    (:func:`worker_lock`), a cache entry's): that process would go on writing into the deleted directory. Stale
    locks (their holder gone) are deleted with the rest.

    ``outputs``: the names (glob patterns) of what the run writes there, as :func:`~safealign.io.rundir.
    claim_run_dir` takes them: only those, the run's fingerprint and its ``run.lock`` are deleted (and only their
    locks checked), so an output directory that also holds other files (``--output-dir runs``) keeps them."""
    if outputs is not None:
        _delete_outputs(Path(run), outputs, flag)
        return
    held = live_locks(run)
    _refuse_held(run, held, flag)
    shutil.rmtree(run, ignore_errors=True)


def _delete_outputs(run: Path, outputs: Sequence[str], flag: str) -> None:
    from safealign.io.rundir import FINGERPRINT_NAME  # here: rundir imports this module

    patterns = (*outputs, FINGERPRINT_NAME, RUN_LOCK)
    targets = [p for p in sorted(run.iterdir()) if any(fnmatch.fnmatch(p.name, x) for x in patterns)] \
        if run.is_dir() else []
    held = []
    for target in targets:
        if target.is_dir() and not target.is_symlink():
            held += live_locks(target)
        elif target.name == RUN_LOCK and (holder := current_holder(target)) is not None:
            held.append((target, holder))
    _refuse_held(run, held, flag)
    for target in targets:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def _refuse_held(run: str | os.PathLike, held: list, flag: str) -> None:
    """A UserError naming the first live lock of ``held`` (none: nothing to refuse)."""
    if held:
        path, holder = held[0]
        who = "a process still writing it" if holder.pid < 0 else holder.describe()
        others = f" (and {len(held) - 1} more lock(s) there)" if len(held) > 1 else ""
        way_out = (f"that host's process cannot be seen from here: once it is known to be gone, delete {path}"
                   if holder.host and holder.unseen() is not None else "wait for it to finish or stop it")
        raise UserError(f"{flag} would delete {run} while {who} holds {path}{others}; {way_out}, or use another "
                        "output directory")


@atexit.register
def _release_all() -> None:
    for lock in list(_held.values()):
        lock.release()
    _held.clear()
