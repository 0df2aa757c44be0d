"""``safealign eval CONFIG.yaml [key=value ...]``: run or resume a jailbreak evaluation."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="eval YAML (see configs/eval/); omit to use defaults")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. attacks=[direct,prefill]")
    parser.add_argument("--list", action="store_true", help="list the registered attacks and judges, then exit")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an earlier run's records and summary in output_dir, then start over")


def run(args: argparse.Namespace) -> int:
    from safealign.eval.registries import ATTACKS, BACKENDS, JUDGES

    if args.list:
        print(f"attacks:  {', '.join(ATTACKS.names())}")
        print(f"judges:   {', '.join(JUDGES.names())}")
        print(f"backends: {', '.join(BACKENDS.names())}")
        return 0
    from safealign.config import config_and_overrides, load_config
    from safealign.eval.config import EvalConfig
    from safealign.eval.pipeline import run_eval
    from safealign.eval.summary import format_table
    from safealign.report.models import identity_cells

    config = load_config(EvalConfig, *config_and_overrides(args.config, args.overrides))
    summary = run_eval(config, overwrite=args.overwrite)
    print(format_table(summary))
    if summary.model_identity:
        print("\nmodel: " + " | ".join(identity_cells(summary.model_identity)))
    if summary.defenses:
        cost = summary.cost
        print(f"\ndefenses: {' → '.join(d['name'] for d in summary.defenses)}; per answer: "
              f"{cost.get('generated_tokens', '-')} tokens generated, {cost.get('forward_passes', '-')} other passes, "
              f"{cost.get('seconds', '-')} s; {cost.get('defense_refusals', 0)} refused by a defense")
    print(f"\nrecords and summary in {config.output_dir}")
    return 0
