"""``safealign data select DATA --method real --model M --out FILE``: keep the pairs whose responses differ
most, before any training (REAL; :mod:`safealign.pipelines.select_real`, docs/seed-methods.md)."""

from __future__ import annotations

import argparse

METHODS = ("real",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="pair data (jsonl/json/csv/parquet, .gz too) or HF dataset id")
    parser.add_argument("--method", choices=METHODS, default="real", help="selection method (default real)")
    parser.add_argument("--model", required=True, help="the model whose last hidden layer embeds responses")
    parser.add_argument("--out", required=True, help="output JSONL: the kept rows plus real_similarity")
    parser.add_argument("--fraction", type=float, default=0.5, help="share of pairs kept (default 0.5)")
    parser.add_argument("--keep", choices=("easy", "hard", "random"), default="easy",
                        help="easy: the most dissimilar pairs (REAL); hard: the most similar; random: a baseline")
    parser.add_argument("--seed", type=int, default=0, help="seed of --keep random")
    parser.add_argument("--format", default="auto", help="auto or a pair format (safealign.data.formats)")
    parser.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN",
                        help="map a field to your column name, e.g. --column prompt=question (repeatable)")
    parser.add_argument("--split", default=None, help="dataset split for HF dataset ids (default: train)")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many rows")
    parser.add_argument("--max-length", type=int, default=512, help="tokens of a response that are embedded")
    parser.add_argument("--batch-size", type=int, default=8)


def run(args: argparse.Namespace) -> int:
    from safealign.cli.data_inspect import parse_columns
    from safealign.pipelines.select_real import select_real_file

    report = select_real_file(args.path, args.model, args.out, fraction=args.fraction, keep=args.keep,
                              seed=args.seed, format=args.format, columns=parse_columns(args.column),
                              split=args.split, limit=args.limit, max_length=args.max_length,
                              batch_size=args.batch_size)
    print(report.describe())
    return 0
