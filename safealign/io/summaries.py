"""Typed summaries of a run: jailbreak evaluation, over-refusal, MT-Bench, paired comparison, demo.

Same rules as :mod:`safealign.io.records` (``schema_version``; missing fields default; unknown keys
kept in ``extra``). A value of the wrong shape (a list where an object belongs, text where a number does,
also inside the free-form blocks as far as their readers use them) is a UserError naming the file and
field. Each summary leaves room for the model that ran (``model_identity``) and the run directory's
fingerprint (``run_fingerprint``); both are None until a run records them.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

from safealign.errors import UserError
from safealign.io.records import (
    SCHEMA_VERSION, AsrStats, ci_json, ci_pair, field_at, from_fields, read_stats, to_fields,
)

T = TypeVar("T")

# Reading: a reader turns the JSON value found at ``where`` ("<file>: field attacks.direct") into its typed
# form, or raises a UserError naming that place when the value has the wrong shape, so a hand-edited or
# damaged summary is reported where it is read instead of failing whoever uses the value later.
Read = Callable[[Any, str], Any]


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    kinds = ((str, "a string"), (numbers.Real, "a number"), (Mapping, "an object"), ((list, tuple), "an array"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _wrong(where: str, expected: str, value: Any) -> UserError:
    return UserError(f"{where}: expected {expected}, got {_kind(value)}")


def _any(value: Any, where: str) -> Any:
    return value


def _object(read: Read = _any) -> Read:
    """A JSON object whose values are read by ``read``."""

    def read_object(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _wrong(where, "a JSON object", value)
        return {str(k): read(v, f"{where}.{k}") for k, v in value.items()}

    return read_object


def _each(read: Read, depth: int = 1) -> Read:
    """JSON objects nested ``depth`` levels deep whose innermost values are read by ``read``; a value on the
    way that is not an object is a UserError naming the file and field."""
    for _ in range(depth):
        read = _object(read)
    return read


def _fields(required: Mapping[str, Read] | None = None, optional: Mapping[str, Read] | None = None) -> Read:
    """A JSON object whose ``required`` and (when present) ``optional`` keys are read; other keys are kept."""
    readers = {**(required or {}), **(optional or {})}

    def read_fields(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _wrong(where, "a JSON object", value)
        missing = [k for k in required or {} if k not in value]
        if missing:
            raise UserError(f"{where}: missing field(s) {', '.join(missing)}")
        return {str(k): readers[k](v, f"{where}.{k}") if k in readers else v for k, v in value.items()}

    return read_fields


def _optional(read: Read) -> Read:
    """``read``, or null."""
    return lambda value, where: None if value is None else read(value, where)


def _list(read: Read = _any) -> Read:
    """A JSON array whose items are read by ``read``."""

    def read_list(value: Any, where: str) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise _wrong(where, "a JSON array", value)
        return [read(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return read_list


def _number(value: Any, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _wrong(where, "a number", value)
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _wrong(where, "a whole number", value)
    return int(value)


def _interval(value: Any, where: str) -> list[int | float]:
    """A ``[low, high]`` pair of numbers, kept as the JSON list it is."""
    if not isinstance(value, (list, tuple)):
        raise _wrong(where, "a [low, high] pair of numbers", value)
    if len(value) != 2:
        raise UserError(f"{where}: expected a [low, high] pair of numbers, got {len(value)} value(s)")
    return [_number(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _ci(value: Any, where: str) -> tuple[float, float]:
    """An :func:`_interval` as the ``(low, high)`` tuple a typed record holds."""
    low, high = _interval(value, where)
    return float(low), float(high)


def _read_fields(cls: type[T], data: Any, where: str, **read: Read) -> T:
    """:func:`from_fields` of ``data`` with each present field ``name`` first read by ``read[name]`` at
    ``field_at(where, name)``."""
    if isinstance(data, Mapping):
        data = {**data, **{name: r(data[name], field_at(where, name)) for name, r in read.items() if name in data}}
    return from_fields(cls, data, where)


def _json_each(convert: Callable[[Any], Any], depth: int = 1) -> Callable[[Any], Any]:
    """Writing: ``convert`` applied to the values of a typed mapping nested ``depth`` levels deep."""
    if depth == 0:
        return convert
    inner = _json_each(convert, depth - 1)
    return lambda d: {str(k): inner(v) for k, v in d.items()}


def _to_json(value: Any) -> Any:
    return value.to_json()


# The shapes of EvalSummary's free-form blocks, as far as their readers (the report, the console table) use
# them; the writers named beside each field of EvalSummary write more.
_RATE = _fields(optional={"rate": _optional(_number), "ci95": _optional(_interval)})
_AGREEMENT = _fields(required={"n": _count, "a_only": _count, "b_only": _count,
                               "agreement": _fields(required={"value": _optional(_number)},
                                                    optional={"low": _optional(_number), "high": _optional(_number)})},
                     optional={"kappa": _optional(_number)})  # fmt: skip
_ASR_AT_N = _fields(optional={
    "overall": _optional(_list(_fields(required={"n": _number, "asr": _number}))),
    "fit": _optional(_fields(optional={
        "fit_range": _optional(_interval),
        "forecast": _optional(_object(_optional(_fields(optional={"n": _optional(_number)})))),
    })),
})  # fmt: skip
_MEAN_OVER_ATTACKS = {"mean": _optional(_number), "ci95": _optional(_interval), "n_attacks": _optional(_count),
                      "n_behaviors": _optional(_count), "per_attack": _object(_optional(_number))}  # fmt: skip
_AGGREGATE = _fields(optional={**_MEAN_OVER_ATTACKS, "test_case_mean": _fields(optional=_MEAN_OVER_ATTACKS)})
_TEST_CASE = _fields(optional={"asr": _optional(_number), "n": _count, "test_cases": _count})
_MEAN_SCORE = _fields(optional={"mean": _optional(_number), "ci95": _optional(_interval), "n": _count,
                                "unscored": _count})  # fmt: skip


@dataclass(frozen=True)
class EvalSummary:
    """``summary.json`` of a jailbreak evaluation (:mod:`safealign.eval.summary`, :mod:`safealign.eval.pipeline`).

    ``attacks[attack][judge]``, ``by_category[attack][judge][category]`` and
    ``by_attempt[attack][judge][attempt_id]`` are ASR stats; ``missing[attack]`` counts behaviors
    without a record."""

    n_behaviors: int = 0
    attacks: dict[str, dict[str, AsrStats]] = field(default_factory=dict)
    by_category: dict[str, dict[str, dict[str, AsrStats]]] = field(default_factory=dict)
    by_attempt: dict[str, dict[str, dict[str, AsrStats]]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    complete: bool | None = None
    wall_s: float | None = None
    model: str | None = None
    judges: dict[str, Any] = field(default_factory=dict)
    records: str | None = None
    model_identity: dict[str, Any] | None = None
    run_fingerprint: str | None = None
    input_bounds: dict[str, Any] = field(default_factory=dict)  # behaviors skipped/truncated for length
    # attack -> {prefill probe verdict: attempts}: whether a remote server continued the prefill (prefill_probe)
    prefill_check: dict[str, dict[str, int]] = field(default_factory=dict)
    # attack -> "judgeA|judgeB" -> attempt-level agreement of two judges (eval/judges/agreement.py)
    judge_agreement: dict[str, Any] = field(default_factory=dict)
    # attack -> judge -> ASR@N curves and power-law forecast, for sampling attacks (eval/asr_at_n.py)
    asr_at_n: dict[str, Any] = field(default_factory=dict)
    # the behaviors file read: layout, harmful/benign counts, rows skipped by reason (eval/benchmarks/loaders.py)
    benchmark: dict[str, Any] = field(default_factory=dict)
    # refusal rates on benign prompts answered in the same run, XSTest contrast pair (eval/benign.py)
    over_refusal: dict[str, Any] = field(default_factory=dict)
    # judge -> mean ASR over the run's attacks with its interval, any-of-k, and by HarmBench's per-test-case rule
    # under "test_case_mean" (eval/aggregate.py)
    mean_over_attacks: dict[str, Any] = field(default_factory=dict)
    # attack -> judge -> HarmBench's rule: each behavior scored by the share of its scored attempts judged harmful,
    # averaged over behaviors ({asr, n, test_cases}; eval/summary.py); ``attacks`` holds the any-of-k ASR
    test_case_asr: dict[str, dict[str, Any]] = field(default_factory=dict)
    # attack -> judge -> mean score (StrongREJECT's metric, for a judge giving scores): each behavior's mean over its
    # scored attempts, averaged over behaviors, with its interval ({mean, ci95, n, unscored, method}; eval/summary.py).
    # Written only where a judge gave scores: other summaries have no such key, as before it existed
    mean_score: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the inference-time defenses around the target, outermost first (name, params, calibration; eval/defenses)
    defenses: list[dict[str, Any]] = field(default_factory=list)
    # cost per answer: generated tokens, non-generating forward passes, seconds, defense refusals (eval/cost.py)
    cost: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def stats(self, attack: str, judge: str) -> AsrStats | None:
        return self.attacks.get(attack, {}).get(judge)

    def to_json(self) -> dict[str, Any]:
        out = to_fields(self, attacks=_json_each(_to_json, 2), by_category=_json_each(_to_json, 3),
                        by_attempt=_json_each(_to_json, 3))
        if not self.mean_score:
            del out["mean_score"]  # no judge gave scores: the summary reads as it did before the block
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "evaluation summary") -> EvalSummary:
        stats = AsrStats.from_json
        return _read_fields(
            cls, data, where, attacks=_each(stats, 2), by_category=_each(stats, 3), by_attempt=_each(stats, 3),
            missing=_object(), judges=_object(), model_identity=_optional(_object()),
            input_bounds=_fields(optional={"skipped": _count, "truncated": _count}), prefill_check=_each(_count, 2),
            judge_agreement=_each(_AGREEMENT, 2), asr_at_n=_each(_ASR_AT_N, 2), benchmark=_object(),
            over_refusal=_fields(optional={"refusal_rate": _object(_RATE), "contrast": _object(_RATE)}),
            test_case_asr=_each(_TEST_CASE, 2), mean_score=_each(_MEAN_SCORE, 2),
            mean_over_attacks=_object(_AGGREGATE), defenses=_list(_object()), cost=_object(),
        )


@dataclass(frozen=True)
class RateStats:
    """A rate over True/False flags with its Wilson interval; None flags are unscored."""

    rate: float | None
    ci95: tuple[float, float] | None = None
    n: int = 0
    unscored: int = 0

    @property
    def value(self) -> float | None:
        return self.rate

    def to_json(self) -> dict[str, Any]:
        return to_fields(self, ci95=ci_json)

    @classmethod
    def from_json(cls, data: Any, where: str = "rate") -> RateStats:
        return read_stats(cls, data, where, "rate")


@dataclass(frozen=True)
class ScoreStats:
    """A mean rating with its interval (normal approximation; None when n < 2)."""

    mean: float | None
    ci95: tuple[float, float] | None = None
    n: int = 0
    unscored: int = 0

    @property
    def value(self) -> float | None:
        return self.mean

    def to_json(self) -> dict[str, Any]:
        return to_fields(self, ci95=ci_json)

    @classmethod
    def from_json(cls, data: Any, where: str = "score") -> ScoreStats:
        return read_stats(cls, data, where, "mean")


@dataclass(frozen=True)
class OverRefusalSummary:
    """``summary.json`` of the over-refusal evaluation: refusal rate per prompt kind and ``all``."""

    judge: str = ""
    refusal_rate: dict[str, RateStats] = field(default_factory=dict)
    missing: int = 0
    model_identity: dict[str, Any] | None = None
    run_fingerprint: str | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_fields(self, refusal_rate=_json_each(_to_json))

    @classmethod
    def from_json(cls, data: Any, where: str = "over-refusal summary") -> OverRefusalSummary:
        return _read_fields(cls, data, where, refusal_rate=_each(RateStats.from_json),
                            model_identity=_optional(_object()))


@dataclass(frozen=True)
class QualitySummary:
    """Response-quality flags of one model's benign answers (:mod:`safealign.eval.helpfulness.quality`):
    ``flags[name]`` is the share of answers flagged; ``rules`` states each flag's rule."""

    flags: dict[str, RateStats] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)
    missing: int = 0
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_fields(self, flags=_json_each(_to_json))

    @classmethod
    def from_json(cls, data: Any, where: str = "quality summary") -> QualitySummary:
        return _read_fields(cls, data, where, flags=_each(RateStats.from_json), rules=_object())


