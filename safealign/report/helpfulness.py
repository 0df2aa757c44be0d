"""The report's numbers on benign answers beyond refusal: answer retention per trained stage and a few
answers the quality flags caught (:mod:`safealign.eval.helpfulness.retention`, ``.quality``).

The flag rates themselves are demo figures ending in ``_rate``, so the headline table shows them; this
module adds what the headline cannot: retention in nats per token (not a percentage) and the flagged
answers, which are model text and are rendered escaped like every example.
"""

from __future__ import annotations

from safealign.eval.helpfulness import quality, retention
from safealign.eval.helpfulness.records import latest_by
from safealign.report.load import RunData, read_run_rows
from safealign.report.results import Answer, Example, Metric, as_metric

RETENTION_LABELS = {"base_answers": "base model's answers: trained − base log-prob per token",
                    "trained_answers": "trained model's answers: base − trained log-prob per token"}


def retention_rows(data: RunData) -> tuple[list[str], list[tuple[str, list[Metric | None]]]]:
    """Columns (trained stages) and one row per retention view; empty when the run recorded none."""
    columns = {k: v for k, v in (data.demo_summary.columns() if data.demo_summary else {}).items() if k != "before"}
    rows = [(RETENTION_LABELS[side], [as_metric(c.get(name)) for c in columns.values()])
            for side, name in retention.FIGURES.items()]
    return (list(columns), rows) if any(m is not None for _, ms in rows for m in ms) else ([], [])


def flagged_examples(data: RunData, limit: int = 4) -> list[Example]:
    """Up to ``limit`` benign prompts with an answer flagged by a quality rule, each stage's answer shown."""
    # read like every run file of the report: damaged lines are skipped and listed, never fatal
    by_stage = {s.name: latest_by(read_run_rows(s.path / "helpfulness" / "overrefusal" / "records.jsonl", data), "id")
                for s in data.stages}
    out = []
    for pid in sorted(set().union(*(r.keys() for r in by_stage.values()))) if by_stage else []:
        answers = [(stage, records[pid]) for stage, records in by_stage.items() if pid in records]
        flags = [[f for f, on in quality.record_flags(r).items() if on] for _, r in answers]
        if any(flags) and len(out) < limit:
            shown = tuple(Answer(stage, str(r.get("completion") or ""), "flags: " + (", ".join(f) or "none"))
                          for (stage, r), f in zip(answers, flags))
            out.append(Example("benign answer quality", pid, str(answers[0][1].get("prompt", "")), shown))
    return out
