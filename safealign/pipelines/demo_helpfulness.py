"""The demo's helpfulness beyond refusal (issue 14): quality flags per model and answer retention per
trained stage, read from the over-refusal records each evaluation already wrote.

Quality flags (:mod:`safealign.eval.helpfulness.quality`) are counted for every evaluated model. Retention
(:mod:`safealign.eval.helpfulness.retention`) needs the base and a trained model's log-probs of the same
answers; the demo holds one model at a time, so each trained model scores its pairs while it is loaded
(:meth:`Retention.score_trained`) and the base model, loaded once more at the end, scores them all
(:meth:`Retention.finish`). Both write ``summary.json`` under the stage's ``helpfulness/`` folder and
return demo figures; nothing here changes a generation, so the demo's other numbers stay as they were. A demo run
again reads a stage's retention back (:meth:`Retention.recorded`) when ``helpfulness/retention/inputs.json`` records
that it was scored from the same answers under the same rule (``SCORING``), so neither model scores them
again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from safealign.io import read_jsonl, write_json
from safealign.io.summaries import Figure, Figures


INPUTS = "inputs.json"  # beside a stage's retention summary: the digest of the answers it was scored from
# how retention scores an answer, in the digest: a change of rule makes a finished run score its retention again
# rather than read back figures of the rule before (that one scored answers cut at the token limit closed)
SCORING = "cut answers open"


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
        self.recorded_figures: dict[str, Figures] = {}  # stage -> figures read back (:meth:`recorded`)

    def _pairs(self, eval_dir: Path) -> list[Any]:
        from safealign.eval.helpfulness import retention

        return retention.answer_pairs(_records(self.before), _records(eval_dir), self.ids,
                                      sources=(str(_path(self.before)), str(_path(eval_dir))))

    def _digest(self, pairs: Sequence[Any]) -> str:
        """What a stage's retention is scored from, but the two models (the base model, and the stage's, whose
        evaluation folder holds one model's results under the run's fingerprint): its answer pairs (which of them
        were cut at the token limit included), the number of prompts asked and the scoring rule."""
        data = {"pairs": [[p.id, p.prompt, p.base, p.trained, p.base_cut, p.trained_cut] for p in pairs],
                "prompts": len(self.ids), "scoring": SCORING}
        return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode("utf-8")).hexdigest()

    def recorded(self, stage: str, eval_dir: Path) -> bool:
        """Whether ``eval_dir`` holds this stage's retention scored from the same answer pairs; its figures are
        then read back and :meth:`finish` returns them, scoring nothing. False: :meth:`score_trained` it."""
        from safealign.io.summaries import RetentionSummary

        folder = eval_dir / "helpfulness" / "retention"
        try:
            if json.loads((folder / INPUTS).read_text()).get("digest") != self._digest(self._pairs(eval_dir)):
                return False
            summary = RetentionSummary.from_json(json.loads((folder / "summary.json").read_text()))
        except (OSError, ValueError, TypeError, AttributeError):  # none, unreadable, or of another shape
            return False
        self.recorded_figures[stage] = _figures(summary)
        return True

    def score_trained(self, stage: str, eval_dir: Path, model: Any, tokenizer: Any) -> None:
        from safealign.eval.helpfulness import retention

        self.pairs[stage] = self._pairs(eval_dir)
        self.trained[stage] = retention.score_answers(model, tokenizer, self.pairs[stage])
        self.dirs[stage] = eval_dir

    def finish(self, load_base: Callable[[], tuple[Any, Any]]) -> dict[str, Figures]:
        """Score every stage's pairs with the base model (``load_base()``: model, tokenizer; not called when every
        stage was :meth:`recorded`); stage -> retention figures, those read back included."""
        from safealign.eval.helpfulness import retention

        out = dict(self.recorded_figures)
        if not self.pairs:
            return out
        model, tokenizer = load_base()
        for stage, pairs in self.pairs.items():
            base = retention.score_answers(model, tokenizer, pairs)
            summary = retention.summarize_retention(base, self.trained[stage], len(self.ids))
            folder = self.dirs[stage] / "helpfulness" / "retention"
            (folder / INPUTS).unlink(missing_ok=True)  # written after the summary: a call stopped between leaves none
            write_json(folder / "summary.json", summary.to_json())
            write_json(folder / INPUTS, {"digest": self._digest(pairs)})
            out[stage] = _figures(summary)
        return out


def _figures(summary: Any) -> Figures:
    """A stage's retention figures from its :class:`~safealign.io.summaries.RetentionSummary`."""
    from safealign.eval.helpfulness import retention

    return {name: Figure.of(getattr(summary, side)) for side, name in retention.FIGURES.items()}
