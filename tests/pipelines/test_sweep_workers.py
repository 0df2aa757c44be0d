"""Several workers on one sweep directory (docs/sweep.md): each cell computed once, locks of live workers respected,
stale ones taken over, the shared steps done once, the table the single process's; tiny random model."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys

import pytest

from tests.pipelines.test_sweep import GRID as SWEEP_GRID

# test_sweep.py's grid with one setting: 4 cells, 2 per seed
GRID = SWEEP_GRID.replace("beta: [0.1, 0.5]", "beta: [0.1]")
assert GRID != SWEEP_GRID


@pytest.fixture()
def grid_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))  # the worker processes inherit it
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(out=tmp_path / "sweep"))
    return path


def hold(cell, pid, started=None):
    """A claim on ``cell`` as a worker with ``pid`` on this host would have written it."""
    import socket
    import time

    cell.mkdir(parents=True, exist_ok=True)
    (cell / "claim.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                 "started": time.time() if started is None else started}))


def hold_live_and_dead(live, dead, live_pid) -> int:
    """``live`` claimed by the running process ``live_pid``; ``dead`` by a process that has since exited, as a
    worker killed outright leaves its claim behind. Returns the dead process's pid."""
    hold(live, live_pid)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    hold(dead, gone.pid)
    return gone.pid


def computed_cells(logs):
    """The cells the worker logs say were computed, one entry per computation."""
    return sorted(m for log in logs for m in re.findall(r"sweep: cell (\S+)", log.read_text()))


def comparable(table):
    return [(row["name"], row["cells_finished"], row["means"], row["differences"]) for row in table["settings"]]


