"""Claim a piece of shared work (a sweep cell, a cache entry) across processes with a lock file.

A lock is a file created with ``os.open(O_CREAT | O_EXCL)`` -- atomic, so of two processes asking at once
exactly one gets it -- holding its holder's pid, hostname, start time and, where Linux shows them, its pid
namespace and kernel boot id (JSON). It is removed when the work ends, normally or by an exception. A process
killed outright (SIGKILL, the OOM killer, a power cut) leaves its lock behind; such a lock is *stale* when its pid
is no longer running on this host (or the pid now belongs to a process started after the lock: pids are reused),
and the next claimant takes it over, saying so in the log. A lock written on another host is never judged stale
(its process can't be seen from here): remove it by hand once that host's worker is known to be gone. The same
holds for a lock written under this host name from another pid namespace (a container sharing the host's name:
``docker --network host``, a Kubernetes ``hostNetwork`` pod, ``unshare -p``), whose pids name other processes here
or none, and from another running kernel (a machine of the same name); a lock written before this host last booted
is stale. Lock files written before the namespace was recorded are judged by the host name alone.

:func:`claim_each` runs a list of such pieces (sweep cells, compare-online runs), each claimed with its own
lock; :func:`run_once` runs resumable shared work (a base model's evaluation) one process at a time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # how often a waiting process looks at a lock again
# a lock file is created empty and its holder written a moment later: an unreadable lock this young is being
# written, an older one was left by a process killed between the two (rare) and is stale
UNREADABLE_GRACE_SECONDS = 30.0
_TAKEOVER_GUARD_SECONDS = 60.0  # a takeover takes microseconds; an older guard file was left by a killed process
_START_SLACK_SECONDS = 60.0


@dataclass(frozen=True)
class Job:
    """A piece of shared work for :func:`claim_each`: claimed with the lock file ``lock`` (in the job's own
    folder), skipped once ``finished()``, done by ``run()``."""

    lock: Path
    finished: Callable[[], bool]
    run: Callable[[], None]


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: ``pid`` on ``host`` since ``started`` (``time.time()``), in pid namespace ``pid_ns``
    (``pid:[inode]``) of the kernel boot ``boot_id``; those two are None in lock files written before they were
    recorded, or where /proc does not show them."""

    pid: int
    host: str
    started: float
    pid_ns: str | None = None
    boot_id: str | None = None

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), time.time(), *_namespace())

    def record(self) -> dict:
        """The holder as a lock file holds it: without the namespace fields it lacks, so one read from a lock of an
        earlier version compares equal to that version's records (``shared.json``)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("pid_ns", "boot_id")}

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        unseen = self.unseen()
        where = f" in {unseen}" if unseen and unseen != "another host" else ""
        return f"pid {self.pid} on {self.host or '?'} since {since}{where}"

    def unseen(self) -> str | None:
        """Why this holder's process cannot be seen from here -- another host, another machine of this host's name
        (another kernel running now), another pid namespace on this kernel -- or None when it can (or when it ran
        before this host last booted: gone)."""
        if self.host != socket.gethostname():
            return "another host"
        pid_ns, boot_id = _namespace()
        if self.boot_id is not None and self.boot_id != boot_id:
            return None if _before_boot(self.started) else "another machine of this name"
        if self.pid_ns is not None and self.pid_ns != pid_ns:
            return "another pid namespace"
        return None

    def alive(self) -> bool:
        """False only when it is known to be gone: same host, kernel and pid namespace, and no such process (or a
        zombie, or a process started after the lock, i.e. a reused pid); or written before this host last booted.
        A process that cannot be seen from here (:meth:`unseen`) counts as alive."""
        if self.unseen() is not None:
            return True
        if self.boot_id is not None and self.boot_id != _namespace()[1]:
            return False  # another boot id, yet not unseen: written before this host last booted, so gone
        if self.pid != os.getpid():  # our own pid is running, but may be a lock of an earlier process with it
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:  # another user's process: it exists
                pass
        state, started = _process_state(self.pid)
        # a holder starts before it claims; the slack covers /proc's boot-time clock, which drifts by seconds
        return state != "Z" and (started is None or started <= self.started + _START_SLACK_SECONDS)


class Lock:
    """A held lock; ``release()`` (or leaving a ``with`` block) removes the file if it is still this holder's."""

    def __init__(self, path: Path, holder: Holder) -> None:
        self.path = path
        self.holder = holder

    def release(self) -> None:
        if read_holder(self.path) == self.holder:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> Holder | None:
    """The holder written in ``path``; None when there is no lock file or it can't be parsed."""
    return _holder_in(_read_lock(path))


