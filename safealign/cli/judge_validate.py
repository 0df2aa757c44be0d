"""``safealign judge validate LABELS --judge NAME [key=value ...] [--json]``
(:mod:`safealign.pipelines.judge_validate`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from safealign.errors import UserError
from safealign.files import TextChanged, load_value, yaml_quoted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", help="HarmBench validation .json, JailbreakBench judge-comparison .csv, or .jsonl "
                        "(behavior, generation, label)")  # fmt: skip
    parser.add_argument("params", nargs="*", default=[], metavar="key=value",  # default: optional in usage errors
                        help="judge parameters, e.g. model=... format=...")
    # nargs="+": the judge's key=value parameters may follow its name (argparse cannot take positionals there).
    parser.add_argument("--judge", required=True, nargs="+", metavar=("NAME", "KEY=VALUE"),
                        help="a registered judge (refusal, classifier, llm, ...) and its parameters")
    parser.add_argument("--behaviors", default=None, help="behaviors CSV with the texts of a HarmBench val set")
    parser.add_argument("--disagreements", default=None,
                        help="where to write the disagreeing records (default: ./<labels>.<judge>.disagreements.jsonl)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the kappa interval")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars/lists (``batch_size=4``, ``custom=[a,b]``,
    ``threshold=5e-1``) by the config files' loader (safealign.files.load_value), which refuses a value YAML
    would change (`` #1`` a comment, ``Verdict: {answer}`` a mapping) rather than pass the judge other text."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"judge parameter {item!r}: expected key=value, e.g. model=cais/HarmBench-Llama-2-13b-cls")
        try:
            params[key.strip()] = load_value(value) if value else ""
        except yaml.YAMLError as exc:
            raise UserError(f"judge parameter {item!r}: cannot read the value: {exc}") from exc
        except TextChanged as exc:
            raise UserError(f"judge parameter {item!r}: {exc}; to keep the text as written, quote it: "
                            f'"{key}={yaml_quoted(value)}"') from None
    return params


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.judge_validate import format_validation, validate_judge

    judge, *params = args.judge
    summary = validate_judge(args.labels, judge, parse_params([*args.params, *params]), behaviors=args.behaviors,
                             disagreements=args.disagreements, n_boot=args.bootstrap, seed=args.seed)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_validation(summary))
    return 0
