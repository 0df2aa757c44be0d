"""``safealign models fetch [NAME] [--force]``: put a built-in model in the cache and print its path."""

from __future__ import annotations

import argparse

from safealign.models.embedded import BUILTIN_MODELS, DEFAULT_MODEL, ensure_embedded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=sorted(BUILTIN_MODELS),
                        help=f"built-in model name (default: {DEFAULT_MODEL})")
    parser.add_argument("--force", action="store_true", help="fetch and convert again even when cached")


def run(args: argparse.Namespace) -> int:
    print(ensure_embedded(args.name, force=args.force))
    return 0
