"""``safealign diagnose win-rate``: pairwise win rate of a trained model's benign answers over the base
model's, judged by any backend (:mod:`safealign.eval.helpfulness.pairwise`).

Reads the over-refusal records two evaluations already wrote (``<eval dir>/helpfulness/overrefusal/
records.jsonl``: a demo's ``eval/before`` and ``eval/<stage>``) and writes ``summary.json`` and
``records.jsonl`` under ``<after>/helpfulness/pairwise/`` (an LLM judge) or ``pairwise_reward/`` (a reward
model), or under ``output_dir``. Nothing is generated again but the verdicts. A folder holding another judge's
results is refused before anything is judged (:func:`_output`): the one folder per kind would otherwise keep only
the last judge's summary and records; the same judge again rewrites its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safealign.errors import UserError
from safealign.eval.backends.base import ChatModel, GenerationParams
from safealign.io import read_jsonl, write_json, write_jsonl
from safealign.io.summaries import PairwiseSummary


LIMIT_WHY = "the number of benign prompts to judge, from the first by id"


def overrefusal_path(eval_dir: str | Path) -> Path:
    return Path(eval_dir) / "helpfulness" / "overrefusal" / "records.jsonl"


def overrefusal_records(eval_dir: str | Path) -> list[dict[str, Any]]:
    path = overrefusal_path(eval_dir)
    if not path.is_file():
        raise UserError(f"{path}: no over-refusal records; pass an evaluation directory such as a demo's eval/before")
    return read_jsonl(path)


def win_rate(before: str | Path, after: str | Path, judge: ChatModel, *, judge_name: str | None = None,
             params: GenerationParams | None = None, limit: int | None = None,
             output_dir: str | Path | None = None) -> PairwiseSummary:
    """Judge ``after``'s answers against ``before``'s on the prompts both answered; writes the outputs."""
    from safealign.eval.helpfulness.pairwise import judge_label, pairwise_win_rate

    pairs, name = _pairs(before, after, limit), judge_label(judge, judge_name)
    out = _output(after, "pairwise", output_dir, name)
    summary, records = pairwise_win_rate(judge, pairs, params, judge_name=name)
    return _write(out, summary, records)


def reward_win_rate(before: str | Path, after: str | Path, reward_model: str, *, limit: int | None = None,
                    tie_margin: float = 1e-4, batch_size: int = 8,
                    output_dir: str | Path | None = None) -> PairwiseSummary:
    """The same pairs judged by a reward model (``<after>/helpfulness/pairwise_reward/``): both folders'
    records and the output folder are checked before the reward model loads."""
    from safealign.eval.helpfulness.pairwise import reward_win_rate as judge_by_reward
    from safealign.eval.reward_model import check_kind
    from safealign.eval.reward_scorer import load_reward_scorer

    if tie_margin < 0:
        raise UserError(f"--tie-margin must be >= 0, got {tie_margin}")
    check_kind(reward_model, "reward", "--reward-model")  # a cost model would prefer the more harmful answers
    pairs, name = _pairs(before, after, limit), f"reward model {reward_model}"
    out = _output(after, "pairwise_reward", output_dir, name)
    score = load_reward_scorer(reward_model, batch_size=batch_size, what="--reward-model")
    summary, records = judge_by_reward(score, pairs, judge_name=name, tie_margin=tie_margin)
    return _write(out, summary, records)


def _pairs(before: str | Path, after: str | Path, limit: int | None):
    from safealign.checks import at_least
    from safealign.eval.helpfulness.records import latest_by
    from safealign.eval.helpfulness.retention import answer_pairs

    at_least("--limit", limit, 1, LIMIT_WHY)  # 0 would judge nothing, a negative one slice from the end
    base, trained = overrefusal_records(before), overrefusal_records(after)
    pairs = answer_pairs(base, trained, sorted(latest_by(base, "id"))[:limit],
                         sources=(str(overrefusal_path(before)), str(overrefusal_path(after))))
    if not pairs:
        raise UserError(f"{before} and {after} have no benign prompt both answered without an error")
    return pairs


def _output(after: str | Path, folder: str, output_dir: str | Path | None, judge: str) -> Path:
    """Where ``judge``'s results go: ``output_dir``, else ``<after>/helpfulness/<folder>/``; refused when that
    folder's ``summary.json`` was written by another judge, whose results these would overwrite."""
    out = Path(output_dir) if output_dir is not None else Path(after) / "helpfulness" / folder
    try:
        previous = json.loads((out / "summary.json").read_text()).get("judge")
    except (OSError, ValueError, AttributeError):  # none yet, or not a summary of ours: nothing to keep
        return out
    if previous and previous != judge:
        raise UserError(f"{out} holds the win rate judged by {previous!r}; judging with {judge!r} would overwrite "
                        "its summary and records: pass --output-dir DIR to write these results elsewhere, or move "
                        "that folder away first")
    return out


def _write(out: Path, summary: PairwiseSummary, records: list[dict[str, Any]]) -> PairwiseSummary:
    write_jsonl(out / "records.jsonl", records)
    write_json(out / "summary.json", summary.to_json())
    return summary


def format_win_rate(summary: PairwiseSummary) -> str:
    s = summary.win_rate
    if s is None or s.mean is None:
        return f"win rate vs base: - (judge {summary.judge}; {s.unscored if s else 0} unscored)"
    lo, hi = s.ci95 or (float("nan"), float("nan"))
    line = (f"win rate vs base: {s.mean:.3f} [{lo:.3f}, {hi:.3f}] over {s.n} prompts (judge {summary.judge}; "
            f"{summary.wins} wins, {summary.ties} ties, {summary.losses} losses, {s.unscored} unscored)")
    difference = summary.extra.get("mean_reward_difference")
    if difference and difference.get("mean") is not None:
        low, high = difference.get("ci95") or (float("nan"), float("nan"))
        line += f"\nmean reward difference (trained − base): {difference['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"
    return line
