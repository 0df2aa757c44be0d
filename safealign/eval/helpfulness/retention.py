"""Answer retention: how much less likely a trained model finds its base model's answers, and back.

The substring over-refusal rate counts a worse answer as helpful as long as it is not a refusal
(issue 14). Retention needs no judge: for each benign prompt x with base answer y_b and trained answer
y_t (the over-refusal records of the two models),

    base_answers[x]    = (log p_trained(y_b|x) − log p_base(y_b|x)) / |y_b|
    trained_answers[x] = (log p_base(y_t|x) − log p_trained(y_t|x)) / |y_t|

in nats per response token (|y| counts the tokens the chat template adds after the prompt, the end-of-
turn marker included, but for an answer cut at the generation limit: its record's ``finish`` is "length", the model
never produced an end-of-turn, so it is scored open, up to the end of its own text, as training encodes such an
answer with ``cut_answers=open``; scoring it closed would credit a trained model for stopping mid-sentence).
Both are exactly 0 for identical models. A negative ``base_answers`` says the
trained model has moved away from what the base model answered; a negative ``trained_answers`` says the
trained model's own answers are ones the base model would not give. Each is reported as the mean over
prompts with a paired bootstrap 95% interval over prompts (:func:`safealign.eval.paired.mean_difference_stats`).

Log-probs come from :func:`safealign.train.scores.chosen_scores` (the trainer's rendering, truncation
and log-prob code, per-token averaged), so no second scoring loop exists. Only prompts both models
answered without a generation error are scored; the rest are counted as ``unscored``. Retention
measures change, not quality (docs/algorithms.md, "Answer retention and quality flags").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from torch import nn

from safealign.errors import UserError, brief
from safealign.eval.helpfulness.records import latest_by
from safealign.eval.paired import mean_difference_stats
from safealign.io.summaries import RetentionSummary
from safealign.train.scores import response_scores

SIDES = ("base_answers", "trained_answers")
FIGURES = {"base_answers": "retention_of_base_answers", "trained_answers": "retention_of_own_answers"}  # demo names
Scores = dict[str, dict[str, float]]  # side -> prompt id -> per-token log-prob of that side's answer


@dataclass(frozen=True)
class AnswerPair:
    """One benign prompt with the base model's and the trained model's answers to it; ``base_cut`` /
    ``trained_cut``: that answer stopped at the generation token limit (scored without an end-of-turn token)."""

    id: str
    prompt: str
    base: str
    trained: str
    base_cut: bool = False
    trained_cut: bool = False


def answer_pairs(base_records: Iterable[dict[str, Any]], trained_records: Iterable[dict[str, Any]], ids: Sequence[str],
                 *, sources: tuple[str, str] = ("base records", "trained records")) -> list[AnswerPair]:
    """The prompts of ``ids`` that both models answered without a generation error, in ``ids`` order.

    Records are paired by id, so an id must name the same prompt on both sides: two evaluations over different
    prompt files whose ids overlap would otherwise compare answers to unrelated prompts. ``sources`` names the
    two record files in that error."""
    base, trained = latest_by(base_records, "id"), latest_by(trained_records, "id")
    check_same_prompts({i: r.get("prompt") for i, r in base.items()},
                       {i: r.get("prompt") for i, r in trained.items()}, ids, sources)
    ok = lambda r: r is not None and r.get("error") is None  # noqa: E731
    return [AnswerPair(i, str(base[i]["prompt"]), _answer(base[i]), _answer(trained[i]), base_cut=_cut(base[i]),
                       trained_cut=_cut(trained[i]))
            for i in ids if ok(base.get(i)) and ok(trained.get(i))]


def _answer(record: Mapping[str, Any]) -> str:
    return str(record.get("completion") or "")


def _cut(record: Mapping[str, Any]) -> bool:
    """Whether the record's answer stopped at the token limit (``finish`` "length"; None, unknown, is an answer that
    ended). A blank cut answer has no text to end the scored tokens at, so it is scored as one that ended."""
    return record.get("finish") == "length" and bool(_answer(record).strip())


def check_same_prompts(base: Mapping[str, Any], trained: Mapping[str, Any], ids: Iterable[str],
                       sources: tuple[str, str], what: str = "'prompt'") -> None:
    """Per-prompt results read from two files are paired by id: ``base`` and ``trained`` (id -> prompt text) must
    give every id of ``ids`` both hold the same text, or the pairing would compare results on unrelated prompts
    (two evaluations over different prompt files whose ids overlap). ``sources`` names the two files, ``what`` the
    records' field the texts come from."""
    for i in ids:
        if i in base and i in trained and str(base[i]) != str(trained[i]):
            raise UserError(f"{sources[0]} and {sources[1]}: id {i!r} has a different {what} in each "
                            f"({brief(base[i])} vs {brief(trained[i])}); results are paired by id, so both "
                            "evaluations must answer the same prompts")


def score_answers(model: nn.Module, tokenizer: Any, pairs: Sequence[AnswerPair], *, max_length: int = 1024,
                  max_prompt_length: int | None = 512, batch_size: int = 8) -> Scores:
    """Per-token log-probs ``model`` gives both answers of every pair (None-scored prompts left out); an answer cut
    at the token limit is scored open (its tokens only, no end-of-turn)."""
    out: Scores = {}
    sides = ((lambda p: p.base, lambda p: p.base_cut), (lambda p: p.trained, lambda p: p.trained_cut))
    for side, (answer, cut) in zip(SIDES, sides):
        scores = response_scores(model, tokenizer, [(p.prompt, answer(p)) for p in pairs],
                                 open_ends=[cut(p) for p in pairs], source="over-refusal records",
                                 max_length=max_length, max_prompt_length=max_prompt_length, batch_size=batch_size)
        out[side] = {p.id: s for p, s in zip(pairs, scores) if s is not None}
    return out


def summarize_retention(base: Mapping[str, Mapping[str, float]], trained: Mapping[str, Mapping[str, float]],
                        prompts: int) -> RetentionSummary:
    """Retention from the base model's and the trained model's :func:`score_answers` of the same pairs;
    ``prompts`` counts every prompt asked, so those not scored show as ``unscored``."""
    views = {"base_answers": (trained["base_answers"], base["base_answers"]),
             "trained_answers": (base["trained_answers"], trained["trained_answers"])}
    stats = {side: mean_difference_stats(a, b, prompts) for side, (a, b) in views.items()}
    return RetentionSummary(**stats, prompts=prompts)


def answer_retention(base_model: nn.Module, trained_model: nn.Module, tokenizer: Any, pairs: Sequence[AnswerPair],
                     *, prompts: int | None = None, **scoring: Any) -> RetentionSummary:
    """Score ``pairs`` with both models (both in memory) and summarize."""
    base = score_answers(base_model, tokenizer, pairs, **scoring)
    trained = score_answers(trained_model, tokenizer, pairs, **scoring)
    return summarize_retention(base, trained, len(pairs) if prompts is None else prompts)
