"""``safealign diagnose eval-difference --a EVAL... --b EVAL...``: paired held-out differences over seeds.

See :mod:`safealign.pipelines.eval_difference`; each EVAL is an evaluation folder (a demo stage's ``eval/<stage>``
or a sweep cell's ``eval``), one per training seed, in the same seed order for both variants.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from safealign.cli.diagnose import add_paired_arguments

    add_paired_arguments(parser, "EVAL", "evaluation folders")
    parser.add_argument("--metrics", default=None, metavar="A,B", help="only these metrics, in this order")
    parser.add_argument("--resamples", type=int, default=2000,
                        help="unused (the interval is a t interval); kept for old command lines")
    parser.add_argument("--json", action="store_true", help="print a machine-readable dict")


def run(args: argparse.Namespace) -> int:
    from safealign.cli.diagnose import paired_names
    from safealign.pipelines.eval_difference import eval_difference, format_difference

    names = paired_names(args)
    result = eval_difference(args.a, args.b, metrics=args.metrics.split(",") if args.metrics else None,
                             resamples=args.resamples)
    print(json.dumps(result, indent=2) if args.json else format_difference(result, names))
    return 0
