"""Cost per answer of an evaluation: what a defense (or a bare model) spent to produce each answer.

Read back from the records, so a resumed run counts every answer once: for each attempt record (and the latest
over-refusal record of each of the run's benign prompts, :func:`safealign.eval.benign.benign_answers`; that file is
append-only) the generated tokens and non-generating forward passes of ``completion.meta.cost``
(:func:`safealign.eval.defenses.base.answer_cost`; a bare model's own tokens), the generation seconds,
and whether a defense answered with its own refusal. A bare model's numbers from the same run are the
denominator of a defense's cost multiple (docs/defenses.md).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from safealign.eval.defenses.base import answer_cost
from safealign.io.records import AttemptRecord


def _refused_by_defense(steps: Any) -> bool:
    return isinstance(steps, list) and any(isinstance(s, Mapping) and s.get("action") == "refuse" for s in steps)


def _row(meta: Mapping[str, Any], seconds: Any, steps: Any) -> tuple[int, int, float, bool]:
    tokens, passes = answer_cost({"meta": meta})
    return tokens, passes, float(seconds or 0.0), _refused_by_defense(steps)


def cost_summary(records: Iterable[AttemptRecord], benign: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """``{"answers", "generated_tokens", "forward_passes", "seconds", "defense_refusals"}``: means per answer
    over the answers that did not fail (a failed generation is not an answer), and the refusal count. ``benign``:
    one over-refusal record per answer (every line of that append-only file would count an answer again)."""
    rows = [_row(r.completion.get("meta") or {}, r.timings.get("generate_s"), r.defense)
            for r in records if r.error is None]  # fmt: skip
    rows += [_row({"cost": b.get("cost"), "tokens": b.get("tokens")}, b.get("seconds"), b.get("defense"))
             for b in benign if b.get("error") is None]  # fmt: skip
    n = len(rows)
    if not n:
        return {"answers": 0}
    return {
        "answers": n,
        "generated_tokens": round(sum(r[0] for r in rows) / n, 2),
        "forward_passes": round(sum(r[1] for r in rows) / n, 2),
        "seconds": round(sum(r[2] for r in rows) / n, 4),
        "defense_refusals": sum(r[3] for r in rows),
    }


def cost_multiple(cost: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, float | None]:
    """``cost`` over ``base`` per key (tokens, seconds): how many times the bare model's cost an answer takes."""
    out: dict[str, float | None] = {}
    for key in ("generated_tokens", "seconds"):
        a, b = cost.get(key), base.get(key)
        out[key] = round(a / b, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else None
    return out