def test_two_worker_processes_compute_each_cell_once_and_match_one_process(grid_file, tmp_path, capsys):
    from safealign.cli import main

    out = tmp_path / "sweep"
    # a sweep directory started by the plain command, without workers (seed 0 only) ...
    assert main(["sweep", str(grid_file), "seeds=[0]"]) == 0
    fingerprint = (out / "fingerprint.json").read_text()
    capsys.readouterr()
    # ... resumes under two worker processes, which share the two seed-1 cells between them
    assert main(["sweep", str(grid_file), "--workers", "2"]) == 0
    assert (out / "fingerprint.json").read_text() == fingerprint  # the number of workers is no setting of a sweep
    logs = sorted((out / "workers").glob("grid-worker-*.log"))  # named after the grid: grids share a directory
    assert len(logs) == 2
    expected = [str(out / "cells" / "beta=0.1" / f"{v}-seed1") for v in ("dpo", "e-dpo")]
    assert computed_cells(logs) == expected, [log.read_text()[-3000:] for log in logs]  # each once, none of seed 0
    assert not list(out.glob("cells/*/*/claim.lock")) and not (out / "shared.lock").exists()
    assert not list((out / "workers").glob("*.lock"))  # nor the launcher's and the workers' lifetime locks
    pairs = [json.loads(line)["id"] for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == len(set(pairs))  # the shared pairs were not built twice
    table = json.loads((out / "tables" / "grid.json").read_text())  # written by the last worker to finish
    assert all(row["cells_finished"] == 4 for row in table["settings"])
    assert "e-dpo − dpo" in capsys.readouterr().out  # and printed by the launcher
    # workers on a view of the grid (seed 0 only): nothing left to compute, the grid's table stays, the view's printed
    written = (out / "tables" / "grid.json").read_text()
    assert main(["sweep", str(grid_file), "--workers", "2", "seeds=[0]"]) == 0
    printed = capsys.readouterr().out
    assert "grid.json is left as the grid file defines it" in printed and "2/2 cells finished" in printed
    assert (out / "tables" / "grid.json").read_text() == written

    # one process computing the workers' cells from the same pairs, base evaluation and caches gives the same table
    single = tmp_path / "single"
    shutil.copytree(out, single, ignore=shutil.ignore_patterns("*-seed1", "workers", "tables"))
    assert main(["sweep", str(grid_file), f"output_dir={single}"]) == 0
    assert json.loads((single / "tables" / "grid.json").read_text())["computed"] == 2
    alone = json.loads((single / "tables" / "grid.json").read_text())
    assert _same(comparable(table), comparable(alone)), (comparable(table), comparable(alone))


def _same(a, b) -> bool:
    """Equal up to float rounding (numbers are compared with a relative tolerance)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return b == pytest.approx(a, rel=1e-4, abs=1e-6)
    return a == b


def test_a_live_workers_cell_is_left_to_it_and_a_dead_ones_is_taken_over(grid_file, tmp_path, sleeper, caplog,
                                                                         capsys):  # fmt: skip
    from safealign.cli import main
    from safealign.pipelines.sweep import check_sweep_dir, load_grid, run_sweep

    out = tmp_path / "sweep"
    # seed 0 only, in the grid file: a run with overrides is a view, which writes no table of the grid
    grid_file.write_text(grid_file.read_text().replace("seeds: [0, 1]", "seeds: [0]"))
    grid = load_grid(grid_file)
    check_sweep_dir(grid)  # workers claim cells of a sweep already started
    live = out / "cells" / "beta=0.1" / "dpo-seed0"  # first in order
    dead = out / "cells" / "beta=0.1" / "e-dpo-seed0"
    gone = hold_live_and_dead(live, dead, sleeper.pid)
    with caplog.at_level(logging.INFO):
        run = run_sweep(grid)
    assert (run.computed, run.skipped, [c for c, _ in run.held]) == (1, 0, [live])
    assert run.table is None and not (out / "tables" / "grid.json").exists()  # the live worker's cell is not done
    assert (dead / "cell.json").exists() and not (live / "cell.json").exists()
    assert f"taking over the lock of pid {gone}" in caplog.text
    assert f"pid {sleeper.pid} on" in run.describe_held()
    assert main(["sweep", str(grid_file)]) == 0  # the command says so and exits
    printed = capsys.readouterr().out
    assert "1 still running in other workers: beta=0.1/dpo-seed0 (pid" in printed and "writes the table" in printed
    # the holder may be a worker of another grid sharing the directory, which writes only its own table
    assert f"`safealign sweep {grid_file} --table`" in printed

    sleeper.kill()
    sleeper.wait()  # that worker died: its cell is free, and the worker that finishes it writes the table
    run = run_sweep(grid)
    assert (run.computed, run.skipped, run.held) == (1, 1, [])
    assert run.table is not None and (out / "tables" / "grid.json").exists() and (live / "cell.json").exists()


def test_the_shared_steps_are_skipped_after_waiting_for_a_worker_that_finished_them(tmp_path, monkeypatch):
    from safealign.io import lockfile
    from safealign.pipelines import sweep

    other = lockfile.Holder(4242, "somewhere", 1.0)

    def waited_for_other(path, what, **kwargs):
        lock = lockfile.try_lock(path)
        return lock, [other]

    loads = []
    monkeypatch.setattr(lockfile, "wait_lock", waited_for_other)
    monkeypatch.setattr("safealign.models.load_model", lambda spec: loads.append(spec) or (_ for _ in ()).throw(
        RuntimeError("stop after the load")))
    (tmp_path / sweep.SHARED_DONE).write_text(json.dumps({"holder": {"pid": 4242, "host": "somewhere",
                                                                     "started": 1.0}}))
    base = sweep.DemoConfig()
    sweep._shared_steps(base, {}, tmp_path)  # the worker it waited for finished them
    assert loads == [] and not (tmp_path / "shared.lock").exists()
    (tmp_path / sweep.SHARED_DONE).write_text(json.dumps({"holder": {"pid": 7, "host": "elsewhere", "started": 1.0}}))
    with pytest.raises(RuntimeError, match="stop after the load"):  # someone else, earlier: resume them
        sweep._shared_steps(base, {}, tmp_path)
    assert len(loads) == 1 and not (tmp_path / "shared.lock").exists()  # released on the way out


def test_worker_environment_splits_gpus_and_cores():
    from safealign.pipelines.sweep_workers import visible_gpus, worker_env

    env = {"PATH": "/bin"}
    assert [worker_env(i, 3, env, ["0", "1"], 8) for i in range(3)] == [
        {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": g, "OMP_NUM_THREADS": "2"} for g in ("0", "1", "0")]
    assert worker_env(0, 4, {"OMP_NUM_THREADS": "1"}, [], 2) == {"OMP_NUM_THREADS": "1"}  # the user's choice stands
    assert worker_env(1, 4, {}, [], 2) == {"OMP_NUM_THREADS": "1"}
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 5"}) == ["2", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_workers_must_be_positive(grid_file, capsys):
    from safealign.cli import main

    assert main(["sweep", str(grid_file), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_the_launcher_names_each_log_after_its_grid_and_says_how_to_write_a_table_left_unwritten(tmp_path, capsys):
    """Grids sharing a directory keep their own worker logs; workers that end with no table written (the last
    cells held by workers of another grid, which writes only its own) leave the command that writes it."""
    from safealign.pipelines.sweep_workers import run_workers

    table = tmp_path / "tables" / "e_prefixes.json"
    assert run_workers(["sweep", "--help"], tmp_path, 2, table=table, show=str, label="e_prefixes",
                       rerun="safealign sweep configs/sweep/e_prefixes.yaml --table") == 0
    assert sorted(p.name for p in (tmp_path / "workers").glob("*.log")) == [
        "e_prefixes-worker-0.log", "e_prefixes-worker-1.log"]
    printed = capsys.readouterr().out
    assert "e_prefixes-worker-*.log" in printed
    assert "`safealign sweep configs/sweep/e_prefixes.yaml --table`" in printed
    from safealign.pipelines.sweep_workers import table_command

    # the grid's table: its output_dir kept, a view's overrides dropped
    assert table_command("g.yaml", ["output_dir=/x y", "seeds=[0]"]) == \
        "safealign sweep g.yaml 'output_dir=/x y' --table"


def test_a_worker_start_leaves_the_recorded_shared_steps_and_their_files_alone(grid_file, tmp_path, monkeypatch):
    """The pairs and the base model's evaluation, recorded done, are not run again when a worker starts (no model
    load, no rewritten summary or marker in committed results); a marker that no longer matches the pairs runs them
    again, and a resume that changes nothing keeps the summary as it was."""
    from safealign.cli import main
    from safealign.pipelines import demo

    out = tmp_path / "sweep"
    view = ["seeds=[0]", "variants=[dpo]"]
    assert main(["sweep", str(grid_file), *view]) == 0
    summary, marker = out / "before" / "jailbreak" / "summary.json", out / "shared.json"
    recorded = json.loads(summary.read_text())
    summary.write_text(json.dumps({**recorded, "wall_s": 999.0}, indent=2) + "\n")  # as a committed one would be
    kept = {p: p.read_bytes() for p in (summary, marker)}
    cell = out / "cells" / "beta=0.1" / "dpo-seed0"
    (cell / "cell.json").unlink()  # a cell left to compute: the worker starts in earnest

    def refuse(*args, **kwargs):
        raise AssertionError("the shared steps ran again")

    with monkeypatch.context() as patch:
        patch.setattr(demo, "build_pairs", refuse)
        assert main(["sweep", str(grid_file), *view]) == 0
    assert (cell / "cell.json").exists() and {p: p.read_bytes() for p in kept} == kept

    # the pairs rebuilt since the marker was written: the shared steps resume; nothing new, so the summary stays
    json.loads(marker.read_text())  # a marker of this code records what it finished
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "pairs": "sha256:0"}))
    (cell / "cell.json").unlink()
    ran = []
    build_pairs = demo.build_pairs
    monkeypatch.setattr(demo, "build_pairs", lambda *a, **k: ran.append(1) or build_pairs(*a, **k))
    assert main(["sweep", str(grid_file), *view]) == 0
    assert ran == [1] and summary.read_bytes() == kept[summary]
    assert json.loads(marker.read_text())["pairs"] != "sha256:0"
    from safealign.pipelines.sweep import _shared_done

    marker.write_text(json.dumps({"holder": {"pid": 7, "host": "vm", "started": 1.0}, "finished": 2.0}))
    assert _shared_done(out)  # an earlier code's marker (no digests): its existence says they finished
    marker.unlink()
    assert not _shared_done(out)
