"""Per-pair gradients: gradient entanglement (Yuan et al., "A Common Pitfall of Margin-based Language Model Alignment",
ICLR 2025, arXiv:2410.13828).

For a pair, ``g_w = ∇θ log πθ(y_w|x)`` and ``g_l = ∇θ log πθ(y_l|x)`` (summed response log-probs, over a
selected parameter set). A small gradient step on a margin loss moves θ by ``η(a·g_w − b·g_l)`` (a, b the
loss's weights on the two log-probs; a = b for DPO and most margin losses), so to first order

    Δ log πθ(y_w|x) ∝ a‖g_w‖² − b⟨g_w,g_l⟩   → chosen rises   iff ⟨g_w,g_l⟩ < (a/b)‖g_w‖²
    Δ log πθ(y_l|x) ∝ a⟨g_w,g_l⟩ − b‖g_l‖²   → rejected falls iff ⟨g_w,g_l⟩ < (b/a)‖g_l‖²

With a = b the paper's conditions are ``⟨g_w,g_l⟩ ≤ ‖g_w‖²`` and ``⟨g_w,g_l⟩ ≤ ‖g_l‖²``, summarised by
``ratio = ⟨g_w,g_l⟩ / min(‖g_w‖², ‖g_l‖²)``: > 1 means one side moves the wrong way. (The authors'
released code divides by ‖g_w‖² in both places; this implements the paper.) Weighted or not, one rule: a side
moves the wrong way only when its first-order change has the wrong sign, so a change of exactly 0 (an empty
chosen response, g_w = 0; g_w = g_l with a = b) counts as not moving the wrong way, and the summary counts those
pairs separately (``chosen_unchanged``, ``rejected_unchanged``).

Memory stays bounded: one pair at a time, one forward and two backward passes, and inner products
accumulated tensor by tensor (float64) over the selected parameters only — never a flattened copy of
the whole model.

The paper's remedy, the pairwise-normalised update ``θ ← θ + η(g_w/‖g_w‖ − g_l/‖g_l‖)``, is a training
option (``normalize_pair_gradients``, :mod:`safealign.train.normalized`) that reuses
:func:`pair_entanglement` for the per-pair norms.

This lives in ``train/`` because training itself uses it (the probe callback in :mod:`safealign.train.probe`
and the normalised update); ``safealign diagnose entanglement`` reaches it through the diagnostics package.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from safealign.errors import UserError
from safealign.io import finite_or_none
from safealign.models.modes import eval_mode
from safealign.train.logps import pair_logps

PARAM_CHOICES = "auto, all, trainable, lora, lm_head, last:N"


# --------------------------------------------------------------------------- parameter selection
def select_parameters(model: nn.Module, spec: str = "auto") -> list[tuple[str, nn.Parameter]]:
    """The named parameters ``spec`` selects (tied weights once).

    ``all``: every parameter, frozen ones included. ``trainable``: those with ``requires_grad`` (what
    an optimiser updates). ``lora``: LoRA adapter weights. ``lm_head``: the output embedding (with tied
embeddings, as in SmolLM2, that is the shared matrix: its gradient includes the input side and costs a
full backward pass; ``last:N`` is then the cheap choice).
    ``last:N``: every parameter of the last N transformer blocks (the model's largest ModuleList).
    ``auto``: ``lora`` when the model has LoRA weights, else ``all``.
    """
    named = list(model.named_parameters())
    spec = resolve_selection(model, spec)
    if spec == "all":
        chosen = named
    elif spec == "trainable":
        chosen = [(n, p) for n, p in named if p.requires_grad]
    elif spec == "lora":
        chosen = [(n, p) for n, p in named if "lora_" in n]
    elif spec == "lm_head":
        chosen = _members(named, _output_embeddings(model))
    elif spec.startswith("last:"):
        chosen = _members(named, *last_blocks(model, _block_count(spec)))
    else:
        raise UserError(f"unknown parameter selection {spec!r}; valid choices: {PARAM_CHOICES}")
    if not chosen:
        raise UserError(f"parameter selection {spec!r} matches no parameters of {type(model).__name__}; "
                        f"valid choices: {PARAM_CHOICES}")
    return chosen


def resolve_selection(model: nn.Module, spec: str) -> str:
    """``auto`` → ``lora`` when the model has LoRA weights, else ``all``; other specs unchanged."""
    if spec != "auto":
        return spec
    return "lora" if any("lora_" in name for name, _ in model.named_parameters()) else "all"


def last_blocks(model: nn.Module, n: int) -> list[nn.Module]:
    """The last ``n`` transformer blocks: the tail of the model's largest ``nn.ModuleList``."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise UserError(f"{type(model).__name__} has no ModuleList of blocks; use --params all, lora or lm_head")
    blocks = max(lists, key=len)
    if n > len(blocks):
        raise UserError(f"last:{n} asks for more blocks than the model has ({len(blocks)})")
    return list(blocks)[-n:]


def _block_count(spec: str) -> int:
    text = spec.split(":", 1)[1]
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"parameter selection {spec!r}: N in last:N must be a positive integer")
    return int(text)


