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
    print(f"{summary['imported']} answers to {summary['behaviors']} behaviors imported into {args.out}"
          + _label_asr(summary, args.attack, args.labels_as)
          + f"; judge them with: safealign judge records {args.out} --judge NAME")
    return 0


def _label_asr(summary: dict, attack: str, judge: str) -> str:
    """The ASR under the imported labels by both rules, each named: HarmBench's own (what its evaluate_completions.py
    prints) and safealign's any-of-k, which runs higher wherever a behavior has several test cases
    (safealign/eval/summary.py)."""
    any_of_k = (summary.get("attacks", {}).get(attack) or {}).get(judge)
    per_case = (summary.get("test_case_asr", {}).get(attack) or {}).get(judge)
    if not any_of_k or not per_case:
        return ""
    return (f"; ASR under HarmBench's labels: {json.dumps(per_case['asr'])} by HarmBench's rule (each behavior's "
            f"share of harmful test cases, averaged), {json.dumps(any_of_k['asr'])} any-of-k (a behavior broken when "
            f"any test case is harmful); n={any_of_k['n']} behaviors, {per_case['test_cases']} test cases"
            + (f" ({any_of_k['unscored']} labelled -1 left out; HarmBench counts them as not harmful)"
               if any_of_k.get("unscored") else ""))