@dataclass(frozen=True)
class RetentionSummary:
    """Answer retention of a trained model against its base (:mod:`safealign.eval.helpfulness.retention`),
    mean per-token log-prob differences over prompts with their interval:

    ``base_answers``: log p_trained(y_base|x) − log p_base(y_base|x); ``trained_answers``: log
    p_base(y_trained|x) − log p_trained(y_trained|x). Both are 0 for identical models."""

    base_answers: ScoreStats | None = None
    trained_answers: ScoreStats | None = None
    prompts: int = 0
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_fields(self, base_answers=_to_json, trained_answers=_to_json)

    @classmethod
    def from_json(cls, data: Any, where: str = "retention summary") -> RetentionSummary:
        score = _optional(ScoreStats.from_json)
        return _read_fields(cls, data, where, base_answers=score, trained_answers=score)


@dataclass(frozen=True)
class PairwiseSummary:
    """Pairwise win rate of a trained model over its base model (:mod:`safealign.eval.helpfulness.pairwise`):
    win 1, tie ½, loss 0 per prompt, position-swapped; ``win_rate.unscored`` counts unparseable verdicts."""

    judge: str = ""
    win_rate: ScoreStats | None = None
    wins: int = 0
    ties: int = 0
    losses: int = 0
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_fields(self, win_rate=_to_json)

    @classmethod
    def from_json(cls, data: Any, where: str = "pairwise summary") -> PairwiseSummary:
        return _read_fields(cls, data, where, win_rate=_optional(ScoreStats.from_json))


