"""``safealign diagnose margin-split --a EVAL... --b EVAL...``: where variant a's extra refusal margin lands.

See :mod:`safealign.pipelines.margin_split`; each EVAL is an evaluation folder (a demo stage's
``eval/<stage>`` or a sweep cell's ``eval``), one per training seed, in the same seed order for both variants.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from safealign.cli.diagnose import add_paired_arguments

    add_paired_arguments(parser, "EVAL", "evaluation folders")
    parser.add_argument("--attack", default="direct", help="whose greedy outcome splits the prompts (default direct)")
    parser.add_argument("--resamples", type=int, default=2000,
                        help="bootstrap resamples where the seeds' groups differ (default 2000)")
    parser.add_argument("--open", action="store_true",
                        help="split the open margins (refusal_margin/margins_open.json: base answers cut at the token "
                        "limit scored without an end-of-turn) instead of the closed ones")
    parser.add_argument("--json", action="store_true", help="print a machine-readable dict")


def run(args: argparse.Namespace) -> int:
    from safealign.cli.diagnose import paired_names
    from safealign.pipelines.margin_split import format_split, split_margins

    names = paired_names(args)
    result = split_margins(args.a, args.b, attack=args.attack, resamples=args.resamples, open_figure=args.open)
    print(json.dumps(result, indent=2) if args.json else format_split(result, names))
    return 0
