"""``safealign data inspect PATH``: detected format, parsed and dropped rows, a few examples
(:mod:`safealign.pipelines.inspect_data`)."""

from __future__ import annotations

import argparse
import json

from safealign.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="data file (jsonl/json/csv/parquet, .gz too) or HF dataset id")
    parser.add_argument(
        "--format", default="auto", help="auto, standard, conversational, implicit, unpaired, behaviors"
    )
    parser.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN",
                        help="map a field to your column name, e.g. --column prompt=question (repeatable)")
    parser.add_argument("--split", default=None, help="dataset split for HF dataset ids (default: train)")
    parser.add_argument(
        "--harmful", action="store_true", default=None, help="mark rows without a harmful flag as harmful"
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="render examples through this tokenizer's chat template ('tiny-random', hub id, dir)",
    )
    parser.add_argument("--examples", type=int, default=3, help="number of examples to show (default 3)")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many rows")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")


def run(args: argparse.Namespace) -> int:
    from safealign import checks
    from safealign.pipelines.inspect_data import format_inspection, inspect_data

    # -1 read no row ("cannot detect the data format") or showed all examples but the last
    checks.at_least("--limit", args.limit, 1, "the number of rows to read, from the first")
    checks.at_least("--examples", args.examples, 0)
    summary = inspect_data(args.path, format=args.format, columns=parse_columns(args.column), split=args.split,
                           harmful=args.harmful, tokenizer=args.tokenizer, examples=args.examples, limit=args.limit)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_inspection(summary))
    return 0


def parse_columns(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        field, sep, column = item.partition("=")
        if not sep or not field or not column:
            raise UserError(f"--column {item!r}: expected FIELD=COLUMN, e.g. --column prompt=question")
        mapping[field.strip()] = column.strip()
    return mapping
