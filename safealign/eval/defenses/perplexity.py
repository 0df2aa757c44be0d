"""Perplexity filter (Jain et al. 2023, arXiv 2309.00614; Alon & Kamfonas 2023, arXiv 2308.14132).

The scorer LM reads the last user message alone (the attack string lives there; no chat template) and
gives ``logPPL(x) = −(1/T) Σ_t log p(x_t | x_<t)``; the windowed variant takes the largest mean NLL
over any ``window`` consecutive tokens (an optimised suffix is a short gibberish stretch that the whole
prompt's mean would dilute). A prompt scoring above the threshold τ is refused without reaching the
model. τ is either given or calibrated on benign prompts to a target false-positive rate: the smallest
τ that rejects at most ``floor(fpr·n)`` of the n benign prompts (docs/defenses.md). Fluent attacks
(PAIR, PAP, templates) pass by construction; that is the point of measuring it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from safealign.errors import UserError
from safealign.eval.backends.base import Conversation, GenerationParams
from safealign.eval.defenses.base import Answer, Defense, bare_model, last_user_index, refusal_answer


@dataclass(frozen=True)
class PerplexityFilterConfig:
    scorer: str = "target"  # "target": the evaluated HF model itself; else a load_model spec (any HF model)
    window: Optional[int] = None  # None: whole-prompt log-perplexity; N: max over windows of N tokens
    threshold: Optional[float] = None  # τ in nats per token; None: calibrate on `calibration` to `fpr`
    fpr: float = 0.05  # target false-positive rate on the calibration prompts
    calibration: str = "builtin"  # "builtin": the built-in benign train prompts; else a benign prompt file
    calibration_limit: Optional[int] = None  # first N calibration prompts
    batch_size: int = 16


def calibrate_threshold(scores: Sequence[float], fpr: float) -> float:
    """The smallest τ such that at most ``floor(fpr·n)`` of ``scores`` are above it (rejected)."""
    if not scores:
        raise UserError("perplexity filter: no calibration prompts to set the threshold from")
    if not 0 <= fpr < 1:
        raise UserError(f"perplexity filter: fpr must be in [0, 1), got {fpr}")
    ordered = sorted(scores)
    allowed = math.floor(fpr * len(ordered) + 1e-9)
    return ordered[len(ordered) - allowed - 1]


def window_score(nll: Sequence[float], window: int | None) -> float:
    """Mean NLL over all tokens, or the largest mean over ``window`` consecutive tokens (all tokens when
    the prompt is shorter than the window)."""
    if not nll:
        return 0.0
    if window is None or len(nll) <= window:
        return sum(nll) / len(nll)
    sums = [sum(nll[:window])]
    for i in range(window, len(nll)):
        sums.append(sums[-1] + nll[i] - nll[i - window])
    return max(sums) / window


def token_nlls(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 16) -> list[list[float]]:
    """Per-token NLL of each text on its own (the scorer's BOS prepended when it has one, so the first
    token is scored too; otherwise the first token has no context and is not scored)."""
    from safealign.train.logps import token_logps

    bos = tokenizer.bos_token_id
    out: list[list[float]] = []
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        rows = []
        for text in texts[start : start + batch_size]:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            rows.append(([bos] if bos is not None and (not ids or ids[0] != bos) else []) + ids)
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        scored = mask.clone()
        scored[:, 0] = 0  # position 0 is context only
        with torch.no_grad():
            lp = token_logps(model, ids, mask, scored)  # (N, T), log p(x_t | x_<t) at t, 0 where not scored
        for i, r in enumerate(rows):
            out.append([-float(v) for v in lp[i, 1 : len(r)]])
    return out


class PerplexityFilter(Defense):
    config_class = PerplexityFilterConfig

    def __init__(self, config: PerplexityFilterConfig) -> None:
        super().__init__(config)
        if config.window is not None and config.window < 1:
            raise UserError(f"defense 'perplexity_filter': window must be >= 1 tokens, got {config.window}")
        if not 0 <= config.fpr < 1:
            raise UserError(f"defense 'perplexity_filter': fpr must be in [0, 1), got {config.fpr}")
        self.model: Any = None
        self.tokenizer: Any = None
        self.threshold: float | None = config.threshold
        self.calibrated_on = 0

    def prepare(self, inner: Any, params: GenerationParams) -> None:
        if self.config.scorer == "target":
            bare = bare_model(inner)
            self.model, self.tokenizer = getattr(bare, "model", None), getattr(bare, "tokenizer", None)
            if not hasattr(self.model, "forward") or self.tokenizer is None:
                raise UserError("defense 'perplexity_filter': scorer=target needs the hf backend (the scorer reads "
                                f"token log-probs); backend {type(bare).__name__} gives none: set "
                                "scorer to a model spec, e.g. smollm2-135m-instruct")  # fmt: skip
        else:
            from safealign.models.load import load_model

            self.model, self.tokenizer = load_model(self.config.scorer)
        if self.threshold is None:
            texts = calibration_texts(self.config.calibration, self.config.calibration_limit)
            self.threshold = calibrate_threshold(self.scores(texts), self.config.fpr)
            self.calibrated_on = len(texts)

    def scores(self, texts: Sequence[str]) -> list[float]:
        nlls = token_nlls(self.model, self.tokenizer, texts, self.config.batch_size)
        return [window_score(n, self.config.window) for n in nlls]

    def respond(self, inner: Any, conversations: Sequence[Conversation], params: GenerationParams) -> list[Answer]:
        scores = self.scores([c[last_user_index(c)]["content"] for c in conversations])
        keep = [i for i, s in enumerate(scores) if s <= self.threshold]
        completions = dict(zip(keep, inner.generate([conversations[i] for i in keep], params))) if keep else {}
        answers = []
        for i, score in enumerate(scores):
            if i in completions:
                answers.append(Answer(completions[i], self.step("pass", [completions[i]], own_passes=1, score=score)))
            else:
                reason = f"log-perplexity {score:.3f} > threshold {self.threshold:.3f}"
                answers.append(refusal_answer(self.step("refuse", own_passes=1, score=score, refusal=reason)))
        return answers

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threshold": self.threshold, "calibrated_on": self.calibrated_on}


def calibration_texts(source: str, limit: int | None) -> list[str]:
    """Benign prompts for calibration: the built-in benign train split (never the held-out test prompts),
    or a benign prompt file (its benign split, or every row; safealign/eval/benign.py)."""
    if source == "builtin":
        from safealign.data.builtin import load_prompts

        texts = [p.prompt for p in load_prompts("benign", split="train")]
    else:
        from safealign.eval.benchmarks.loaders import read_benchmark
        from safealign.eval.benign import from_file

        texts = [p.text for p in from_file(read_benchmark(source), whole_file=True).benign]
    return texts[:limit] if limit else texts
