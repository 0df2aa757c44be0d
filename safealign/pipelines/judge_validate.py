"""Validate a judge against human labels (``safealign judge validate``): agreement, κ, FPR, FNR,
precision, recall and F1 with 95% intervals, overall and per category / attack method, and the records
where the judge and the humans disagree written to a JSONL file (docs/judges.md)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from safealign.eval.judges.agreement import agreement_report
from safealign.eval.judges.base import Judge, build_judge
from safealign.eval.judges.labels import LabeledGeneration, load_labels
from safealign.types import Completion, Verdict

GROUPS = ("category", "method")


def validate_judge(labels: str | Path, judge: str, params: Optional[dict[str, Any]] = None, *,
                   behaviors: str | Path | None = None, disagreements: str | Path | None = None,
                   n_boot: int = 1000, seed: int = 0, judge_obj: Optional[Judge] = None) -> dict[str, Any]:  # fmt: skip
    """Score every labelled generation with ``judge`` and compare with the human label.

    ``judge_obj`` replaces building ``judge`` from the registry (tests, or a judge with resources).
    ``disagreements`` defaults to ``<labels stem>.<judge>.disagreements.jsonl`` in the working directory.
    """
    from safealign.data.behaviors import load_behaviors
    from safealign.io.jsonl import write_jsonl

    label_set = load_labels(labels, behaviors=load_behaviors(behaviors) if behaviors else None)
    items = label_set.items
    scorer = judge_obj or build_judge(judge, params)
    verdicts = scorer([it.behavior for it in items], [Completion(it.generation) for it in items])
    reference, judged = [it.label for it in items], [v.harmful for v in verdicts]
    summary: dict[str, Any] = {
        "labels": str(labels), "layout": label_set.layout, "skipped_behavior_ids": list(label_set.skipped),
        "judge": judge, "judge_params": dict(params or {}),
        "judge_describe": scorer.describe(), **agreement_report(reference, judged, n_boot=n_boot, seed=seed),
    }  # fmt: skip
    for group in GROUPS:
        split = _by_group(items, judged, group, n_boot, seed)
        if split:
            summary[f"by_{group}"] = split
    out = Path(disagreements or f"{Path(labels).stem}.{judge}.disagreements.jsonl")
    rows = [_disagreement(it, v) for it, v in zip(items, verdicts) if v.harmful is None or v.harmful != it.label]
    write_jsonl(out, rows)
    summary["disagreements"] = {"path": str(out), "count": len(rows)}
    return summary


def _by_group(items: list[LabeledGeneration], judged: list, group: str, n_boot: int, seed: int) -> dict[str, Any]:
    members: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        if group in it.groups:
            members[it.groups[group]].append(i)
    return {value: agreement_report([items[i].label for i in idx], [judged[i] for i in idx], n_boot=n_boot, seed=seed)
            for value, idx in sorted(members.items())}  # fmt: skip


def _disagreement(item: LabeledGeneration, verdict: Verdict) -> dict[str, Any]:
    return {
        "id": item.id, "behavior": item.behavior.behavior, "context": item.behavior.context or None,
        "generation": item.generation, "label": int(item.label),
        "verdict": None if verdict.harmful is None else int(verdict.harmful),
        "kind": "unscored" if verdict.harmful is None else ("false_positive" if verdict.harmful else "false_negative"),
        "error": verdict.error, "raw": verdict.raw, **item.groups,
    }  # fmt: skip


def _cell(stat: dict[str, Any]) -> str:
    if stat.get("value") is None:
        return "n/a"
    return f"{stat['value']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]" if stat.get("low") is not None \
        else f"{stat['value']:.3f}"  # fmt: skip


def format_validation(summary: dict[str, Any]) -> str:
    """A console report: the headline numbers, the confusion matrix, then one line per group value."""
    c = summary["confusion"]
    lines = [
        f"judge {summary['judge']} vs human labels in {summary['labels']} ({summary['layout']} layout)",
        f"n={summary['n']} scored, {summary['unscored']} unscored (left out, never guessed)",
        *(f"  {name:<10} {_cell(summary[name])}" for name in ("agreement", "kappa", "fpr", "fnr", "precision",
                                                              "recall", "f1")),
        "confusion (rows: human, columns: judge; positive = harmful):",
        f"  human harmful   TP={c['tp']:<5} FN={c['fn']}",
        f"  human harmless  FP={c['fp']:<5} TN={c['tn']}",
    ]  # fmt: skip
    for group in GROUPS:
        for value, s in summary.get(f"by_{group}", {}).items():
            lines.append(f"  {group}={value}: n={s['n']} unscored={s['unscored']} agreement {_cell(s['agreement'])}"
                         f" kappa {_cell(s['kappa'])}")  # fmt: skip
    lines.append(f"{summary['disagreements']['count']} disagreeing records -> {summary['disagreements']['path']}")
    return "\n".join(lines)
