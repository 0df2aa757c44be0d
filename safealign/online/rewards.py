"""Reward and cost sources for online training: judges, reward models, Python callables; weighted sums.

Every source returns one finite float per scored completion. A source that raises, returns the wrong
number of values, a non-number or NaN/inf stops training with a :class:`RewardError` naming the source
and the step (docs/online.md, "Bad input"); any real number counts (numpy's too), a bool does not. Empty
completions are never shown to a source: they score the configured floor (``empty_reward``, and no more than the
lowest real completion of their prompt; a cost of 0) and are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from safealign.errors import UserError
from safealign.online.config import REWARD_IF_DEFAULT, SourceConfig
from safealign.registry import import_callable
from safealign.types import Behavior, Completion, Message


class RewardError(UserError):
    """A reward or cost source misbehaved at ``step``; the message names the source."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class Batch:
    """What sources score: one entry per completion."""

    prompts: list[tuple[Message, ...]]
    texts: list[str]
    harmful: list[bool | None]


class Source:
    """One configured source: ``fn(batch) -> list[float]`` on the prompts ``spec.apply_to`` selects, weighted
    by ``spec.weight``."""

    def __init__(self, spec: SourceConfig, fn: Callable[[Batch], Sequence[Any]]) -> None:
        self.spec = spec
        self.fn = fn
        self.label = spec.label

    def applies(self, harmful: bool | None) -> bool:
        return self.spec.apply_to == "all" or (harmful is True) == (self.spec.apply_to == "harmful")

    def scores(self, batch: Batch, step: int, what: str = "reward") -> Tensor:
        """Raw scores ``(N,)``; 0 for completions outside ``apply_to`` (never shown to the source)."""
        chosen = [i for i, flag in enumerate(batch.harmful) if self.applies(flag)]
        out = torch.zeros(len(batch.texts), dtype=torch.float32)
        if not chosen:
            return out
        sub = Batch([batch.prompts[i] for i in chosen], [batch.texts[i] for i in chosen],
                    [batch.harmful[i] for i in chosen])
        where = f"{what} source {self.label!r} ({self.spec.kind}) at step {step}"
        try:
            values = self.fn(sub)
        except UserError:
            raise
        except Exception as exc:  # a user's function: name it, keep the cause
            raise RewardError(f"{where} raised {type(exc).__name__}: {exc}", step) from exc
        out[chosen] = _checked(values, len(chosen), where, step)
        return out


def _checked(values: Any, n: int, where: str, step: int) -> Tensor:
    if isinstance(values, Tensor):
        values = values.detach().cpu().reshape(-1).tolist() if values.dim() <= 1 else values.tolist()
    try:
        values = list(values)
    except TypeError:
        raise RewardError(f"{where} returned {type(values).__name__}, not a list of {n} numbers", step) from None
    if len(values) != n:
        raise RewardError(f"{where} returned {len(values)} values for {n} completions", step)
    numbers = []
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, Real):  # numpy's floats and ints are Real
            raise RewardError(f"{where} returned {type(value).__name__} {value!r} for completion {i}, not a number",
                              step)
        numbers.append(float(value))
    bad = [i for i, v in enumerate(numbers) if not math.isfinite(v)]
    if bad:
        raise RewardError(f"{where} returned non-finite values ({numbers[bad[0]]}) for completion(s) {bad[:5]}", step)
    return torch.tensor(numbers, dtype=torch.float32)


def build_sources(specs: Sequence[SourceConfig], device: Any = None, what: str = "reward") -> list[Source]:
    """The sources of ``specs``, as rewards or (``what="cost"``) Safe-RLHF costs: a reward-model folder must hold
    a model of that kind."""
    sources = [Source(spec, _build(spec, device, what)) for spec in specs]
    labels = [s.label for s in sources]
    for i, source in enumerate(sources):  # two sources of one name keep apart in the metrics
        if labels.count(source.label) > 1:
            source.label = f"{source.label}#{i}"
    return sources


def _build(spec: SourceConfig, device: Any, what: str) -> Callable[[Batch], Sequence[Any]]:
    if spec.kind == "judge":
        return _judge_fn(spec, what)
    if spec.kind == "reward_model":
        return _reward_model_fn(spec, device, what)
    return _callable_fn(resolve_callable(spec.path or ""), spec.params)


def _judge_fn(spec: SourceConfig, what: str) -> Callable[[Batch], list[float]]:
    from safealign.eval.judges.base import build_judge

    judge = build_judge(spec.name, dict(spec.params))
    wanted = (spec.reward_if or REWARD_IF_DEFAULT[what]) == "harmful"  # a spec the config never validated

    def score(batch: Batch) -> list[float]:
        behaviors = [Behavior(id=str(i), behavior=_last_user(p)) for i, p in enumerate(batch.prompts)]
        verdicts = judge(behaviors, [Completion(text) for text in batch.texts])
        unscored = [i for i, v in enumerate(verdicts) if v.harmful is None]
        if unscored:
            first = verdicts[unscored[0]]
            raise ValueError(f"judge left {len(unscored)} completion(s) unscored (first: {first.error or first.raw})")
        return [float(v.harmful == wanted) for v in verdicts]

    return score


