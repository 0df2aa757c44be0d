"""The demo's helpfulness beyond refusal (issue 14): quality flags per model and answer retention per
trained stage, read from the over-refusal records each evaluation already wrote.

Quality flags (:mod:`safealign.eval.helpfulness.quality`) are counted for every evaluated model. Retention
(:mod:`safealign.eval.helpfulness.retention`) needs the base and a trained model's log-probs of the same
answers; the demo holds one model at a time, so each trained model scores its pairs while it is loaded
(:meth:`Retention.score_trained`) and the base model, loaded once more at the end, scores them all
(:meth:`Retention.finish`). Both write ``summary.json`` under the stage's ``helpfulness/`` folder and
return demo figures; nothing here changes a generation, so the demo's other numbers stay as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from safealign.io import read_jsonl, write_json
from safealign.io.summaries import Figure, Figures


def _path(eval_dir: Path) -> Path:
    return eval_dir / "helpfulness" / "overrefusal" / "records.jsonl"


def _records(eval_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(_path(eval_dir))


def quality_figures(eval_dir: Path, ids: Sequence[str]) -> Figures:
    """Quality flags of one evaluated model's benign answers; writes ``helpfulness/quality/summary.json``."""
    from safealign.eval.helpfulness import quality

    summary = quality.summarize_quality(_records(eval_dir), ids)
    write_json(eval_dir / "helpfulness" / "quality" / "summary.json", summary.to_json())
    return {quality.FIGURES[name]: Figure.of(stats) for name, stats in summary.flags.items()}


class Retention:
    """Answer retention of every trained stage against the base model's evaluation in ``before``."""

    def __init__(self, before: Path, ids: Sequence[str]) -> None:
        self.before, self.ids = before, list(ids)
        self.pairs: dict[str, list[Any]] = {}
        self.trained: dict[str, dict[str, dict[str, float]]] = {}
        self.dirs: dict[str, Path] = {}

    def score_trained(self, stage: str, eval_dir: Path, model: Any, tokenizer: Any) -> None:
        from safealign.eval.helpfulness import retention

        self.pairs[stage] = retention.answer_pairs(_records(self.before), _records(eval_dir), self.ids,
                                                   sources=(str(_path(self.before)), str(_path(eval_dir))))
        self.trained[stage] = retention.score_answers(model, tokenizer, self.pairs[stage])
        self.dirs[stage] = eval_dir

    def finish(self, model: Any, tokenizer: Any) -> dict[str, Figures]:
        """Score every stage's pairs with the base ``model``; stage -> retention figures."""
        from safealign.eval.helpfulness import retention

        out = {}
        for stage, pairs in self.pairs.items():
            base = retention.score_answers(model, tokenizer, pairs)
            summary = retention.summarize_retention(base, self.trained[stage], len(self.ids))
            write_json(self.dirs[stage] / "helpfulness" / "retention" / "summary.json", summary.to_json())
            out[stage] = {name: Figure.of(getattr(summary, side)) for side, name in retention.FIGURES.items()}
        return out
