"""``safealign diagnose paired-margin --a RANKING... --b RANKING... [--data PAIRS]``: paired margin comparison.

See :mod:`safealign.pipelines.paired_margin`; each RANKING is a ``diagnose ranking --output-dir`` run
directory, its ``ranking_pairs.jsonl``, or a saved ``diagnose ranking --json`` output.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from safealign.cli.diagnose import add_paired_arguments

    add_paired_arguments(parser, "RANKING", "ranking outputs")
    parser.add_argument("--data", default=None,
                        help="the pairs file the rankings scored: compare harmful and benign pairs separately, by the "
                             "harmful flag each ranking recorded per pair (outputs of older versions: this file's)")
    parser.add_argument("--format", default="auto", help="format of --data, for outputs of older versions (default "
                                                         "auto)")
    parser.add_argument("--resamples", type=int, default=2000,
                        help="bootstrap resamples, for one seed (several get a t interval; default 2000)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable dict")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.paired_margin import PairedMarginConfig, compare_margins, format_margins

    config = PairedMarginConfig(a=args.a, b=args.b, names=args.names.split(","), data=args.data,
                                format=args.format, resamples=args.resamples)
    result = compare_margins(config)
    print(json.dumps(result, indent=2) if args.json else format_margins(result))
    return 0