def _reward_model_fn(spec: SourceConfig, device: Any, what: str) -> Callable[[Batch], list[float]]:
    from safealign.eval.reward_model import check_kind, load_reward_model, score_texts, scoring_lengths

    check_kind(spec.path or "", what, f"{what} source {spec.label!r}")  # a cost scored as a reward flips its sign
    model, tokenizer, meta = load_reward_model(spec.path or "", device=device)
    batch_size, lengths = int(spec.params.get("batch_size", 8)), scoring_lengths(meta)
    return lambda batch: score_texts(model, tokenizer, batch.prompts, batch.texts, batch_size=batch_size, **lengths)


def _callable_fn(fn: Callable[..., Any], params: dict[str, Any]) -> Callable[[Batch], Any]:
    return lambda batch: fn([_last_user(p) for p in batch.prompts], batch.texts, batch.harmful, **params)


def resolve_callable(path: str) -> Callable[..., Any]:
    """``package.module:function`` or ``package.module.function`` → the function (a UserError otherwise)."""
    return import_callable(path, "callable reward")


def _last_user(prompt: tuple[Message, ...]) -> str:
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


@dataclass(frozen=True)
class Scored:
    """Combined scores ``(N,)`` and each source's raw scores, with the empty completions marked."""

    total: Tensor
    per_source: dict[str, Tensor]
    empty: Tensor  # (N,) bool


def is_empty(text: str) -> bool:
    """The one rule for an empty completion (nothing but whitespace): never shown to a source, it scores the
    configured floor instead (the policy's samples and the reference's LSC samples alike)."""
    return not text.strip()


def combine(sources: Sequence[Source], batch: Batch, step: int, *, empty_value: float, what: str = "reward",
            lsc_baselines: dict[str, Tensor] | None = None, groups: Sequence[int] | None = None) -> Scored:  # fmt: skip
    """``Σ_s w_s·r_s`` over non-empty completions (``empty_value`` for empty ones). ``lsc_baselines``:
    per source, r_ref(x) per completion; those sources score ``log σ(r − r_ref)`` (LSC) on the prompts their
    ``apply_to`` selects, 0 elsewhere. A reward's flat ``empty_value`` is no floor when real completions can score
    below it (LSC scores run to −∞, a reward model's to any real number): an empty completion's reward is no more
    than the lowest non-empty completion's of its group (``groups``: the prompt each completion was sampled for;
    default, the whole batch is one group), so it never scores above a real answer of its prompt. A cost
    (``what="cost"``) keeps ``empty_value``."""
    empty = torch.tensor([is_empty(text) for text in batch.texts], dtype=torch.bool)
    keep = [i for i, e in enumerate(empty.tolist()) if not e]
    sub = Batch([batch.prompts[i] for i in keep], [batch.texts[i] for i in keep], [batch.harmful[i] for i in keep])
    total = torch.full((len(batch.texts),), float(empty_value))
    per_source: dict[str, Tensor] = {}
    partial = torch.zeros(len(keep))
    for source in sources:
        raw = source.scores(sub, step, what) if keep else torch.zeros(0)
        if lsc_baselines is not None and source.label in lsc_baselines:
            raw = _lsc(source, raw, lsc_baselines[source.label][keep], sub.harmful)
        full = torch.full((len(batch.texts),), float("nan"))
        full[keep] = raw
        per_source[source.label] = full
        partial += source.spec.weight * raw
    total[keep] = partial
    if what == "reward":
        total = _below_real_completions(total, empty, groups)
    return Scored(total, per_source, empty)


def _lsc(source: Source, raw: Tensor, baseline: Tensor, harmful: list[bool | None]) -> Tensor:
    """``log σ(r − r_ref)`` where the source applies; 0 outside its ``apply_to``, as without LSC (the raw 0
    there would otherwise score ``log σ(−r_ref)``)."""
    inside = torch.tensor([source.applies(flag) for flag in harmful], dtype=torch.bool)
    return torch.where(inside, torch.nn.functional.logsigmoid(raw - baseline), torch.zeros_like(raw))


def _below_real_completions(total: Tensor, empty: Tensor, groups: Sequence[int] | None) -> Tensor:
    """``total`` with each empty completion lowered to the lowest non-empty score of its group where that is
    lower (a group of empty completions only keeps ``empty_value``)."""
    group = torch.tensor(list(groups)) if groups is not None else torch.zeros(len(total), dtype=torch.long)
    out = total.clone()
    for g in group[empty].unique().tolist():
        real = (group == g) & ~empty
        if real.any():
            rows = (group == g) & empty
            out[rows] = torch.clamp(out[rows], max=float(total[real].min()))
    return out
