"""Perplexity filter (Jain et al. 2023, arXiv 2309.00614; Alon & Kamfonas 2023, arXiv 2308.14132).

The scorer LM reads the last user message alone (the attack string lives there; no chat template) and
gives ``logPPL(x) = −(1/T) Σ_t log p(x_t | x_<t)``; the windowed variant takes the largest mean NLL
over any ``window`` consecutive tokens (an optimised suffix is a short gibberish stretch that the whole
prompt's mean would dilute). A prompt longer than the scorer's context (GPT-2: 1024 positions) is
scored with a sliding window, every token with at least half that context before it, so it is filtered
like any other prompt instead of failing the run. A prompt scoring above the threshold τ is refused
without reaching the model. τ is either given or calibrated on benign prompts to a target
false-positive rate: the smallest τ that rejects at most ``floor(fpr·n)`` of the n benign prompts
(docs/defenses.md). Fluent attacks (PAIR, PAP, templates) pass by construction; that is the point of
measuring it.

Non-finite numbers: a prompt with an infinite log-perplexity (a token the scorer gives probability 0) or a
NaN one (the scorer's logits overflowed) is always refused, whatever τ. τ itself must be finite: a given
one that is not is a UserError, and so is calibration that cannot give one (a NaN calibration score, or
more infinite calibration scores than the fpr allows to reject).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from safealign.errors import UserError
from safealign.eval.backends.base import Conversation, GenerationParams
from safealign.eval.defenses.base import Answer, Defense, bare_model, kept_params, last_user_index, refusal_answer


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
    nan = sum(math.isnan(s) for s in scores)
    if nan:
        raise UserError(f"perplexity filter: the scorer gave NaN log-perplexity for {nan} of {len(scores)} "
                        "calibration prompts (overflowing logits? try dtype float32); no threshold can be set")
    ordered = sorted(scores)
    allowed = math.floor(fpr * len(ordered) + 1e-9)
    tau = ordered[len(ordered) - allowed - 1]
    if not math.isfinite(tau):
        infinite = sum(not math.isfinite(s) for s in ordered)
        raise UserError(f"perplexity filter: {infinite} of {len(ordered)} calibration prompts have infinite "
                        f"log-perplexity, more than the {allowed} that fpr={fpr} allows to reject, so no finite "
                        "threshold exists; check the calibration prompts and scorer, or set threshold")
    return tau


def window_score(nll: Sequence[float], window: int | None) -> float:
    """Mean NLL over all tokens, or the largest mean over ``window`` consecutive tokens (all tokens when
    the prompt is shorter than the window). Any infinite NLL makes it inf (NaN: NaN), whatever the window. No
    NLL (no token was scored: an empty message, or one token and no BOS) scores 0: it passes the filter (unless a given
    threshold is negative), there being no text for an attack to hide in."""
    if not nll:
        return 0.0
    if not all(math.isfinite(v) for v in nll):  # a running window sum would turn inf - inf into NaN
        return math.nan if any(math.isnan(v) for v in nll) else math.inf
    if window is None or len(nll) <= window:
        return sum(nll) / len(nll)
    sums = [sum(nll[:window])]
    for i in range(window, len(nll)):
        sums.append(sums[-1] + nll[i] - nll[i - window])
    return max(sums) / window


def token_nlls(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 16,
               max_positions: int | None = None) -> list[list[float]]:  # fmt: skip
    """Per-token NLL of each text on its own (the scorer's BOS prepended when it has one, so the first
    token is scored too; otherwise the first token has no context and is not scored). A text longer than
    the scorer's ``max_positions`` is scored with a sliding window (:func:`strided_nlls`). A text with no
    token at all (empty, and a scorer without BOS) has no NLLs and never reaches the scorer: a batch of
    only such rows would be an empty forward pass."""
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id
        rows.append(([bos] if bos is not None and (not ids or ids[0] != bos) else []) + ids)
    out: dict[int, list[float]] = {i: [] for i, r in enumerate(rows) if not r}
    fits = [i for i, r in enumerate(rows) if r and (max_positions is None or len(r) <= max_positions)]
    for start in range(0, len(fits), batch_size):
        chunk = fits[start : start + batch_size]
        out.update(zip(chunk, _scored(model, tokenizer, [rows[i] for i in chunk])))
    for i in set(range(len(rows))) - set(fits) - set(out):
        out[i] = strided_nlls(model, tokenizer, rows[i], max_positions)  # type: ignore[arg-type]
    return [out[i] for i in range(len(rows))]


def strided_nlls(model: Any, tokenizer: Any, ids: Sequence[int], max_positions: int) -> list[float]:
    """Per-token NLL of a sequence longer than the scorer's context: windows of ``max_positions`` tokens
    moved by half of it; each window scores only the tokens no earlier window scored, so every token is
    scored once, with at least ``max_positions // 2`` tokens of context (the fixed-length-model perplexity
    of the transformers docs)."""
    nll: list[float] = []
    done = 1  # position 0 is context only
    for begin in window_starts(len(ids), max_positions):
        end = min(begin + max_positions, len(ids))
        [window] = _scored(model, tokenizer, [list(ids[begin:end])], first=done - begin)
        nll += window
        done = end
    return nll


def window_starts(length: int, max_positions: int | None) -> range:
    """Where the scorer's forward passes over ``length`` tokens start: one pass when they fit, else
    windows of ``max_positions`` moved by half of it until one reaches the end."""
    if max_positions is None or length <= max_positions:
        return range(1)
    stride = max(1, max_positions // 2)
    return range(0, length - max_positions + stride, stride)


def _scored(model: Any, tokenizer: Any, rows: Sequence[list[int]], first: int = 1) -> list[list[float]]:
    """NLL of each row's tokens from position ``first`` on, the positions before being context only."""
    from safealign.train.logps import token_logps

    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    scored = mask.clone()
    scored[:, :first] = 0
    with torch.no_grad():
        lp = token_logps(model, ids, mask, scored)  # (N, T), log p(x_t | x_<t) at t, 0 where not scored
    return [[-float(v) for v in lp[i, first : len(r)]] for i, r in enumerate(rows)]


