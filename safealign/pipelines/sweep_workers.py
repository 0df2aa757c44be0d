"""``safealign sweep GRID --workers N``: N worker processes on one sweep directory (docs/sweep.md); the same
launcher (:func:`run_workers`) runs ``safealign compare-online CONFIG --workers N`` (docs/online.md).

A worker is the plain command, ``python -m safealign sweep GRID [overrides]``, started with its own device
and thread settings: with CUDA GPUs visible, worker i sees only GPU i mod G (``CUDA_VISIBLE_DEVICES``);
each gets the CPU cores split evenly (``OMP_NUM_THREADS``, at least 1, unless that is set already). The
workers share the cells through the sweep's lock files (safealign/pipelines/sweep.py), so this launcher
holds no state: it starts them, writes each one's output to ``output_dir/workers/<grid name>-worker-<i>.log``
(grids may share a directory; compare-online's: ``worker-<i>.log``), waits, and on Ctrl-C or SIGTERM asks each to
stop (SIGTERM: the batch in flight is dropped, the rest kept).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from safealign.interrupt import StopRequested, stop_on_sigterm, stop_requested, wait_or_stop
from safealign.pipelines.sweep import Grid, check_sweep_dir, format_table, narrowed_note, progress_line, sweep_table

logger = logging.getLogger(__name__)


def unfinished_message(result: Any, noun: str, table: str, rerun: str | None = None) -> str:
    """What a worker prints when other live workers still hold some of the work (``result``: a sweep's or
    compare-online's run, with ``computed``, ``skipped``, ``held`` and ``describe_held()``). ``rerun``: the command
    that writes the table, where the holders may be workers of another grid sharing the directory, which write
    only their own grid's table."""
    text = (f"{result.computed} {noun}(s) computed, {result.skipped} already finished; {len(result.held)} still "
            f"running in other workers: {result.describe_held()}\nthe worker that finishes the last of them "
            f"writes the table ({table})")
    if rerun:
        text += (" if it runs this grid: a worker of another grid sharing the directory writes only its own, so once "
                 f"they end, `{rerun}` writes this one")
    return text


def worker_env(index: int, workers: int, env: Mapping[str, str], gpus: list[str], cores: int) -> dict[str, str]:
    """Worker ``index``'s environment: one of the visible GPUs, round robin, and its share of the cores."""
    out = dict(env)
    if gpus:
        out["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    if "OMP_NUM_THREADS" not in env:  # the user's own choice stands
        out["OMP_NUM_THREADS"] = str(max(1, cores // workers))
    return out


def visible_gpus(env: Mapping[str, str]) -> list[str]:
    """The CUDA devices a worker may be given: ``CUDA_VISIBLE_DEVICES`` as set, else every one torch sees."""
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def launch_workers(grid: Grid, grid_path: str, overrides: list[str], workers: int, *, verbose: bool = False) -> int:
    """``safealign sweep GRID --workers N``: the sweep's directory checked once, then :func:`run_workers`."""
    check_sweep_dir(grid)  # a changed base config is refused once, here, not by every worker
    if not grid.narrowed:
        return run_workers(["sweep", grid_path, *overrides], grid.output_dir, workers,
                           table=grid.table_path(".json"), show=format_table, verbose=verbose, label=grid.name,
                           rerun=table_command(grid_path, overrides))
    # a view (seeds, variants or axes overridden): the workers leave the grid's table file alone, so the table of
    # what they ran is printed here, from the cells
    code = run_workers(["sweep", grid_path, *overrides], grid.output_dir, workers, table=None, show=format_table,
                       verbose=verbose, label=grid.name)
    if code == 0:
        table = sweep_table(grid)
        print(format_table(table))
        print(progress_line(table))
        print(narrowed_note(grid))
    return code


def table_command(grid_path: str, overrides: list[str]) -> str:
    """The command that writes a sweep grid's table from its finished cells (with the ``output_dir=`` given, the
    one override that keeps the grid the grid file's)."""
    import shlex

    kept = [o for o in overrides if o.partition("=")[0] == "output_dir"]
    return shlex.join(["safealign", "sweep", grid_path, *kept, "--table"])


def run_workers(argv: list[str], output_dir: str | Path, workers: int, *, table: Path | None,
                show: Callable[[dict[str, Any]], str], verbose: bool = False, label: str | None = None,
                rerun: str | None = None) -> int:  # fmt: skip
    """Start ``workers`` processes of ``python -m safealign *argv`` (a command whose workers share
    ``output_dir`` through lock files), wait for them; 0 when all ended well (the last to finish wrote
    ``table``, a JSON file shown here with ``show`` beside its ``.md`` path; None: the workers write none and the
    caller shows what they did), else 1 with the failed workers' log tails. ``label`` names the logs,
    ``workers/<label>-worker-<i>.log`` (a sweep's grid: grids share a directory); ``rerun``: the command that writes
    ``table`` when these workers end with work other workers hold (which may write only their own table)."""
    logs = Path(output_dir) / "workers"
    log_name = f"{label}-worker" if label else "worker"
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "safealign", *(["-v"] if verbose else []), *argv]
    name = argv[0]
    gpus = visible_gpus(os.environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    started = time.time()
    procs: list[tuple[int, subprocess.Popen, Path]] = []
    with stop_on_sigterm():
        try:
            for i in range(workers):
                env = worker_env(i, workers, os.environ, gpus, cores)
                log = logs / f"{log_name}-{i}.log"
                with log.open("ab") as out:
                    procs.append((i, subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT), log))
                logger.info("%s: worker %d started (pid %d, GPU %s, %s thread(s)); log %s", name, i, procs[-1][1].pid,
                            env.get("CUDA_VISIBLE_DEVICES", "-"), env.get("OMP_NUM_THREADS"), log)
            codes = _wait(procs, name)
        except KeyboardInterrupt:
            _stop(procs)
            raise
    failed = [(i, code, log) for (i, _, log), code in zip(procs, codes) if code != 0]
    for i, code, log in failed:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        print(f"worker {i} failed (exit status {code}); the end of {log}:\n{tail}", file=sys.stderr)
    if failed:
        return 1
    if table is None:
        print(f"{workers} workers ended; wall time {time.time() - started:.0f} s")
        return 0
    summary = table.with_suffix(".md")
    if summary.is_file() and summary.stat().st_mtime >= started:
        import json

        print(show(json.loads(table.read_text())))
        print(f"{workers} workers, wall time {time.time() - started:.0f} s; table: {summary}")
    else:  # work held by workers outside this launch: the last of them writes the table, if it runs this grid
        print(f"{workers} workers ended with work still held by other workers; see {logs}/{log_name}-*.log"
              + (f"; once those end, `{rerun}` writes the table (they write only their own grid's)" if rerun else ""))
    return 0


def _wait(procs: list[tuple[int, subprocess.Popen, Path]], name: str) -> list[int]:
    codes: dict[int, int] = {}
    while len(codes) < len(procs):
        for i, proc, _ in procs:
            if i not in codes and (code := proc.poll()) is not None:
                codes[i] = code
                logger.info("%s: worker %d ended (exit status %d)", name, i, code)
        if len(codes) < len(procs) and (wait_or_stop(1.0) or stop_requested()):
            raise StopRequested("stopped by SIGTERM: each worker was asked to stop; re-run to resume")
    return [codes[i] for i, _, _ in procs]


def _stop(procs: list[tuple[int, subprocess.Popen, Path]]) -> None:
    """Ask every running worker to stop as after SIGTERM (the batch in flight is dropped), and wait for it."""
    for _, proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for _, proc, _ in procs:
        proc.wait()