@dataclass(frozen=True)
class MTBenchSummary:
    """``summary.json`` of MT-Bench grading: mean rating overall, per turn and per category."""

    judge: str = ""
    overall: ScoreStats | None = None
    by_turn: dict[str, ScoreStats] = field(default_factory=dict)
    by_category: dict[str, ScoreStats] = field(default_factory=dict)
    questions: int = 0
    missing: int = 0
    model_identity: dict[str, Any] | None = None
    run_fingerprint: str | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_fields(self, overall=_to_json, by_turn=_json_each(_to_json), by_category=_json_each(_to_json))

    @classmethod
    def from_json(cls, data: Any, where: str = "MT-Bench summary") -> MTBenchSummary:
        score = ScoreStats.from_json
        return _read_fields(cls, data, where, overall=_optional(score), by_turn=_each(score),
                            by_category=_each(score), model_identity=_optional(_object()))


@dataclass(frozen=True)
class Figure:
    """One headline number of the demo: a rate with its interval and sample size."""

    value: float | None
    ci95: tuple[float, float] | None = None
    n: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, stats: AsrStats | RateStats | ScoreStats) -> Figure:
        return cls(stats.value, stats.ci95, stats.n)  # every stats type names its number .value

    def to_json(self) -> dict[str, Any]:
        return to_fields(self, ci95=ci_json)

    @classmethod
    def from_json(cls, data: Any, where: str = "figure") -> Figure:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return cls(float(data))  # a bare number (hand-written summaries)
        return from_fields(cls, data, where, ci95=ci_pair)


