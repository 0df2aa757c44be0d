"""``safealign data score DATA --model M [--model M2 ...] --out FILE``: aligned-model scores of every
chosen response, the ``chosen_scores`` column ``poft`` trains on (:mod:`safealign.pipelines.score_chosen`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="pair data (jsonl/json/csv/parquet, .gz too) or HF dataset id")
    parser.add_argument("--model", action="append", required=True, metavar="MODEL",
                        help="an aligned model to score with (load_model spec; repeat for K models)")
    parser.add_argument("--out", required=True, help="output JSONL: the parsed rows plus chosen_scores")
    parser.add_argument("--format", default="auto", help="auto or a pair format (safealign.data.formats)")
    parser.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN",
                        help="map a field to your column name, e.g. --column prompt=question (repeatable)")
    parser.add_argument("--split", default=None, help="dataset split for HF dataset ids (default: train)")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many rows")
    parser.add_argument("--max-length", type=int, default=512, help="as data.max_length of the training recipe")
    parser.add_argument("--max-prompt-length", type=int, default=256, help="as data.max_prompt_length")
    parser.add_argument("--batch-size", type=int, default=8)


def run(args: argparse.Namespace) -> int:
    from safealign.cli.data_inspect import parse_columns
    from safealign.pipelines.score_chosen import score_chosen_file

    report = score_chosen_file(args.path, args.model, args.out, format=args.format,
                               columns=parse_columns(args.column), split=args.split, limit=args.limit,
                               max_length=args.max_length, max_prompt_length=args.max_prompt_length,
                               batch_size=args.batch_size)
    print(report.describe())
    return 0
