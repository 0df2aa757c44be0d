"""``safealign defenses CONFIG.yaml [key=value ...]``: the bare model and each defense, evaluated alike."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="comparison YAML (configs/eval/defenses.yaml); omit for defaults")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. eval.generation.max_new_tokens=32")
    parser.add_argument("--list", action="store_true", help="list the registered defenses, then exit")
    parser.add_argument("--fresh", action="store_true",
                        help="delete an earlier comparison's outputs in output_dir and start over (by default a "
                        "re-run resumes it, and is refused when its settings differ)")


def run(args: argparse.Namespace) -> int:
    from safealign.eval.registries import DEFENSES

    if args.list:
        print(f"defenses: {', '.join(DEFENSES.names())}")
        return 0
    from pathlib import Path

    from safealign.config import config_and_overrides, load_config
    from safealign.pipelines.defenses import DefenseCompareConfig, format_comparison, run_defense_comparison

    config = load_config(DefenseCompareConfig, *config_and_overrides(args.config, args.overrides))
    print(format_comparison(run_defense_comparison(config, fresh=args.fresh)))
    print(f"\nreport: {Path(config.output_dir) / 'report.html'}")
    return 0
