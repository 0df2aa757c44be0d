"""Helpfulness evaluation: over-refusal on benign prompts and MT-Bench-style single-answer grading.

Both run against any :class:`~safealign.eval.backends.base.ChatModel`, append JSONL records as they
are produced (re-runs resume) and write a ``summary.json``. Conventional layout inside an eval stage:
``helpfulness/overrefusal/`` and ``helpfulness/mtbench/`` (the report reads them from there).
"""

from safealign.eval.helpfulness.mtbench import load_questions, mtbench_eval, parse_rating
from safealign.eval.helpfulness.overrefusal import HelpfulnessPrompt, overrefusal_eval
from safealign.eval.helpfulness.records import rate_ci95

__all__ = [
    "HelpfulnessPrompt", "load_questions", "mtbench_eval", "overrefusal_eval", "parse_rating", "rate_ci95",
]
