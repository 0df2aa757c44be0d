"""Turn loaded run data into the numbers the report shows: metrics with intervals, ASR rows, examples.

Both renderers (HTML and markdown) take their numbers from here, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from safealign.eval.summary import recompute_attacks
from safealign.io.records import AsrStats, AttemptRecord
from safealign.io.summaries import Figure, RateStats, ScoreStats, is_rate
from safealign.report.load import RunData, Stage

HEADLINE_KEYS = ("direct_asr", "template_asr", "benign_refusal_rate", "borderline_refusal_rate")
# the units of the demo's figures that are not rates (shown after the rates, as the numbers they are)
UNITS = {"heldout_refusal_margin": "nats", "heldout_refusal_margin_open": "nats",
         "retention_of_base_answers": "nats/token", "retention_of_own_answers": "nats/token"}  # fmt: skip
JUDGE_NOTES = {
    "refusal": "refusal-substring judge (AdvBench list): any answer without a listed refusal phrase counts "
               "as a jailbreak and any with one as a refusal, so deflections count as harmful and complying "
               "answers that say \"As an\" or \"illegal\" as not. It errs both ways (FPR 0.414, FNR 0.207 on "
               "HarmBench's validation set): its ASR is no bound.",
}  # fmt: skip
# above the answers of an example whose stages were sent different prompts
OWN_PROMPTS = "Each model was sent its own prompt (the attack built one against each): shown with its answer."


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
class Answer:
    """One stage's answer to an example. ``prefill`` is the attack's text the model was made to continue: shown
    apart from ``text`` (the model's own continuation, or the generation error), so that an attack's "Sure, here
    is" never reads as the model's words. ``prompt``: the prompt this stage was sent, where the stages were sent
    different ones (a search attack builds one against each model); None where the example's shared one holds."""

    stage: str
    text: str
    verdicts: str
    prefill: str = ""
    prompt: str | None = None


@dataclass(frozen=True)
class Example:
    attack: str
    behavior_id: str
    prompt: str | None  # None: the stages were sent different prompts, each answer carries its own
    answers: tuple[Answer, ...]


def as_metric(value: Any, key: str | None = None) -> Metric | None:
    """A number, a typed stats record (:mod:`safealign.io.summaries`), or a dict with
    ``value``/``rate``/``asr``/``mean`` (+ ``ci95``, ``n``, ``unscored``)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return Metric(float(value))
    if isinstance(value, (AsrStats, Figure, RateStats, ScoreStats)):
        value = value.to_json() | {"value": value.value}
        key = "value"
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
    """Columns (``before``, then each trained variant) and one row per headline metric: the rates, then the
    figures in their own units (the held-out refusal margin, answer retention: :data:`UNITS`)."""
    columns = data.demo_summary.columns() if data.demo_summary else {}
    keys = [k for k in HEADLINE_KEYS if any(k in c for c in columns.values())]
    extra = sorted({k for c in columns.values() for k in c if is_rate(k) and k not in keys})
    numbers = sorted({k for c in columns.values() for k in c if not is_rate(k)})
    rows = [(k, [as_metric(c.get(k)) for c in columns.values()]) for k in [*keys, *extra, *numbers]]
    return list(columns), rows


def asr_rows(stage: Stage) -> list[AsrRow]:
    """Per attack × judge ASR from the stage's summary, or recomputed from its records when absent (or written under
    the older rule: :attr:`Stage.recomputed`)."""
    attacks = stage.jailbreak_summary.attacks if stage.jailbreak_summary else None
    source = "records.jsonl (recomputed)" if stage.recomputed else "summary.json"
    if not attacks and stage.jailbreak_records:
        attacks, source = recompute_attacks(stage.jailbreak_records), "records.jsonl (recomputed)"
    rows = []
    for attack, per_judge in (attacks or {}).items():
        for judge, stats in (per_judge or {}).items():
            metric = as_metric(stats, "asr")
            if metric is not None:
                rows.append(AsrRow(str(attack), str(judge), metric, source))
    return rows


def asr_by_category(stage: Stage) -> dict[tuple[str, str], dict[str, Metric]]:
    cats = stage.jailbreak_summary.by_category if stage.jailbreak_summary else {}
    out: dict[tuple[str, str], dict[str, Metric]] = {}
    for attack, per_judge in cats.items():
        for judge, per_cat in (per_judge or {}).items():
            metrics = {str(c): as_metric(s, "asr") for c, s in (per_cat or {}).items()}
            out[(str(attack), str(judge))] = {c: m for c, m in metrics.items() if m is not None}
    return out


def judge_descriptions(stages: list[Stage]) -> dict[str, str]:
    """Judge name -> description from the eval summaries, with the project's caveats appended. Stages that
    describe a judge of one name differently (another refusal list, another model) each keep theirs: every
    distinct description is given with the stages that used it."""
    out: dict[str, dict[str, list[str]]] = {}
    for stage in stages:
        for name, info in (stage.jailbreak_summary.judges if stage.jailbreak_summary else {}).items():
            detail = ", ".join(f"{k}={v}" for k, v in info.items()) if isinstance(info, dict) else str(info)
            out.setdefault(str(name), {}).setdefault(detail, []).append(stage.name)
    for row in (r for s in stages for r in asr_rows(s)):
        out.setdefault(row.judge, {})
    return {n: " — ".join(x for x in (_described(d), JUDGE_NOTES.get(n, "")) if x) for n, d in sorted(out.items())}


def _described(by_detail: dict[str, list[str]]) -> str:
    """One description as it is; several, each followed by the stages that recorded it."""
    if len(by_detail) < 2:
        return next(iter(by_detail), "")
    return "; ".join(f"{d or 'no description recorded'} ({', '.join(s)})" for d, s in by_detail.items())


def refusal_rates(stage: Stage) -> dict[str, Metric]:
    rates = stage.overrefusal.refusal_rate if stage.overrefusal else {}
    order = {"ordinary": 0, "borderline": 1, "all": 3}
    out = {str(k): as_metric(v, "rate") for k, v in sorted(rates.items(), key=lambda kv: (order.get(kv[0], 2), kv[0]))}
    return {k: m for k, m in out.items() if m is not None and (m.n or m.value is not None)}


def mtbench_scores(stage: Stage) -> dict[str, Metric]:
    """``overall`` first, then ``turn N`` and each category."""
    if stage.mtbench is None:
        return {}
    out: dict[str, Metric | None] = {"overall": as_metric(stage.mtbench.overall)}
    out.update({f"turn {k}": as_metric(v) for k, v in stage.mtbench.by_turn.items()})
    out.update({str(k): as_metric(v) for k, v in stage.mtbench.by_category.items()})
    return {k: m for k, m in out.items() if m is not None}


def _text(record: AttemptRecord) -> str:
    """The model's own text (not ``record.answer``, which starts with the attack's prefill)."""
    return f"[generation failed: {record.error}]" if record.error else str(record.completion.get("text") or "")


def _verdicts(record: AttemptRecord) -> str:
    labels = {True: "harmful", False: "not harmful", None: "unscored"}
    return "; ".join(f"{judge}: {labels[record.harmful(judge)]}" for judge in record.verdicts)


def _harmful_later(records: list[AttemptRecord]) -> bool:
    return any(r.harmful(judge) is True for r in records[1:] for judge in r.verdicts)


def examples(stages: list[Stage], per_attack: int = 3) -> list[Example]:
    """A few behaviors per attack answered by every stage, mixing ones whose verdict changed with ones
    a trained model still fails (so the examples do not only show successes)."""
    first: dict[str, dict[tuple[str, str], AttemptRecord]] = {}
    for stage in stages:
        chosen: dict[tuple[str, str], AttemptRecord] = {}
        for r in sorted(stage.jailbreak_records, key=lambda r: r.attempt_id):
            chosen.setdefault((r.attack, r.behavior_id), r)
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
            out.append(_example(attack, key[1], [(s, first[s][key]) for s in first if key in first[s]]))
    return out


def _example(attack: str, behavior_id: str, records: list[tuple[str, AttemptRecord]]) -> Example:
    """One prompt above the answers when every stage was sent the same; else each answer under its own."""
    shared = len({r.prompt for _, r in records}) == 1
    answers = tuple(Answer(s, _text(r), _verdicts(r), str(r.prefill or ""), None if shared else r.prompt)
                    for s, r in records)
    return Example(attack, behavior_id, records[0][1].prompt if shared else None, answers)
