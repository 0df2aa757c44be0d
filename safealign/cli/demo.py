"""``safealign demo``: end to end on the embedded model (see safealign/pipelines/demo.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="runs/demo", help="run directory (re-running resumes it)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="load_model spec of the model to align")
    parser.add_argument("--compare", default=None, metavar="dpo,e-dpo",
                        help="train several methods from the same pairs and report each against the baseline: dpo, "
                        "e-dpo, safedpo, deep-aug, constrained-sft, derta, ... (docs/safety-training.md); default "
                        "dpo,e-dpo (E-DPO with its paired difference against DPO)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the earlier run's outputs first, once the settings are checked (other files in "
                        "the directory are kept; refused while a live process holds a lock there)")
    parser.add_argument("overrides", nargs="*",
                        help="DemoConfig overrides, e.g. harmful_test=80 train.learning_rate=1e-3 "
                        "eval.generation.max_new_tokens=64; earlier flat keys (nll_weight=0 beta=0.5 ...) still work")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.demo import format_summary, run_demo
    from safealign.pipelines.demo_config import load_demo_config

    overrides = [f"output_dir={args.output_dir}", f"model={args.model}", *args.overrides]
    if args.compare:
        overrides.append(f"variants=[{args.compare}]")
    config = load_demo_config(overrides)
    if args.fresh:
        from safealign.io.run_lock import delete_run_dir
        from safealign.pipelines.demo import OUTPUTS, check_before_loading

        check_before_loading(config)  # a misspelt variant or a bad setting deletes nothing
        delete_run_dir(config.output_dir, "--fresh", outputs=OUTPUTS)  # the demo's outputs only
    summary = run_demo(config)
    print(format_summary(summary))
    print(f"judge: {summary.judge}; objective: {summary.objective}")
    print(f"wall time: {summary.wall_seconds:.0f} s\nreport: {Path(config.output_dir) / 'report.html'}")
    return 0
