"""Lock files that sweep workers claim cells and caches with (safealign/io/lockfile.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time


from lock_helpers import dead_pid, write_lock

from safealign.io.lockfile import Holder, current_holder, read_holder, try_lock, wait_lock


def test_one_holder_at_a_time_and_release_frees_it(tmp_path):
    path = tmp_path / "cell" / "claim.lock"
    lock = try_lock(path)
    assert lock is not None and read_holder(path) == lock.holder and lock.holder.pid == os.getpid()
    assert try_lock(path) is None  # held (by this very process, which is alive)
    assert current_holder(path) == lock.holder
    with lock:
        pass
    assert not path.exists() and current_holder(path) is None
    assert try_lock(path) is not None


def test_a_live_process_lock_is_respected(tmp_path, sleeper):
    path = tmp_path / "claim.lock"
    write_lock(path, sleeper.pid)
    assert try_lock(path) is None
    assert current_holder(path).pid == sleeper.pid
    sleeper.kill()
    sleeper.wait()
    assert try_lock(path) is not None  # gone now: stale


def test_a_dead_process_lock_is_taken_over_and_logged(tmp_path, caplog):
    path = tmp_path / "claim.lock"
    pid = dead_pid()
    write_lock(path, pid)
    assert current_holder(path) is None
    with caplog.at_level(logging.WARNING, logger="safealign.io.lockfile"):
        lock = try_lock(path)
    assert lock is not None and read_holder(path) == lock.holder
    assert f"taking over the lock of pid {pid}" in caplog.text and "no longer running" in caplog.text


def test_a_reused_pid_or_a_zombie_does_not_keep_a_lock(tmp_path, sleeper):
    path = tmp_path / "claim.lock"
    write_lock(path, os.getpid(), started=1.0)  # this pid, but claimed long before this process started
    assert try_lock(path) is not None
    path.unlink()
    write_lock(path, sleeper.pid, started=time.time() - 3600)  # the pid now names a process started after the claim
    assert try_lock(path) is not None
    path.unlink()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: kill(pid, 0) still succeeds
    write_lock(path, zombie.pid)
    try:
        assert try_lock(path) is not None
    finally:
        zombie.wait()


def test_another_hosts_lock_is_never_stale(tmp_path):
    path = tmp_path / "claim.lock"
    write_lock(path, dead_pid(), host="some-other-host", started=1.0)
    assert try_lock(path) is None and current_holder(path).host == "some-other-host"


def test_an_unreadable_lock_is_held_while_young_and_stale_when_old(tmp_path):
    path = tmp_path / "claim.lock"
    path.write_text("")  # created, holder not written yet
    assert try_lock(path) is None and current_holder(path).pid == -1
    old = time.time() - 120
    os.utime(path, (old, old))  # its writer died between creating and writing it
    assert try_lock(path) is not None


def test_two_takeovers_of_one_stale_lock_let_only_one_through(tmp_path):
    path = tmp_path / "claim.lock"
    write_lock(path, dead_pid())
    guard = tmp_path / "claim.lock.takeover"
    guard.write_text("")  # another process is replacing the stale lock right now
    assert try_lock(path) is None and guard.exists()
    old = time.time() - 120
    os.utime(guard, (old, old))  # ... or was killed while doing so
    assert try_lock(path) is None and not guard.exists()  # the old guard is cleared ...
    assert try_lock(path) is not None  # ... and the next try takes the stale lock


def test_release_leaves_a_lock_that_is_no_longer_its_own(tmp_path):
    path = tmp_path / "claim.lock"
    lock = try_lock(path)
    write_lock(path, os.getpid(), host="some-other-host")  # e.g. taken over after this holder was judged gone
    lock.release()
    assert read_holder(path).host == "some-other-host"


def test_wait_lock_waits_for_the_holder_and_names_it(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(time, "monotonic", lambda: 5.0)  # a machine booted seconds ago
    path = tmp_path / "claim.lock"
    first = try_lock(path)
    naps = []

    def nap(seconds):  # the holder finishes during the waiter's first nap
        naps.append(seconds)
        first.release()

    with caplog.at_level(logging.INFO, logger="safealign.io.lockfile"):
        lock, waited = wait_lock(path, "the shared steps", sleep=nap)
    assert len(naps) == 1 and waited == [first.holder] and read_holder(path) == lock.holder
    assert f"waiting for the shared steps (pid {os.getpid()} on" in caplog.text  # logged at once, naming the holder
    lock.release()
    lock, waited = wait_lock(path, "the shared steps", sleep=nap)
    assert waited == [] and len(naps) == 1  # free: taken at once


def test_holder_describes_itself():
    text = Holder(12, "box", time.time()).describe()
    assert text.startswith("pid 12 on box since ")


def test_a_live_lock_installed_after_the_stale_one_was_judged_is_never_replaced(tmp_path, sleeper):
    """A judges the lock stale; before A replaces it, B (here: the live sleeper) takes it over. A must not remove
    B's live lock: it replaces only the content it judged."""
    from safealign.io.lockfile import _read_lock, _stale_reason, _take_over

    path = tmp_path / "cell" / "claim.lock"
    path.parent.mkdir()
    write_lock(path, dead_pid())
    seen = _read_lock(path)
    reason = _stale_reason(path, seen)
    assert reason is not None
    write_lock(path, sleeper.pid)  # B's takeover, between A's judgement and A's replacement
    assert _take_over(path, reason, seen) is None
    assert read_holder(path).pid == sleeper.pid