@dataclass(frozen=True)
class PairedDifference:
    """Paired difference of two variants' rates (:mod:`safealign.eval.paired`)."""

    diff: float
    ci95: tuple[float, float] | None  # None: one prompt, no spread to estimate
    per_seed: dict[str, float]
    rate_a: float
    rate_b: float
    n_prompts: int
    seeds: int
    only_a: int
    only_b: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_fields(self, ci95=ci_json)

    @classmethod
    def from_json(cls, data: Any, where: str = "paired difference") -> PairedDifference:
        rate = lambda value, at: float(_number(value, at))  # noqa: E731
        return _read_fields(cls, data, where, diff=rate, rate_a=rate, rate_b=rate, ci95=_optional(_ci),
                            per_seed=_object(), n_prompts=_count, seeds=_count, only_a=_number, only_b=_number)


@dataclass(frozen=True)
class Comparison:
    """Paired differences ``a − b`` per metric."""

    a: str
    b: str
    metrics: dict[str, PairedDifference] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_fields(self, metrics=_json_each(_to_json))

    @classmethod
    def from_json(cls, data: Any, where: str = "comparison") -> Comparison:
        return _read_fields(cls, data, where, metrics=_each(PairedDifference.from_json))


Figures = dict[str, Figure]


def is_rate(metric: str) -> bool:
    """Whether a metric is a rate in [0, 1]: ``*_asr`` and ``*_rate``, also under a later judge (``direct_asr@cls``).
    Other metrics are numbers in their own unit (the held-out refusal margin, nats)."""
    return metric.split("@", 1)[0].endswith(("_asr", "_rate"))


