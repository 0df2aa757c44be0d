"""``safealign sweep GRID.yaml``: settings × variants × seeds from shared pairs (safealign/pipelines/sweep.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safealign.pipelines.sweep import Grid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", help="sweep grid YAML (e.g. configs/sweep/e_effect.yaml)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the sweep's output directory first: the whole directory, with the cells of "
                        "every grid that shares it (refused while a live worker holds a lock there)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="run N worker processes on this sweep (each claims the next unfinished cell; one "
                        "GPU each when GPUs are visible, else the CPU cores split between them). Starting the "
                        "plain command several times does the same (docs/sweep.md)")
    parser.add_argument("--table", action="store_true",
                        help="print the table of the cells finished so far and the work left, write it to "
                        "tables/<grid>.json|md (what `safealign report` renders) and exit: computes nothing, loads "
                        "no model (a running sweep is left alone)")
    parser.add_argument("--metrics", default=None, metavar="A,B",
                        help="with --table: only these metrics, in this order (e.g. direct_asr,template_asr)")
    parser.add_argument("--markdown", action="store_true", help="with --table: print Markdown tables")
    parser.add_argument("--pick", action="store_true",
                        help="apply the pre-registered rule that picks the demo's default (README; needs variants "
                        "dpo and e-dpo) to the cells finished so far and exit; provisional until every setting "
                        "has every seed. Defined on the grid file's whole grid: refused with overrides other than "
                        "output_dir=")
    parser.add_argument("--score-open-margins", action="store_true",
                        help="score the open held-out refusal margin (heldout_refusal_margin_open: base answers cut "
                        "at the token limit scored without an end-of-turn) of every finished cell and the base "
                        "model that lack it (cells finished before it existed), from each cell's saved adapter, and "
                        "exit; re-run to resume. Writes only refusal_margin/margins_open.json and its digest; "
                        "leaves cells a worker holds and unfinished ones alone")
    parser.add_argument("overrides", nargs="*", default=[],  # default: not listed as required when GRID is missing
                        help="grid keys (seeds=[0,1] output_dir=... axes.beta=[0.1]) or base DemoConfig "
                        "overrides (model=tiny-random harmful_test=8 ...)")


def run(args: argparse.Namespace) -> int:
    from safealign.errors import UserError
    from safealign.pipelines.sweep import (
        format_table, load_grid, narrowed_note, progress_line, sweep_table, write_tables,
    )

    if args.workers < 1:
        raise UserError(f"--workers: a number of worker processes, at least 1, got {args.workers}")
    grid = load_grid(args.grid, args.overrides)
    if (args.metrics or args.markdown) and not args.table:
        raise UserError("--metrics and --markdown shape the printed table: use them with --table")
    if args.score_open_margins:
        return _score_open_margins(args, grid)
    if args.pick:
        if args.table or args.fresh or args.workers > 1:
            raise UserError("--pick only reads the finished cells: it takes none of --table, --fresh, --workers")
        from safealign.pipelines.sweep_rule import check_whole_grid, format_pick, pick_default

        check_whole_grid(grid)  # before the table: a view's cells are no concern of the rule
        print(format_pick(pick_default(grid, sweep_table(grid))))
        return 0
    if args.table:
        if args.fresh or args.workers > 1:
            raise UserError("--table only reads the finished cells: it takes neither --fresh nor --workers")
        table = sweep_table(grid)
        print(format_table(table, markdown=args.markdown, metrics=args.metrics.split(",") if args.metrics else None))
        print(progress_line(table))
        if grid.narrowed:  # e.g. seeds=[0,1,2,3,4] variants=[dpo,e-dpo] on the methods grid: a view, not the grid
            print(narrowed_note(grid))
        elif Path(grid.output_dir).is_dir():  # what `safealign report` shows; a finished sweep rewrites the same
            write_tables(grid, table)
        return 0
    from safealign.io.run_lock import delete_run_dir, worker_lock

    if args.fresh:
        delete_run_dir(grid.output_dir, "--fresh")
    with worker_lock(grid.output_dir):  # the worker's (or launcher's) whole life: another --fresh is refused
        return _work(args, grid)


def _score_open_margins(args: argparse.Namespace, grid: Grid) -> int:
    """The open margins of the finished cells (safealign/pipelines/sweep_open_margins.py), as a worker of the
    directory would hold it (``--fresh`` is refused meanwhile)."""
    from safealign.errors import UserError
    from safealign.io.run_lock import worker_lock
    from safealign.pipelines.sweep_open_margins import score_open_margins

    if args.table or args.pick or args.fresh or args.workers > 1:
        raise UserError("--score-open-margins scores the finished cells and exits: it takes none of --table, --pick, "
                        "--fresh, --workers")
    if not Path(grid.output_dir).is_dir():
        raise UserError(f"{grid.output_dir}: no sweep directory (the grid's output_dir) to score")
    with worker_lock(grid.output_dir):
        print(score_open_margins(grid).describe())
    return 0


def _work(args: argparse.Namespace, grid: Grid) -> int:
    """A worker's run of the sweep, or with ``--workers N`` the launcher's; the table printed once finished."""
    from safealign.pipelines.sweep import format_table, narrowed_note, run_sweep

    if args.workers > 1:
        from safealign.pipelines.sweep_workers import launch_workers

        return launch_workers(grid, args.grid, args.overrides, args.workers, verbose=args.verbose)
    result = run_sweep(grid)
    if result.table is None:
        from safealign.pipelines.sweep_workers import table_command, unfinished_message

        where = str(grid.table_path(".md"))
        if grid.narrowed:  # this view's table is not written: --table prints it
            where += "; this view's own: --table with the same overrides"
        print(unfinished_message(result, "cell", where, rerun=table_command(args.grid, args.overrides)))
        return 0
    table = result.table
    print(format_table(table))
    print(f"{table['computed']} cell(s) computed, {table['skipped']} already finished; "
          f"wall time {table['wall_seconds']:.0f} s")
    print(narrowed_note(grid) if grid.narrowed else f"table: {grid.table_path('.md')}")
    return 0
