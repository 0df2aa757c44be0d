"""``safealign diagnose win-rate``: pairwise win rate of a trained model's benign answers over the base
model's, judged by any backend (:mod:`safealign.eval.helpfulness.pairwise`).

Reads the over-refusal records two evaluations already wrote (``<eval dir>/helpfulness/overrefusal/
records.jsonl``: a demo's ``eval/before`` and ``eval/<stage>``) and writes ``summary.json`` and
``records.jsonl`` under ``<after>/helpfulness/pairwise/``. Nothing is generated again but the verdicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safealign.errors import UserError
from safealign.eval.backends.base import ChatModel, GenerationParams
from safealign.io import read_jsonl, write_json, write_jsonl
from safealign.io.summaries import PairwiseSummary


def overrefusal_records(eval_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(eval_dir) / "helpfulness" / "overrefusal" / "records.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: no over-refusal records; pass an evaluation directory such as a demo's eval/before")
    return read_jsonl(path)


def win_rate(before: str | Path, after: str | Path, judge: ChatModel, *, judge_name: str | None = None,
             params: GenerationParams | None = None, limit: int | None = None) -> PairwiseSummary:
    """Judge ``after``'s answers against ``before``'s on the prompts both answered; writes the outputs."""
    from safealign.eval.helpfulness.pairwise import pairwise_win_rate
    from safealign.eval.helpfulness.records import latest_by
    from safealign.eval.helpfulness.retention import answer_pairs

    base, trained = overrefusal_records(before), overrefusal_records(after)
    ids = sorted(latest_by(base, "id"))[:limit]
    pairs = answer_pairs(base, trained, ids)
    if not pairs:
        raise UserError(f"{before} and {after} have no benign prompt both answered without an error")
    summary, records = pairwise_win_rate(judge, pairs, params, judge_name=judge_name)
    out = Path(after) / "helpfulness" / "pairwise"
    write_jsonl(out / "records.jsonl", records)
    write_json(out / "summary.json", summary.to_json())
    return summary


def format_win_rate(summary: PairwiseSummary) -> str:
    s = summary.win_rate
    if s is None or s.mean is None:
        return f"win rate vs base: - (judge {summary.judge}; {s.unscored if s else 0} unscored)"
    lo, hi = s.ci95 or (float("nan"), float("nan"))
    return (f"win rate vs base: {s.mean:.3f} [{lo:.3f}, {hi:.3f}] over {s.n} prompts (judge {summary.judge}; "
            f"{summary.wins} wins, {summary.ties} ties, {summary.losses} losses, {s.unscored} unscored)")