def is_figures(block: Mapping[str, Any]) -> bool:
    """True for a ``{"direct_asr": ..., ...}`` block, False for ``{"dpo": {...}, "e-dpo": {...}}``."""
    return any(is_rate(str(k)) for k in block)


@dataclass(frozen=True)
class DemoSummary:
    """``summary.json`` of ``safealign demo``: figures before training and after, per trained stage.

    On disk, ``after`` is the one stage's figures when a single model was trained, else a mapping
    stage -> figures; a single stage read back is named ``after`` (the file does not say its name)."""

    model: str = ""
    judge: str = ""
    pairs: str = ""
    objective: str = ""
    before: Figures = field(default_factory=dict)
    after: dict[str, Figures] = field(default_factory=dict)
    comparison: Comparison | None = None  # e-dpo − dpo, when both were trained (the demo's first comparison)
    # every method against the baseline method, then E-variants against their own method (demo --compare)
    comparisons: list[Comparison] = field(default_factory=list)
    methods: dict[str, str] = field(default_factory=dict)  # method -> what its stages trained
    wall_seconds: float | None = None
    model_identity: dict[str, Any] | None = None
    trained_identity: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> the trained model's
    run_fingerprint: str | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def columns(self, label: str = "after: {}") -> dict[str, Figures]:
        """``before`` (if recorded), then ``after`` (one trained stage) or one column per stage named by ``label``."""
        after = {"after": next(iter(self.after.values()))} if len(self.after) == 1 else {
            label.format(k): v for k, v in self.after.items()}  # fmt: skip
        return {**({"before": self.before} if self.before else {}), **after}

    def to_json(self) -> dict[str, Any]:
        figures = _json_each(_to_json)
        after = figures(next(iter(self.after.values()))) if len(self.after) == 1 else _json_each(figures)(self.after)
        out = {**to_fields(self, before=figures, comparison=_to_json,
                           comparisons=lambda cs: [c.to_json() for c in cs]), "after": after}
        if self.comparison is None:
            del out["comparison"]  # demos of one variant never had this key
        for key in ("comparisons", "methods"):  # nor these, before methods
            if not out[key]:
                del out[key]
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "demo summary") -> DemoSummary:
        figures = _each(Figure.from_json)
        after = data.get("after") if isinstance(data, Mapping) else None
        if isinstance(after, Mapping):
            stages = {k: v for k, v in after.items() if isinstance(v, Mapping)}
            after = {"after": after} if is_figures(after) else stages
            data = {**data, "after": after}
        return _read_fields(cls, data, where, before=figures, after=_each(figures),
                            comparison=_optional(Comparison.from_json), comparisons=_list(Comparison.from_json),
                            methods=_object(), model_identity=_optional(_object()),
                            trained_identity=_object())
