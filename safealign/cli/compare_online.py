"""``safealign compare-online [CONFIG.yaml] [key=value ...]``: online E-RLHF vs plain RLHF over seeds."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safealign.pipelines.online_compare import OnlineCompareConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML (configs/online/e_vs_plain_cpu.yaml); optional")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="run N worker processes on this comparison (each claims the next unfinished "
                        "(variant, seed) run; one GPU each when GPUs are visible, else the CPU cores split between "
                        "them). Starting the plain command several times does the same (docs/online.md)")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. seeds=[0] 'train_overrides=[max_steps=5]'")


def run(args: argparse.Namespace) -> int:
    from safealign.errors import UserError
    from safealign.io.run_lock import worker_lock
    from safealign.pipelines.online_compare import load_compare_config

    if args.workers < 1:
        raise UserError(f"--workers: a number of worker processes, at least 1, got {args.workers}")
    config_path, overrides = args.config, list(args.overrides)
    if config_path and "=" in config_path:  # only overrides were given
        config_path, overrides = None, [config_path, *overrides]
    config = load_compare_config(config_path, overrides)
    with worker_lock(config.output_dir):  # the worker's (or launcher's) whole life: a --fresh there is refused
        return _work(args, config, config_path, overrides)


def _work(args: argparse.Namespace, config: OnlineCompareConfig, config_path: str | None, overrides: list[str]) -> int:
    """A worker's run of the comparison, or with ``--workers N`` the launcher's; the table printed once finished."""
    from safealign.pipelines.online_compare import check_compare_dir, format_table, run_online_compare

    if args.workers > 1:
        from pathlib import Path

        from safealign.pipelines.sweep_workers import run_workers

        check_compare_dir(config)  # every recipe checked once, here, not by every worker
        argv = ["compare-online", *([config_path] if config_path else []), *overrides]
        return run_workers(argv, config.output_dir, args.workers, table=Path(config.output_dir) / "online_compare.json",
                           show=format_table, verbose=args.verbose)
    result = run_online_compare(config)
    if result.table is None:
        from safealign.pipelines.sweep_workers import unfinished_message

        print(unfinished_message(result, "run", f"{config.output_dir}/online_compare.md"))
        return 0
    print(format_table(result.table))
    print(f"{result.computed} run(s) computed, {result.skipped} already finished; wall time "
          f"{result.table['wall_seconds']:.0f} s; table: {config.output_dir}/online_compare.md")
    return 0
