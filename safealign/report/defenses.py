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
    asr: dict[str, Metric | None]  # attack -> ASR by the table's judge (DefenseTable.judge)
    unjudged: tuple[str, ...]  # attacks this model ran that the table's judge did not score
    over_refusal: Metric | None
    over_refusal_judge: str  # the refusal detector of that rate ("" when not recorded)
    cost: dict[str, Any]
    tokens_multiple: float | None
    seconds_multiple: float | None


@dataclass(frozen=True)
class DefenseTable:
    """Every row's ASR is by one judge, ``judge``: the bare model's first (else the first model's), so that rows
    whose evaluations list their judges in another order are not compared across judges under one header."""

    attacks: list[str]
    judge: str | None
    rows: list[DefenseRow]


def _over_refusal(stage: Stage) -> tuple[Metric | None, str]:
    """The rate over all benign prompts and the refusal detector that judged it."""
    summary = stage.jailbreak_summary
    block = (summary.over_refusal or {}) if summary else {}
    rates = block.get("refusal_rate", {})
    if "all" in rates:
        return as_metric(rates["all"], "rate"), str(block.get("judge") or "")
    if stage.overrefusal and "all" in stage.overrefusal.refusal_rate:
        return as_metric(stage.overrefusal.refusal_rate["all"], "rate"), stage.overrefusal.judge
    return None, ""


def _ratio(a: Any, b: Any) -> float | None:
    ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0
    return a / b if ok else None


def _first_judge(summary: Any) -> str | None:
    return next(iter(summary.judges), None) or next((j for a in summary.attacks.values() for j in a), None)


def defense_rows(data: RunData) -> DefenseTable:
    """The table when some evaluated model ran behind a defense; no rows otherwise."""
    stages = [s for s in data.stages if s.jailbreak_summary is not None]
    if not any(s.jailbreak_summary.defenses for s in stages):
        return DefenseTable([], None, [])
    base = next((s for s in stages if not s.jailbreak_summary.defenses), None)
    base_cost = base.jailbreak_summary.cost if base else {}
    judge = _first_judge((base or stages[0]).jailbreak_summary)
    attacks = [a for a in dict.fromkeys(a for s in stages for a in s.jailbreak_summary.attacks) if a != "any_attack"]
    rows = []
    for stage in stages:
        summary = stage.jailbreak_summary
        asr = {a: as_metric(summary.attacks.get(a, {}).get(judge)) for a in attacks}
        unjudged = tuple(a for a in attacks if judge and a in summary.attacks and judge not in summary.attacks[a])
        names = " → ".join(str(d.get("name")) for d in summary.defenses) or "none (bare model)"
        rows.append(DefenseRow(stage.name, names, asr, unjudged, *_over_refusal(stage), summary.cost,
                               _ratio(summary.cost.get("generated_tokens"), base_cost.get("generated_tokens")),
                               _ratio(summary.cost.get("seconds"), base_cost.get("seconds"))))  # fmt: skip
    return DefenseTable(attacks, judge, rows)
