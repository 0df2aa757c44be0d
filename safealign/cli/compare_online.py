"""``safealign compare-online [CONFIG.yaml] [key=value ...]``: online E-RLHF vs plain RLHF over seeds."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML (configs/online/e_vs_plain_cpu.yaml); optional")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. seeds=[0] 'train_overrides=[max_steps=5]'")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.online_compare import format_table, load_compare_config, run_online_compare

    config_path, overrides = args.config, list(args.overrides)
    if config_path and "=" in config_path:  # only overrides were given
        config_path, overrides = None, [config_path, *overrides]
    config = load_compare_config(config_path, overrides)
    table = run_online_compare(config)
    print(format_table(table))
    print(f"wall time {table['wall_seconds']:.0f} s; table: {config.output_dir}/online_compare.md")
    return 0