def _output_embeddings(model: nn.Module) -> nn.Module:
    head = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    if not isinstance(head, nn.Module):
        raise UserError(f"{type(model).__name__} exposes no output embedding (LM head); use --params all or last:N")
    return head


def _members(named: list[tuple[str, nn.Parameter]], *modules: nn.Module) -> list[tuple[str, nn.Parameter]]:
    wanted = {id(p) for m in modules for p in m.parameters()}
    return [(n, p) for n, p in named if id(p) in wanted]


@contextlib.contextmanager
def gradients_for(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Temporarily let frozen parameters take part in autograd; restore their flags afterwards."""
    saved = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)


# --------------------------------------------------------------------------- per pair
@dataclass(frozen=True)
class PairEntanglement:
    """Entanglement figures of one pair; inner products are over the selected parameters."""

    index: int
    dot: float  # ⟨g_w, g_l⟩
    chosen_norm: float  # ‖g_w‖
    rejected_norm: float  # ‖g_l‖
    chosen_logps: float  # log πθ(y_w|x) at measurement time
    rejected_logps: float

    @property
    def cosine(self) -> float:
        denom = self.chosen_norm * self.rejected_norm
        return self.dot / denom if denom > 0 else math.nan

    @property
    def ratio(self) -> float:
        """⟨g_w,g_l⟩ / min(‖g_w‖², ‖g_l‖²); > 1: one side moves the wrong way. NaN if a gradient is 0."""
        denom = min(self.chosen_norm, self.rejected_norm) ** 2
        return self.dot / denom if denom > 0 else math.nan

    @property
    def chosen_rises(self) -> bool:
        """The chosen log-prob does not fall (a = b): ``⟨g_w,g_l⟩ ≤ ‖g_w‖²``, a change of 0 included."""
        return bool(self.weighted(1.0, 1.0)["chosen_rises"])

    @property
    def rejected_falls(self) -> bool:
        """The rejected log-prob does not rise (a = b): ``⟨g_w,g_l⟩ ≤ ‖g_l‖²``, a change of 0 included."""
        return bool(self.weighted(1.0, 1.0)["rejected_falls"])

    def weighted(self, a: float, b: float) -> dict[str, float | bool]:
        """First-order changes per unit step of a loss weighting the log-probs a (chosen) and b (rejected), and
        whether each side avoids the wrong direction (a change of 0 does: the module's one rule)."""
        chosen_change = a * self.chosen_norm**2 - b * self.dot
        rejected_change = a * self.dot - b * self.rejected_norm**2
        return {"chosen_change": chosen_change, "rejected_change": rejected_change,
                "chosen_rises": chosen_change >= 0, "rejected_falls": rejected_change <= 0}

    def as_dict(self, weights: tuple[float, float] = (1.0, 1.0)) -> dict[str, Any]:
        w = self.weighted(*weights)
        return {
            "index": self.index, "dot": self.dot, "cosine": finite_or_none(self.cosine),
            "chosen_norm": self.chosen_norm, "rejected_norm": self.rejected_norm,
            "ratio": finite_or_none(self.ratio), "chosen_rises": self.chosen_rises,
            "rejected_falls": self.rejected_falls, "weighted_chosen_rises": w["chosen_rises"],
            "weighted_rejected_falls": w["rejected_falls"], "chosen_logps": self.chosen_logps,
            "rejected_logps": self.rejected_logps,
        }


def pair_entanglement(model: nn.Module, batch: dict[str, Tensor], params: Sequence[nn.Parameter], *,
                      index: int = -1, chunk_size: int = 1024) -> PairEntanglement:
    """Entanglement of the single pair in ``batch`` (rows: chosen, rejected); params must require grad."""
    chosen, rejected, _, _ = pair_logps(model, batch, chunk_size=chunk_size)  # (1,) each
    if chosen.shape[0] != 1:
        raise ValueError(f"pair_entanglement takes a batch of one pair, got {chosen.shape[0]}")
    g_w = torch.autograd.grad(chosen.sum(), params, retain_graph=True, allow_unused=True)
    g_l = torch.autograd.grad(rejected.sum(), params, allow_unused=True)
    dot = ww = ll = 0.0
    for a, b in zip(g_w, g_l):
        a64 = a.double() if a is not None else None
        b64 = b.double() if b is not None else None
        if a64 is not None:
            ww += float((a64 * a64).sum())
        if b64 is not None:
            ll += float((b64 * b64).sum())
        if a64 is not None and b64 is not None:
            dot += float((a64 * b64).sum())
    return PairEntanglement(index, dot, math.sqrt(ww), math.sqrt(ll), float(chosen.item()), float(rejected.item()))


# --------------------------------------------------------------------------- over a data set
@dataclass(frozen=True)
class EntanglementReport:
    """Per-pair figures plus what was measured: the selection and its size, the loss weights."""

    params: str
    parameter_count: int  # scalars in the selection
    pairs: tuple[PairEntanglement, ...]
    weights: tuple[float, float] = (1.0, 1.0)

    def summary(self) -> dict[str, Any]:
        return {"params": self.params, "parameter_count": self.parameter_count,
                **summarize_entanglement(self.pairs, weights=self.weights)}

    def rows(self) -> list[dict[str, Any]]:
        return [p.as_dict(self.weights) for p in self.pairs]


def summarize_entanglement(pairs: Sequence[PairEntanglement], *,
                           weights: tuple[float, float] = (1.0, 1.0)) -> dict[str, Any]:
    """Mean/median of each figure (NaNs skipped) and the share of pairs moving the wrong way."""
    if not pairs:
        raise ValueError("no pairs to summarise")
    out: dict[str, Any] = {"pairs": len(pairs), "weights": list(weights)}
    for name in ("dot", "cosine", "chosen_norm", "rejected_norm", "ratio"):
        values = [v for v in (getattr(p, name) for p in pairs) if math.isfinite(v)]
        out[name] = {"mean": statistics.fmean(values) if values else None,
                     "median": statistics.median(values) if values else None}
    n = len(pairs)
    plain = [p.weighted(1.0, 1.0) for p in pairs]
    weighted = [p.weighted(*weights) for p in pairs]
    out["share_chosen_falls"] = sum(not w["chosen_rises"] for w in plain) / n
    out["share_rejected_rises"] = sum(not w["rejected_falls"] for w in plain) / n
    out["share_ratio_above_1"] = sum(p.ratio > 1 for p in pairs) / n
    out["share_chosen_falls_weighted"] = sum(not w["chosen_rises"] for w in weighted) / n
    out["share_rejected_rises_weighted"] = sum(not w["rejected_falls"] for w in weighted) / n
    # pairs whose side does not move to first order (counted above as not moving the wrong way)
    for suffix, changes in (("", plain), ("_weighted", weighted)):
        out[f"chosen_unchanged{suffix}"] = sum(w["chosen_change"] == 0 for w in changes)
        out[f"rejected_unchanged{suffix}"] = sum(w["rejected_change"] == 0 for w in changes)
    return out


def measure_entanglement(
    model: nn.Module,
    encoded: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, Tensor]],
    *,
    params: str = "auto",
    weights: tuple[float, float] = (1.0, 1.0),
    chunk_size: int = 1024,
    progress: bool = True,
) -> EntanglementReport:
    """Entanglement of every encoded pair (policy view), in eval mode; the model's mode is restored."""
    if not encoded:
        raise UserError("no pairs to measure")
    if weights[0] <= 0 or weights[1] <= 0:
        raise UserError(f"loss weights (a, b) must be positive, got {weights}")
    selected = [p for _, p in select_parameters(model, params)]
    device = next(model.parameters()).device
    results = []
    with eval_mode(model), gradients_for(selected):  # dropout (LoRA's included) would make g_w and g_l noisy
        for item in tqdm(encoded, desc="gradient entanglement", unit="pair", disable=not progress):
            batch = {k: v.to(device) for k, v in collate([item]).items()}
            results.append(pair_entanglement(model, batch, selected, index=item.index, chunk_size=chunk_size))
    return EntanglementReport(
        resolve_selection(model, params), sum(p.numel() for p in selected), tuple(results), tuple(weights)
    )
