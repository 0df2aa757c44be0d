"""``safealign diagnose``: ranking accuracy, gradient entanglement and the anchor gap of a model on a data set.

The subcommands share the helpers below: the model/data arguments, loading and encoding, printing a
table or JSON, and writing ``RUN_DIR/diagnostics/<name>.json`` (a summary the HTML report embeds) plus
``RUN_DIR/diagnostics/<name>_pairs.jsonl`` (one row per pair) when ``--output-dir`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

SUBCOMMANDS = {
    "ranking": (
        "safealign.cli.diagnose_ranking",
        "ranking accuracy, idealized ranking accuracy, pair difficulty; share of mis-ranked pairs a model fixed",
    ),
    "entanglement": (
        "safealign.cli.diagnose_entanglement",
        "gradient entanglement of chosen and rejected log-probs per pair (arXiv 2410.13828)",
    ),
    "anchor": (
        "safealign.cli.diagnose_anchor",
        "anchor gap: how far a safety prefix moves the reference's log-probs on harmful pairs",
    ),
}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="model spec: smollm2-135m-instruct, tiny-random, hub id, folder, or a run's final/ adapter folder",
    )
    parser.add_argument(
        "--data", required=True, help="preference data: file (jsonl/json/csv/parquet, .gz) or HF dataset id"
    )
    parser.add_argument("--format", default="auto", help="auto, standard, conversational, implicit")
    parser.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN",
                        help="map a field to your column name (repeatable)")
    parser.add_argument("--split", default=None, help="split for HF dataset ids")
    parser.add_argument(
        "--harmful", action="store_true", default=None, help="mark rows without a harmful flag as harmful"
    )
    parser.add_argument("--limit", type=int, default=None, help="use the first N rows")
    parser.add_argument("--max-length", type=int, default=512, help="max prompt+response tokens (default 512)")
    parser.add_argument("--max-prompt-length", type=int, default=256, help="max prompt tokens (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass when scoring (default 8)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="positions per log-softmax chunk (default 1024)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--show", type=int, default=10, help="per-pair rows to print (default 10)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable dict instead of tables")
    parser.add_argument("--output-dir", default=None, metavar="RUN_DIR",
                        help="also write RUN_DIR/diagnostics/<name>.json (+ <name>_pairs.jsonl) for the HTML report")


@dataclass
class Inputs:
    model: Any
    tokenizer: Any
    pairs: list  # PreferencePair, in encoded order
    encoded: list  # EncodedPair, index = position in this list
    collate: Any
    rows: int
    dropped: int


def load_model(args: argparse.Namespace, spec: str | None = None):
    from safealign.models import load_model as load

    return load(spec or args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)


def load_inputs(args: argparse.Namespace, *, transform: Any = None, model: Any = None, tokenizer: Any = None) -> Inputs:
    """Load the model (unless given) and the data, and encode the pairs (reference view from ``transform``)."""
    import dataclasses

    from safealign.cli.data_inspect import parse_columns
    from safealign.data import PairEncoder, PreferenceCollator, load_preferences

    if model is None:
        model, tokenizer = load_model(args)
    parsed = load_preferences(args.data, format=args.format, columns=parse_columns(args.column) or None,
                              split=args.split, harmful=args.harmful, limit=args.limit)
    pairs = [p for p in parsed.items if hasattr(p, "chosen")]
    if not pairs:
        raise ValueError(
            f"{args.data}: no usable preference pairs ({len(parsed.dropped)} of {parsed.rows} rows dropped)"
        )
    encoder = PairEncoder(tokenizer, transform=transform, max_length=args.max_length,
                          max_prompt_length=args.max_prompt_length)
    encoded, report = encoder.encode_all(pairs)
    kept = [pairs[item.index] for item in encoded]  # encode_all drops too-long prompts
    encoded = [dataclasses.replace(item, index=i) for i, item in enumerate(encoded)]
    return Inputs(model, tokenizer, kept, encoded, PreferenceCollator(tokenizer.pad_token_id), parsed.rows,
                  len(parsed.dropped) + len(report.dropped))


def header(args: argparse.Namespace, inputs: Inputs, started: float, **extra: Any) -> dict[str, Any]:
    return {"model": args.model, "data": args.data, "limit": args.limit, "rows": inputs.rows,
            "pairs": len(inputs.encoded), "dropped": inputs.dropped, **extra,
            "wall_seconds": round(time.perf_counter() - started, 2)}


def emit(
    args: argparse.Namespace, name: str, result: dict[str, Any], pairs: Sequence[dict[str, Any]], text: str
) -> None:
    """Print ``text`` (or the JSON dict with its pairs) and write the run-directory files when asked."""
    if args.json:
        print(json.dumps({**result, "per_pair": list(pairs)}, indent=2, ensure_ascii=False))
    else:
        print(text)
    if args.output_dir:
        folder = Path(args.output_dir) / "diagnostics"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        (folder / f"{name}_pairs.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
        if not args.json:
            print(f"\nwrote {folder / (name + '.json')} and {name}_pairs.jsonl")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table; floats with 4 significant digits."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
