"""``safealign data import-completions COMPLETIONS.json --behaviors CSV --out DIR``
(:mod:`safealign.pipelines.harmbench_completions`)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("completions", help="HarmBench completions JSON (generate_completions.py or "
                                            "evaluate_completions.py output: behavior id -> [{test_case, generation, "
                                            "label?}])")  # fmt: skip
    parser.add_argument("--behaviors", required=True,
                        help="the behaviors file the completions answer (HarmBench CSV, or builtin:harmful)")
    parser.add_argument("--out", required=True, help="the evaluation directory to write (new)")
    parser.add_argument("--attack", default="harmbench", help="the attack name the records get (default harmbench)")
    parser.add_argument("--labels-as", default="harmbench_label",
                        help="the judge name HarmBench's own labels become, where the file has them")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.harmbench_completions import import_completions

    summary = import_completions(args.completions, args.behaviors, args.out, attack=args.attack,
                                 labels_as=args.labels_as)
    asr = (summary.get("attacks", {}).get(args.attack) or {}).get(args.labels_as)
    print(f"{summary['imported']} answers to {summary['behaviors']} behaviors imported into {args.out}"
          + (f"; ASR under HarmBench's labels {json.dumps(asr['asr'])} (n={asr['n']})" if asr else "")
          + f"; judge them with: safealign judge records {args.out} --judge NAME")
    return 0
