"""``safealign sweep GRID.yaml``: settings × variants × seeds from shared pairs (safealign/pipelines/sweep.py)."""

from __future__ import annotations

import argparse
import shutil


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", help="sweep grid YAML (e.g. configs/sweep/e_effect.yaml)")
    parser.add_argument("--fresh", action="store_true", help="delete the sweep's output directory first")
    parser.add_argument("overrides", nargs="*",
                        help="grid keys (seeds=[0,1] output_dir=... axes.beta=[0.1]) or base DemoConfig "
                        "overrides (model=tiny-random harmful_test=8 ...)")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.sweep import format_table, load_grid, run_sweep

    grid = load_grid(args.grid, args.overrides)
    if args.fresh:
        shutil.rmtree(grid.output_dir, ignore_errors=True)
    table = run_sweep(grid)
    print(format_table(table))
    print(f"{table['computed']} cell(s) computed, {table['skipped']} already finished; "
          f"wall time {table['wall_seconds']:.0f} s\ntable: {grid.output_dir}/sweep_summary.md")
    return 0
