"""``safealign data inspect PATH``: detected format, parsed and dropped rows, a few examples."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from safealign.errors import UserError

SHOW_DROPS = 5


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
    if args.format == "behaviors" or (args.format == "auto" and _is_behaviors(args.path)):
        summary = _behaviors_summary(args)
    else:
        summary = _preferences_summary(args)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else _text(summary))
    return 0


def parse_columns(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        field, sep, column = item.partition("=")
        if not sep or not field or not column:
            raise UserError(f"--column {item!r}: expected FIELD=COLUMN, e.g. --column prompt=question")
        mapping[field.strip()] = column.strip()
    return mapping


def _is_behaviors(path: str) -> bool:
    from safealign.data.behaviors import behaviors_layout
    from safealign.data.sources import read_rows

    first = next(read_rows(path, limit=1), None)
    return first is not None and behaviors_layout(first[1].keys()) is not None


def _behaviors_summary(args: argparse.Namespace) -> dict[str, Any]:
    from safealign.data.behaviors import load_behaviors

    behaviors = load_behaviors(args.path)
    render = _renderer(args.tokenizer) if args.tokenizer else None
    categories = Counter(b.category or "(none)" for b in behaviors)
    return {
        "source": args.path,
        "format": "behaviors",
        "rows": len(behaviors),
        "parsed": len(behaviors),
        "dropped": 0,
        "drops": [],
        "behaviors": len(behaviors),
        "contextual": sum(1 for b in behaviors if b.context),
        "categories": dict(categories.most_common()),
        "examples": [_behavior_example(b, render) for b in behaviors[: args.examples]],
    }


def _behavior_example(b: Any, render: Any) -> dict[str, Any]:
    from safealign.data.behaviors import behavior_prompt

    out = {"id": b.id, "category": b.category, "prompt": behavior_prompt(b)}
    if render is not None:
        out["rendered_prompt"] = render.render_prompt(({"role": "user", "content": out["prompt"]},))
    return out


def _preferences_summary(args: argparse.Namespace) -> dict[str, Any]:
    from safealign.data.formats import load_preferences

    result = load_preferences(
        args.path, format=args.format, columns=parse_columns(args.column), split=args.split,
        harmful=args.harmful, limit=args.limit,
    )
    render = _renderer(args.tokenizer) if args.tokenizer else None
    return {
        "source": args.path,
        "format": result.format,
        "rows": result.rows,
        "parsed": len(result.items),
        "dropped": len(result.dropped),
        "drop_reasons": result.drop_counts(),
        "drops": [{"row": d.row, "field": d.field, "reason": d.reason} for d in result.dropped],
        "harmful": dict(Counter(str(item.harmful).lower() for item in result.items)),
        "examples": [_example(item, render) for item in result.items[: args.examples]],
    }


def _example(item: Any, render: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"row": item.row, "harmful": item.harmful, "prompt": list(item.prompt)}
    responses = (
        {"completion": item.completion}
        if hasattr(item, "completion")
        else {"chosen": item.chosen, "rejected": item.rejected}
    )
    if hasattr(item, "label"):
        out["label"] = item.label
    out.update(responses)
    if render is not None:
        out["rendered_prompt"] = render.render_prompt(item.prompt)
        out.update({f"rendered_{k}": render.render_response(item.prompt, v) for k, v in responses.items()})
    return out


def _renderer(spec: str) -> Any:
    from safealign.data.tokenize import PairEncoder

    if spec == "tiny-random":
        from safealign.models.tiny import tiny_tokenizer

        tokenizer = tiny_tokenizer()
    else:
        try:
            from safealign.models import load_tokenizer

            tokenizer = load_tokenizer(spec)
        except (ImportError, OSError) as exc:  # a missing module, or a hub/dir that does not resolve
            raise UserError(f"--tokenizer {spec}: cannot load the tokenizer: {exc}") from exc
    return PairEncoder(tokenizer)


def _text(summary: dict[str, Any]) -> str:
    lines = [f"source:  {summary['source']}", f"format:  {summary['format']}",
             f"rows:    {summary['rows']}  parsed: {summary['parsed']}  dropped: {summary['dropped']}"]
    if summary["format"] == "behaviors":
        lines.append(f"contextual behaviors: {summary['contextual']}")
        lines += ["categories:"] + [f"  {n:5d}  {c}" for c, n in summary["categories"].items()]
    for reason, count in summary.get("drop_reasons", {}).items():
        rows = [str(d["row"]) for d in summary["drops"] if f"{d['field']}: {d['reason']}" == reason]
        more = f", … ({len(rows) - SHOW_DROPS} more)" if len(rows) > SHOW_DROPS else ""
        lines.append(f"dropped {count}: {reason} (rows {', '.join(rows[:SHOW_DROPS])}{more})")
    for i, example in enumerate(summary["examples"]):
        lines.append(f"--- example {i + 1}")
        lines += [f"{k}: {_short(v)}" for k, v in example.items()]
    return "\n".join(lines)


def _short(value: Any, width: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width] + "…"
