"""The defense comparison of a report: per evaluated model (bare or behind defenses), ASR, over-refusal and
cost per answer with its multiple of the bare model's, measured in the same run (docs/defenses.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from safealign.report.load import RunData, Stage
from safealign.report.results import Metric, as_metric

COST_NOTE = ("Cost per answer: tokens generated for it (every candidate, copy and lookahead included), and its share "
             "of the generation wall time; × base = that cost over the bare model's in the same run. Defense "
             "refusals = answers a filter gave itself without running the model.")  # fmt: skip


@dataclass(frozen=True)
class DefenseRow:
    name: str
    defenses: str
    asr: dict[str, Metric | None]  # attack -> ASR by the first judge
    over_refusal: Metric | None
    cost: dict[str, Any]
    tokens_multiple: float | None
    seconds_multiple: float | None


def _over_refusal(stage: Stage) -> Metric | None:
    summary = stage.jailbreak_summary
    rates = (summary.over_refusal or {}).get("refusal_rate", {}) if summary else {}
    if "all" in rates:
        return as_metric(rates["all"], "rate")
    if stage.overrefusal and "all" in stage.overrefusal.refusal_rate:
        return as_metric(stage.overrefusal.refusal_rate["all"], "rate")
    return None


def _ratio(a: Any, b: Any) -> float | None:
    ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0
    return a / b if ok else None


def defense_rows(data: RunData) -> tuple[list[str], list[DefenseRow]]:
    """``(attacks, rows)`` when some evaluated model ran behind a defense; ``([], [])`` otherwise."""
    stages = [s for s in data.stages if s.jailbreak_summary is not None]
    if not any(s.jailbreak_summary.defenses for s in stages):
        return [], []
    base = next((s for s in stages if not s.jailbreak_summary.defenses), None)
    base_cost = base.jailbreak_summary.cost if base else {}
    attacks = [a for a in dict.fromkeys(a for s in stages for a in s.jailbreak_summary.attacks) if a != "any_attack"]
    rows = []
    for stage in stages:
        summary = stage.jailbreak_summary
        judge = next(iter(summary.judges), None) or next((j for a in summary.attacks.values() for j in a), None)
        asr = {a: as_metric(summary.attacks.get(a, {}).get(judge)) for a in attacks}
        names = " → ".join(str(d.get("name")) for d in summary.defenses) or "none (bare model)"
        rows.append(DefenseRow(stage.name, names, asr, _over_refusal(stage), summary.cost,
                               _ratio(summary.cost.get("generated_tokens"), base_cost.get("generated_tokens")),
                               _ratio(summary.cost.get("seconds"), base_cost.get("seconds"))))  # fmt: skip
    return attacks, rows