def _read_lock(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _holder_in(raw: bytes | None) -> Holder | None:
    try:
        data = json.loads(raw) if raw is not None else None
        return Holder(int(data["pid"]), str(data["host"]), float(data["started"]),
                      _optional_text(data.get("pid_ns")), _optional_text(data.get("boot_id")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def _namespace() -> tuple[str | None, str | None]:
    """This process's pid namespace (``pid:[inode]``) and its kernel's boot id; None where /proc does not show them
    (not Linux). Read each time, not cached: a child forked after ``unshare(CLONE_NEWPID)`` is in another one."""
    try:
        pid_ns: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = None
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        boot_id = None
    return pid_ns, boot_id


def namespace_tag() -> str:
    """This process's pid namespace as a file-name part (the inode number), or "" where it cannot be read."""
    pid_ns = _namespace()[0]
    return re.sub(r"\D", "", pid_ns) if pid_ns else ""


def try_lock(path: str | os.PathLike) -> Lock | None:
    """Take the lock at ``path`` (creating its folder), taking over a stale one; None while another holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _create(path)
    if lock is not None:
        return lock
    seen = _read_lock(path)  # judged and replaced as one: a live lock another process installs meanwhile differs
    stale = _stale_reason(path, seen)
    return None if stale is None else _take_over(path, stale, seen)


def current_holder(path: str | os.PathLike) -> Holder | None:
    """Who holds ``path`` now, as far as can be seen: None when no live holder (no lock, or a stale one)."""
    path = Path(path)
    if not path.exists() or _stale_reason(path) is not None:
        return None
    # a lock being written, not yet readable, is held by someone not yet known
    return read_holder(path) or Holder(-1, "", _mtime(path) or time.time())


def live_locks(folder: str | os.PathLike) -> list[tuple[Path, Holder]]:
    """Every lock file (``*.lock``) under ``folder``, at any depth, that a live process holds, with its holder:
    the work still running there (a stale lock, its holder gone, is left out)."""
    found = [(path, current_holder(path)) for path in sorted(Path(folder).rglob("*.lock"))]
    return [(path, holder) for path, holder in found if holder is not None]


def wait_lock(path: str | os.PathLike, what: str, *, log_every: float = 600.0,
              sleep: Callable[[float], None] = time.sleep) -> tuple[Lock, list[Holder]]:  # fmt: skip
    """Take the lock at ``path``, waiting while a live process holds it. Returns the lock and the holders
    waited for (empty when it was free), so the caller can tell whether one of them finished ``what``."""
    waited: list[Holder] = []
    last_log = -float("inf")  # the first wait is logged at once (time.monotonic() may start near 0)
    while (lock := try_lock(path)) is None:
        holder = current_holder(path)
        if holder is not None:
            if holder not in waited:
                waited.append(holder)
            if time.monotonic() - last_log >= log_every:
                logger.info("waiting for %s (%s holds %s)", what, holder.describe(), path)
                last_log = time.monotonic()
        sleep(POLL_SECONDS)
    return lock, waited


def _create(path: Path) -> Lock | None:
    holder = Holder.me()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    try:
        os.write(fd, json.dumps(holder.record()).encode())
    finally:
        os.close(fd)
    return Lock(path, holder)


def _stale_reason(path: Path, raw: bytes | None = None) -> str | None:
    """Why the lock at ``path`` (its content ``raw`` as read, else read now) may be taken over, or None while its
    holder may still be working."""
    holder = _holder_in(raw if raw is not None else _read_lock(path))
    if holder is None:
        age = time.time() - (_mtime(path) or time.time())
        return f"an unreadable lock {age:.0f} s old" if age > UNREADABLE_GRACE_SECONDS else None
    if holder.alive():
        return None
    return f"the lock of {holder.describe()}, which is no longer running"


def _take_over(path: Path, reason: str, before: bytes | None) -> Lock | None:
    """Replace the stale lock whose content was ``before`` when it was judged stale. Two processes may judge it
    stale at once: a guard file (O_EXCL again) lets one of them replace it; the other, or one that finds the lock
    changed since it was judged (another process took it over meanwhile), gets None."""
    before = before or b""
    guard = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if time.time() - (_mtime(guard) or time.time()) > _TAKEOVER_GUARD_SECONDS:
            guard.unlink(missing_ok=True)  # left by a process killed mid-takeover; the next try may proceed
        return None
    try:
        try:
            if path.read_bytes() != before:  # someone else replaced it after we judged it stale
                return None
        except FileNotFoundError:
            pass  # its holder released it meanwhile: simply take it
        else:
            path.unlink()
        lock = _create(path)
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)
    if lock is not None:
        logger.warning("%s: taking over %s", path, reason)
    return lock


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _boot_time() -> float | None:
    """When this host booted, as ``time.time()`` (/proc/stat); None where unknown."""
    try:
        return next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _before_boot(started: float) -> bool:
    """True when ``started`` is before this host last booted (False where the boot time is unknown)."""
    booted = _boot_time()
    return booted is not None and started < booted


def _process_state(pid: int) -> tuple[str | None, float | None]:
    """(state letter, start time as ``time.time()``) of a process from /proc; (None, None) where unknown."""
    boot = _boot_time()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, None
    if boot is None:
        return None, None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces and parentheses
    try:  # field 3 is the state, field 22 the start time in clock ticks after boot
        return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError):
        return fields[0] if fields else None, None


@dataclass
class ClaimedRun:
    """What one worker of a claimed set of jobs (sweep cells, compare-online stages) did: jobs it computed, jobs
    it found finished, jobs other live workers still hold (their folder and holder) and, when every job is
    finished, the table (else None). ``label_parts``: how many trailing folder names name a held job."""

    computed: int
    skipped: int
    held: list[tuple[Path, Holder]]
    table: dict | None = None
    label_parts: int = 1

    def describe_held(self) -> str:
        return "; ".join(f"{'/'.join(folder.parts[-self.label_parts:])} ({holder.describe()})"
                         for folder, holder in self.held)


def claim_each(jobs: Sequence[Job]) -> tuple[int, list[tuple[Path, Holder]]]:
    """Run every unfinished job this process can claim, in order, looking again after each pass (a job held by
    a process that has since died is free by then). Returns the number run here and, once no unfinished job is
    left to claim, the jobs other live processes hold (their lock's folder and holder)."""
    computed = 0
    while True:
        progressed, held, computed_before = False, [], computed
        for job in jobs:
            if job.finished():
                continue
            lock = try_lock(job.lock)
            if lock is None:
                holder = current_holder(job.lock)
                if holder is None:  # released (or its holder died) since: look at it again next pass
                    progressed = True
                else:
                    held.append((job.lock.parent, holder))
                continue
            with lock:
                if not job.finished():  # another process may have finished it since the check above
                    with _own_session():  # the run directories it locks are free once it ends (run_lock.py)
                        job.run()
                    computed += 1
            progressed = True
        if not progressed:
            return computed, held
        if computed == computed_before:  # only locks released meanwhile: let their holders' files settle
            time.sleep(POLL_SECONDS)


def run_once(path: Path, done: Path, what: str, work: Callable[[], None],
             record: Callable[[], dict[str, Any]] | None = None) -> bool:  # fmt: skip
    """Run ``work`` (resumable shared work: pairs, a base model's evaluation) under the lock at ``path``, one
    process at a time. A process that waited while another ran it to the end (``done`` names the last holder
    to finish it) skips it; one that finds the lock free runs it, resuming, as a lone process always has.
    ``record``: what else ``done`` records once the work ran (e.g. digests of what it made). True when it ran
    here."""
    from safealign.io.jsonfile import write_json

    lock, waited = wait_lock(path, what)
    with lock:
        try:
            finished_by = json.loads(done.read_text()).get("holder")
        except (OSError, ValueError, AttributeError):
            finished_by = None
        if finished_by in [h.record() for h in waited]:
            logger.info("%s finished by another process while this one waited", what)
            return False
        with _own_session():  # a later process may run it again (resuming): it must find its run directories free
            work()
        write_json(done, {"holder": lock.holder.record(), "finished": time.time(), **(record() if record else {})})
    return True


def _own_session():
    """A :func:`safealign.io.run_lock.run_dir_session` (imported here: run_lock builds on this module)."""
    from safealign.io.run_lock import run_dir_session

    return run_dir_session()