class PerplexityFilter(Defense):
    config_class = PerplexityFilterConfig
    file_params = ("calibration",)
    model_params = ("scorer",)

    def __init__(self, config: PerplexityFilterConfig) -> None:
        super().__init__(config)
        if config.window is not None and config.window < 1:
            raise UserError(f"defense 'perplexity_filter': window must be >= 1 tokens, got {config.window}")
        if not 0 <= config.fpr < 1:
            raise UserError(f"defense 'perplexity_filter': fpr must be in [0, 1), got {config.fpr}")
        if config.threshold is not None and not math.isfinite(config.threshold):
            raise UserError(f"defense 'perplexity_filter': threshold must be a finite number, got {config.threshold}")
        self.model: Any = None
        self.tokenizer: Any = None
        self.threshold: float | None = config.threshold
        self.calibrated_on = 0

    def backends(self) -> tuple[str, ...] | None:
        return ("hf",) if self.config.scorer == "target" else None

    def backend_error(self, backend: str) -> str:
        return ("defense 'perplexity_filter': scorer=target needs the hf backend (the scorer reads token log-probs); "
                f"backend {backend} gives none: set scorer to a model spec, e.g. smollm2-135m-instruct")

    def prepare(self, inner: Any, params: GenerationParams) -> None:
        if self.config.scorer == "target":
            bare = bare_model(inner)
            self.model, self.tokenizer = getattr(bare, "model", None), getattr(bare, "tokenizer", None)
            if not hasattr(self.model, "forward") or self.tokenizer is None:  # a handed-in chat model
                raise UserError(self.backend_error(type(bare).__name__))
        else:
            from safealign.models.load import load_model

            self.model, self.tokenizer = load_model(self.config.scorer)
        if self.threshold is None:
            texts = calibration_texts(self.config.calibration, self.config.calibration_limit)
            self.threshold = calibrate_threshold(self.scores(texts), self.config.fpr)
            self.calibrated_on = len(texts)

    @property
    def max_positions(self) -> int | None:
        """The scorer's context length (None: unknown); longer prompts are scored in windows."""
        from safealign.models.load import context_length

        return context_length(self.model)

    def scores(self, texts: Sequence[str]) -> list[float]:
        return [score for score, _ in self.scored(texts)]

    def scored(self, texts: Sequence[str]) -> list[tuple[float, int]]:
        """``(score, the scorer's forward passes)`` per text."""
        limit = self.max_positions
        nlls = token_nlls(self.model, self.tokenizer, texts, self.config.batch_size, limit)
        # len(nll) + 1 tokens were read (BOS included; position 0 is context only)
        return [(window_score(n, self.config.window), len(window_starts(len(n) + 1, limit))) for n in nlls]

    def respond(self, inner: Any, conversations: Sequence[Conversation], params: GenerationParams) -> list[Answer]:
        scored = self.scored([c[last_user_index(c)]["content"] for c in conversations])
        keep = [i for i, (s, _) in enumerate(scored) if math.isfinite(s) and s <= self.threshold]
        kept = kept_params(params, keep)
        completions = dict(zip(keep, inner.generate([conversations[i] for i in keep], kept))) if keep else {}
        answers = []
        for i, (score, passes) in enumerate(scored):
            if i in completions:
                step = self.step("pass", [completions[i]], own_passes=passes, score=score)
                answers.append(Answer(completions[i], step))
            else:
                reason = (f"log-perplexity {score:.3f} > threshold {self.threshold:.3f}" if math.isfinite(score)
                          else f"log-perplexity {score} (not finite) is refused whatever the threshold "
                          f"{self.threshold:.3f}")  # fmt: skip
                answers.append(refusal_answer(self.step("refuse", own_passes=passes, score=score, refusal=reason)))
        return answers

    def fitted(self) -> dict[str, Any] | None:
        if self.config.threshold is not None:
            return None
        return {"threshold": self.threshold, "calibrated_on": self.calibrated_on}

    def use_fitted(self, values: dict[str, Any]) -> None:
        threshold = float(values["threshold"])
        if not math.isfinite(threshold):
            raise ValueError(f"threshold {threshold} is not finite")
        self.threshold, self.calibrated_on = threshold, int(values["calibrated_on"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threshold": self.threshold, "calibrated_on": self.calibrated_on,
                "scorer_max_positions": self.max_positions}  # fmt: skip


def calibration_texts(source: str, limit: int | None) -> list[str]:
    """Benign prompts for calibration: the built-in benign train split (never the held-out test prompts),
    or a benign prompt file (its benign split, or every row; safealign/eval/benign.py)."""
    if source == "builtin":
        from safealign.data.builtin import load_prompts

        texts = [p.prompt for p in load_prompts("benign", split="train")]
    else:
        from safealign.eval.benign import named_benign_file

        texts = [p.text for p in named_benign_file(source, "perplexity_filter calibration").benign]
    return texts[:limit] if limit else texts