def test_shared_work_frees_its_run_directories_for_a_process_that_resumes_it_later(tmp_path):
    """A sweep worker runs the shared step (the base model's evaluation) under run_once and lives on; one that
    arrives later finds shared.lock free and resumes that step, which claims the same run directories."""
    from safealign.io.lockfile import run_once
    from safealign.io.rundir import claim_run_dir, make_fingerprint

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from safealign.io.lockfile import run_once\n"
        "from safealign.io.rundir import claim_run_dir, make_fingerprint\n"
        "root = Path(sys.argv[1])\n"
        "run_once(root / 'shared.lock', root / 'shared.done', 'shared', lambda: claim_run_dir(\n"
        "    root / 'before', make_fingerprint('eval', {'a': 1}), outputs=('records.jsonl',)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    first = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "ready"  # it ran the shared step and is still alive
        ran = run_once(tmp_path / "shared.lock", tmp_path / "shared.done", "shared", lambda: claim_run_dir(
            tmp_path / "before", make_fingerprint("eval", {"a": 1}), outputs=("records.jsonl",)))
        assert ran  # resumed here, its run directory not held by the first process any more
    finally:
        first.kill()
        first.wait()


def _here():
    """This process's pid namespace and kernel boot (Linux; the tests below need both)."""
    with open("/proc/sys/kernel/random/boot_id") as fh:
        return os.readlink("/proc/self/ns/pid"), fh.read().strip()


def _write_ns_lock(path, pid, *, pid_ns, boot_id, started=None):
    write_lock(path, pid, started=started)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "pid_ns": pid_ns, "boot_id": boot_id}))
    return path


def test_a_new_lock_records_its_pid_namespace_and_boot(tmp_path):
    pid_ns, boot_id = _here()
    lock = try_lock(tmp_path / "claim.lock")
    data = json.loads((tmp_path / "claim.lock").read_text())
    assert data["pid_ns"] == pid_ns and data["boot_id"] == boot_id and read_holder(lock.path) == lock.holder


def test_a_lock_from_another_pid_namespace_on_this_host_is_never_stale(tmp_path, caplog):
    """docker --network host, a hostNetwork pod, unshare -p: the same host name, but its pids are not ours."""
    pid_ns, boot_id = _here()
    path = _write_ns_lock(tmp_path / "claim.lock", dead_pid(), pid_ns="pid:[1]", boot_id=boot_id)
    assert try_lock(path) is None and current_holder(path) is not None
    assert "another pid namespace" in current_holder(path).describe()
    path.unlink()  # the same namespace: judged by its pid, as before
    pid = dead_pid()
    _write_ns_lock(path, pid, pid_ns=pid_ns, boot_id=boot_id)
    with caplog.at_level(logging.WARNING, logger="safealign.io.lockfile"):
        assert try_lock(path) is not None
    assert f"taking over the lock of pid {pid}" in caplog.text


def test_a_lock_from_another_boot_is_stale_only_when_written_before_this_boot(tmp_path):
    """Another boot id: an earlier boot of this host (its processes are all gone) when the lock predates this boot,
    else another machine of the same name, running now."""
    pid_ns, _ = _here()
    path = _write_ns_lock(tmp_path / "claim.lock", dead_pid(), pid_ns=pid_ns, boot_id="other-boot")
    assert try_lock(path) is None and current_holder(path) is not None
    path.unlink()
    _write_ns_lock(path, dead_pid(), pid_ns="pid:[1]", boot_id="other-boot", started=1.0)  # a power cut, long ago
    assert try_lock(path) is not None


def test_the_worker_lifetime_lock_is_named_by_host_pid_namespace_and_pid(tmp_path):
    import re
    import socket

    from safealign.io.run_lock import worker_lock_path

    ns = re.sub(r"\D", "", _here()[0])
    assert worker_lock_path(tmp_path).name == f"{socket.gethostname()}-{ns}-{os.getpid()}.lock"
    assert worker_lock_path(tmp_path, 7).name == f"{socket.gethostname()}-{ns}-7.lock"


def test_a_holder_read_from_a_lock_without_namespace_matches_its_earlier_record():
    """run_once compares the holders it waited for with shared.json's, written by earlier versions too."""
    old = Holder(12, "h", 3.5)
    assert old.record() == {"pid": 12, "host": "h", "started": 3.5}
    assert Holder(12, "h", 3.5, "pid:[9]", "b").record() == {"pid": 12, "host": "h", "started": 3.5,
                                                             "pid_ns": "pid:[9]", "boot_id": "b"}
