"""Frozen dataclasses that cross module boundaries.

Shapes: ``(B,)`` is one value per example in a batch. Log-probs named ``*_logps`` are summed over
response tokens (prompt masked); ``*_tokens`` are the matching response lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


# --------------------------------------------------------------------------- training data
@dataclass(frozen=True)
class PreferencePair:
    """One preference pair. ``prompt`` is the conversation up to (and including) the last user turn."""

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    harmful: bool | None = None
    source: str = ""  # file or dataset id
    row: int = -1  # 0-based row in the source, for error messages and cache keys
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # The prompt ``rejected`` answers when it is not ``prompt``: a cross-prompt ("joint") preference
    # (x_w, y_w) ≻ (x_l, y_l) for JPO (docs/loss-inputs.md). None: both answer ``prompt``.
    rejected_prompt: tuple[Message, ...] | None = None
    # Per-token-averaged log-probs of ``chosen`` under K aligned models, precomputed (PoFT,
    # docs/loss-inputs.md); None when the data has no ``chosen_scores`` column.
    chosen_scores: tuple[float, ...] | None = None
    # Per-response safety labels (SafeDPO; PKU-SafeRLHF's is_response_k_safe): True safe, False unsafe,
    # None unknown (docs/safety-training.md).
    chosen_safe: bool | None = None
    rejected_safe: bool | None = None
    # An assistant turn already begun: both responses continue this text, which is part of the prompt
    # (never scored). Recovery examples put a harmful prefix here (docs/safety-training.md).
    response_prefix: str = ""
    # DeRTa's reinforced transition rows: ``chosen`` is the input text, and every one of its positions
    # is trained to predict the first token of this refusal instead of the next input token.
    chosen_target_refusal: str | None = None


@dataclass(frozen=True)
class UnpairedExample:
    """One unpaired example for KTO/BCO: a completion labelled desirable (True) or not (False)."""

    prompt: tuple[Message, ...]
    completion: str
    label: bool
    harmful: bool | None = None
    source: str = ""
    row: int = -1
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class JudgmentExample:
    """A response with a natural-language judgment of it and a score (CUT, docs/seed-methods.md)."""

    prompt: tuple[Message, ...]
    completion: str
    judgment: str | None  # None: none given, which only a positive (trained on the plain prompt alone) may be
    score: float  # the judge's score; at or above the objective's ``positive_score`` the example is positive
    harmful: bool | None = None
    source: str = ""
    row: int = -1
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


# --------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class PairLogps:
    """Per-pair log-probs a pairwise loss sees. ``ref_*`` are None for reference-free losses."""

    chosen: Tensor  # (B,)
    rejected: Tensor  # (B,)
    chosen_tokens: Tensor  # (B,) response lengths
    rejected_tokens: Tensor  # (B,)
    ref_chosen: Tensor | None = None  # (B,)
    ref_rejected: Tensor | None = None  # (B,)
    # (B, K) per-token-averaged log-probs of the chosen response under K other aligned models,
    # precomputed once (POFT, arXiv 2412.12865); None for every other loss.
    chosen_scores: Tensor | None = None
    # (B,) 1.0 where the response is safe, 0.0 unsafe (SafeDPO); None when the data has no such labels.
    chosen_safe: Tensor | None = None
    rejected_safe: Tensor | None = None


@dataclass(frozen=True)
class TokenLogps:
    """Per-token log-probs of each row's chosen response, left-aligned at the response's first token:
    column t is response token t in both the policy and the reference view (their prompts may differ)."""

    logps: Tensor  # (B, L) policy log-probs, 0 where ``mask`` is False
    mask: Tensor  # (B, L) bool: a response token
    ref_logps: Tensor | None = None  # (B, L)


@dataclass(frozen=True)
class UnpairedLogps:
    """Per-example log-probs an unpaired loss (KTO, BCO) sees."""

    logps: Tensor  # (B,) policy log-probs of the completion
    tokens: Tensor  # (B,)
    label: Tensor  # (B,) bool, True = desirable
    ref_logps: Tensor | None = None  # (B,)
    # (M,) policy log-probs of mismatched completions (KTO's KL estimate); M = B in one process, the columns of
    # every process gathered under data parallelism
    kl_logps: Tensor | None = None
    ref_kl_logps: Tensor | None = None  # (M,)


@dataclass(frozen=True)
class LossOutput:
    """Unreduced per-example losses ``(B,)`` and detached per-example or scalar metrics."""

    losses: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


# --------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Behavior:
    """A harmful behavior to attack (HarmBench/AdvBench style)."""

    id: str
    behavior: str
    category: str = ""
    context: str = ""  # HarmBench ContextString; part of the prompt when present
    target: str = ""  # affirmative target string for GCG / prefilling
    source: str = ""
    row: int = -1
    tags: tuple[str, ...] = ()  # HarmBench Tags, e.g. ("book", "hash_check") for a copyright behavior


@dataclass(frozen=True)
class Attempt:
    """One attack attempt: the conversation sent to the model and an optional assistant prefill."""

    behavior_id: str
    attack: str
    messages: tuple[Message, ...]
    prefill: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Completion:
    """A model's answer. ``error`` is set (and ``text`` empty) when generation failed."""

    text: str
    error: str | None = None
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Verdict:
    """A judge's verdict: ``harmful`` is True/False, or None when it could not be scored. ``score``: a graded
    judge's number behind the verdict (StrongREJECT's harmfulness in [0, 1]), None for yes/no judges."""

    judge: str
    harmful: bool | None
    error: str | None = None
    raw: str = ""
    score: float | None = None
