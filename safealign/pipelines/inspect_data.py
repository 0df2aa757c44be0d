"""Inspect a data file: detected format, parsed and dropped rows, a few examples (``safealign data inspect``).

With a tokenizer the examples are also rendered through its chat template, as training would see them.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Optional

from safealign.errors import UserError

SHOW_DROPS = 5


def inspect_data(path: str, *, format: str = "auto", columns: Optional[dict[str, str]] = None,
                 split: Optional[str] = None, harmful: Optional[bool] = None, tokenizer: Optional[str] = None,
                 examples: int = 3, limit: Optional[int] = None) -> dict[str, Any]:
    """A summary dict of ``path`` (a file or an HF dataset id): preference data, or a behaviors file."""
    # a column mapping is for preference data (behaviors files take none)
    if format == "behaviors" or (format == "auto" and not columns and _is_behaviors(path, split)):
        return _behaviors_summary(path, tokenizer, examples)
    return _preferences_summary(path, tokenizer, examples, format=format, columns=columns or {}, split=split,
                                harmful=harmful, limit=limit)


def _is_behaviors(path: str, split: Optional[str]) -> bool:
    """Whether the first row (at ``split``, as the preference reader would read it) is a behaviors or benchmark
    row and no preference format: ``prompt`` alone reads as a generic behaviors file, so PKU-SafeRLHF's
    ``prompt, response_0, ...`` would, though ``load_preferences`` detects its format."""
    from safealign.data.behaviors import behaviors_layout, benchmark_layout
    from safealign.data.formats import detect_format
    from safealign.data.sources import read_rows

    first = next(read_rows(path, split=split, limit=1), None)
    if first is None:
        return False
    record = first[1]
    if detect_format(set(record), record) is not None:
        return False
    keys = record.keys()
    return behaviors_layout(keys) is not None or benchmark_layout(keys, path) is not None


def _behaviors_summary(path: str, tokenizer: Optional[str], examples: int) -> dict[str, Any]:
    """A behaviors or benchmark file, read as ``safealign eval`` reads it (safealign.eval.benchmarks): harmful
    behaviors and, for benchmarks that have them, benign prompts; rows the layout leaves out, by reason."""
    from safealign.eval.benchmarks.loaders import read_benchmark

    bench = read_benchmark(path)
    behaviors = [*bench.harmful, *bench.benign]
    render = _renderer(tokenizer) if tokenizer else None  # after the data: a bad file is reported first
    categories = Counter(b.category or "(none)" for b in behaviors)
    skipped = sum(bench.skipped.values())
    return {
        "source": path,
        "format": "behaviors",
        "layout": bench.layout,
        "rows": len(behaviors) + skipped,
        "parsed": len(behaviors),
        "dropped": skipped,
        "skipped": dict(bench.skipped),
        "behaviors": len(bench.harmful),
        "benign": len(bench.benign),
        "contextual": sum(1 for b in behaviors if b.context),
        "categories": dict(categories.most_common()),
        "examples": [_behavior_example(b, render) for b in behaviors[:examples]],
    }


def _behavior_example(b: Any, render: Any) -> dict[str, Any]:
    from safealign.data.behaviors import behavior_prompt

    out = {"id": b.id, "category": b.category, "prompt": behavior_prompt(b)}
    if render is not None:
        out["rendered_prompt"] = render.render_prompt(({"role": "user", "content": out["prompt"]},))
    return out


def _preferences_summary(path: str, tokenizer: Optional[str], examples: int, **options: Any) -> dict[str, Any]:
    from safealign.data.formats import load_preferences

    result = load_preferences(path, **options)
    render = _renderer(tokenizer) if tokenizer else None
    return {
        "source": path,
        "format": result.format,
        "rows": result.rows,
        "parsed": len(result.items),
        "dropped": len(result.dropped),
        "drop_reasons": result.drop_counts(),
        "drops": [{"row": d.row, "field": d.field, "reason": d.reason} for d in result.dropped],
        "duplicates": len(duplicates := result.duplicates()),
        "duplicate_rows": [{"row": row, "same_as": first} for row, first in duplicates],
        "harmful": dict(Counter(str(item.harmful).lower() for item in result.items)),
        "examples": [_example(item, render) for item in result.items[:examples]],
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
    # a cross-prompt ("joint") pair's rejected response answers its own prompt (docs/loss-inputs.md)
    rejected_prompt = getattr(item, "rejected_prompt", None)
    if rejected_prompt is not None:
        out["rejected_prompt"] = list(rejected_prompt)
    if getattr(item, "chosen_scores", None) is not None:
        out["chosen_scores"] = list(item.chosen_scores)
    out.update(responses)
    if render is not None:
        out["rendered_prompt"] = render.render_prompt(item.prompt)
        prompts = {"rejected": rejected_prompt} if rejected_prompt is not None else {}
        out.update({f"rendered_{k}": render.render_response(prompts.get(k, item.prompt), v)
                    for k, v in responses.items()})
        if rejected_prompt is not None:
            out["rendered_rejected_prompt"] = render.render_prompt(rejected_prompt)
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


def format_inspection(summary: dict[str, Any]) -> str:
    """The summary as ``safealign data inspect`` prints it."""
    lines = [f"source:  {summary['source']}", f"format:  {summary['format']}",
             f"rows:    {summary['rows']}  parsed: {summary['parsed']}  dropped: {summary['dropped']}"
             + (f"  duplicates: {summary['duplicates']}" if "duplicates" in summary else "")]
    if summary["format"] == "behaviors":
        lines.append(f"layout:  {summary['layout']}  harmful behaviors: {summary['behaviors']}  "
                     f"benign prompts: {summary['benign']}  contextual: {summary['contextual']}")
        lines += [f"left out {count}: {reason}" for reason, count in summary["skipped"].items()]
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
