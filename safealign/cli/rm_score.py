"""``safealign rm score --model RM_DIR --data ROWS.jsonl --out SCORED.jsonl``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a folder written by a 'trainer: reward' recipe (its final/)")
    parser.add_argument("--data", required=True, help="JSONL rows with 'prompt' (text or messages) and 'response'")
    parser.add_argument("--out", required=True, help="where to write the rows with a 'score' field added")
    parser.add_argument("--batch-size", type=int, default=8)


def run(args: argparse.Namespace) -> int:
    from safealign.online.score_file import score_file

    n, kind = score_file(args.model, args.data, args.out, batch_size=args.batch_size)
    print(f"scored {n} rows with a {kind} model -> {args.out}")
    return 0
