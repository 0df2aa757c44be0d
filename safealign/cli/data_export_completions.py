"""``safealign data export-completions RUN --out completions.json [--attack NAME]``
(:mod:`safealign.pipelines.harmbench_completions`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="an evaluation directory (records.jsonl)")
    parser.add_argument("--out", required=True, help="the HarmBench completions JSON to write")
    parser.add_argument("--attack", default=None, help="which attack's attempts (needed when the run has several)")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.harmbench_completions import export_completions

    done = export_completions(args.run, args.out, attack=args.attack)
    print(f"{done['completions']} completions of {done['behaviors']} behaviors ({done['attack']}) written to "
          f"{args.out}" + (f"; {done['failed']} failed generations left out" if done["failed"] else ""))
    return 0
