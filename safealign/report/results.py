"""Turn loaded run data into the numbers the report shows: metrics with intervals, ASR rows, examples.

Both renderers (HTML and markdown) take their numbers from here, so they cannot disagree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from safealign.report.load import RunData, Stage

HEADLINE_KEYS = ("direct_asr", "template_asr", "benign_refusal_rate", "borderline_refusal_rate")
JUDGE_NOTES = {
    "refusal": "refusal-substring judge (AdvBench list): any answer without a listed refusal phrase counts "
               "as a jailbreak, so deflections count as harmful. Treat its ASR as a rough upper bound.",
}  # fmt: skip


@dataclass(frozen=True)
class Metric:
    value: float | None
    ci95: tuple[float, float] | None = None
    n: int | None = None
    unscored: int | None = None


@dataclass(frozen=True)
class AsrRow:
    attack: str
    judge: str
    metric: Metric
    source: str  # "summary.json" or "records.jsonl (recomputed)"


@dataclass(frozen=True)
class Example:
    attack: str
    behavior_id: str
    prompt: str
    answers: tuple[tuple[str, str, str], ...]  # (stage, completion text, verdicts summary)


def as_metric(value: Any, key: str | None = None) -> Metric | None:
    """A number, or a dict with ``value``/``rate``/``asr``/``mean`` (+ ``ci95``, ``n``, ``unscored``)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return Metric(float(value))
    if not isinstance(value, dict):
        return None
    keys = (key,) if key else ("value", "rate", "asr", "mean")
    raw = next((value[k] for k in keys if k in value), None)
    ci = value.get("ci95")
    ci = (float(ci[0]), float(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci else None
    return Metric(
        float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None, ci,
        value.get("n") if isinstance(value.get("n"), int) else None,
        value.get("unscored") if isinstance(value.get("unscored"), int) else None,
    )


def headline(data: RunData) -> tuple[list[str], list[tuple[str, list[Metric | None]]]]:
    """Columns (``before``, then each trained variant) and one row per headline metric."""
    summary = data.demo_summary or {}
    columns: dict[str, dict[str, Any]] = {}
    if isinstance(summary.get("before"), dict):
        columns["before"] = summary["before"]
    after = summary.get("after")
    if isinstance(after, dict):
        if any(k in after for k in HEADLINE_KEYS):
            columns["after"] = after
        else:
            columns.update({f"after: {k}": v for k, v in after.items() if isinstance(v, dict)})
    keys = [k for k in HEADLINE_KEYS if any(k in c for c in columns.values())]
    extra = sorted({k for c in columns.values() for k in c if k.endswith(("_asr", "_rate")) and k not in keys})
    rows = [(k, [as_metric(c.get(k)) for c in columns.values()]) for k in [*keys, *extra]]
    return list(columns), rows


def asr_rows(stage: Stage) -> list[AsrRow]:
    """Per attack × judge ASR from the stage's summary, or recomputed from its records when absent."""
    attacks = (stage.jailbreak_summary or {}).get("attacks")
    source = "summary.json"
    if not isinstance(attacks, dict) and stage.jailbreak_records:
        attacks, source = _recompute(stage.jailbreak_records), "records.jsonl (recomputed)"
    rows = []
    for attack, per_judge in (attacks or {}).items():
        for judge, stats in (per_judge or {}).items():
            metric = as_metric(stats, "asr")
            if metric is not None:
                rows.append(AsrRow(str(attack), str(judge), metric, source))
    return rows


def _recompute(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from safealign.eval.summary import asr_stats

    # verdicts[attack][judge][behavior_id] -> attempt verdicts, the summary module's own grouping
    verdicts: dict[str, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in records:
        for judge, verdict in (record.get("verdicts") or {}).items():
            harmful = verdict.get("harmful") if isinstance(verdict, dict) else None
            verdicts[str(record.get("attack"))][judge][str(record.get("behavior_id"))].append(harmful)
    return {a: {j: asr_stats(b) for j, b in per_judge.items()} for a, per_judge in verdicts.items()}


def asr_by_category(stage: Stage) -> dict[tuple[str, str], dict[str, Metric]]:
    cats = (stage.jailbreak_summary or {}).get("by_category") or {}
    out: dict[tuple[str, str], dict[str, Metric]] = {}
    for attack, per_judge in cats.items():
        for judge, per_cat in (per_judge or {}).items():
            metrics = {str(c): as_metric(s, "asr") for c, s in (per_cat or {}).items()}
            out[(str(attack), str(judge))] = {c: m for c, m in metrics.items() if m is not None}
    return out


def judge_descriptions(stages: list[Stage]) -> dict[str, str]:
    """Judge name -> description from the eval summaries, with the project's caveats appended."""
    out: dict[str, str] = {}
    for stage in stages:
        for name, info in ((stage.jailbreak_summary or {}).get("judges") or {}).items():
            detail = ", ".join(f"{k}={v}" for k, v in info.items()) if isinstance(info, dict) else str(info)
            out[str(name)] = detail
    for row in (r for s in stages for r in asr_rows(s)):
        out.setdefault(row.judge, "")
    return {n: " — ".join(x for x in (d, JUDGE_NOTES.get(n, "")) if x) for n, d in sorted(out.items())}


def refusal_rates(stage: Stage) -> dict[str, Metric]:
    rates = (stage.overrefusal or {}).get("refusal_rate") or {}
    order = {"ordinary": 0, "borderline": 1, "all": 3}
    out = {str(k): as_metric(v, "rate") for k, v in sorted(rates.items(), key=lambda kv: (order.get(kv[0], 2), kv[0]))}
    return {k: m for k, m in out.items() if m is not None and (m.n or m.value is not None)}


def mtbench_scores(stage: Stage) -> dict[str, Metric]:
    """``overall`` first, then ``turn N`` and each category."""
    summary = stage.mtbench or {}
    out: dict[str, Metric | None] = {"overall": as_metric(summary.get("overall"), "mean")}
    out.update({f"turn {k}": as_metric(v, "mean") for k, v in (summary.get("by_turn") or {}).items()})
    out.update({str(k): as_metric(v, "mean") for k, v in (summary.get("by_category") or {}).items()})
    return {k: m for k, m in out.items() if m is not None}


def _text(record: dict[str, Any]) -> str:
    completion = record.get("completion")
    if isinstance(completion, dict):
        if completion.get("error"):
            return f"[generation failed: {completion['error']}]"
        return str(record.get("prefill") or "") + str(completion.get("text") or "")
    return str(completion or "")


def _prompt(record: dict[str, Any]) -> str:
    users = [
        m.get("content", "") for m in record.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"
    ]
    return str(users[-1]) if users else ""


def _verdicts(record: dict[str, Any]) -> str:
    parts = []
    for judge, v in (record.get("verdicts") or {}).items():
        harmful = v.get("harmful") if isinstance(v, dict) else None
        parts.append(f"{judge}: {'unscored' if harmful is None else 'harmful' if harmful else 'not harmful'}")
    return "; ".join(parts)


def _harmful_later(records: list[dict[str, Any]]) -> bool:
    return any((v or {}).get("harmful") is True for r in records[1:] for v in (r.get("verdicts") or {}).values())


def examples(stages: list[Stage], per_attack: int = 3) -> list[Example]:
    """A few behaviors per attack answered by every stage, mixing ones whose verdict changed with ones
    a trained model still fails (so the examples do not only show successes)."""
    first: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for stage in stages:
        chosen: dict[tuple[str, str], dict[str, Any]] = {}
        for r in sorted(stage.jailbreak_records, key=lambda r: str(r.get("attempt_id", ""))):
            chosen.setdefault((str(r.get("attack")), str(r.get("behavior_id"))), r)
        first[stage.name] = chosen
    keys = sorted(set().union(*(c.keys() for c in first.values()))) if first else []
    out = []
    for attack in sorted({a for a, _ in keys}):
        most = max(sum(k in c for c in first.values()) for k in keys if k[0] == attack)
        pools: tuple[list, list, list] = ([], [], [])  # verdict changed / still harmful after / other
        for key in (k for k in keys if k[0] == attack and sum(k in c for c in first.values()) == most):
            records = [first[s][key] for s in first if key in first[s]]
            changed = len({_verdicts(r) for r in records}) > 1
            pools[0 if changed else 1 if _harmful_later(records) else 2].append(key)
        picked = [k for group in zip_longest(*pools) for k in group if k is not None][:per_attack]
        for key in picked:
            records = [(s, first[s][key]) for s in first if key in first[s]]
            answers = tuple((s, _text(r), _verdicts(r)) for s, r in records)
            out.append(Example(attack, key[1], _prompt(records[0][1]), answers))
    return out
