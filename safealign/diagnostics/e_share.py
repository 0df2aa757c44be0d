"""How much of E-DPO's training update the E-anchor changes (docs/findings.md, "How much of the update the
E-anchor changes").

DPO and E-DPO differ only in their reference columns: E-DPO scores the reference on the transformed prompt
x_s of a harmful pair (``ref_prompt_ids``), DPO on x. So on a harmful pair E-DPO's logit is
``z_E = z_DPO − β·gap`` (gap = the anchor gap, :mod:`safealign.diagnostics.anchor`), and the preference
term's gradient ``−β σ(−z) ∇(log π(y_w|x) − log π(y_l|x))`` weighs the pair by ``σ(−z_E)`` instead of
``σ(−z_DPO)``. The demo's objective adds an NLL term on the chosen response (``rpo`` = DPO + W·NLL), whose
gradient is the same for both variants. This measures, on one batch, the gradients of the batch mean of

    g_DPO = ∇ mean dpo(x; reference on x)        g_E = ∇ mean dpo(x; reference on x_s)
    g_NLL = ∇ mean sft(x)  (rpo's NLL term)      update of an E-DPO run: g_E + W·g_NLL

with the trainer's own pieces: ``pair_logps`` for the policy, ``compute_reference_columns`` for both
reference views, the registered ``dpo`` and ``sft`` losses. The E-change's share of the whole update is
``‖g_E − g_DPO‖ / ‖g_E + W·g_NLL‖``. Because AdamW's first step is ``lr·g/(|g|+ε)`` (no history yet; the
trainer's gradient clipping rescales g, which that step ignores), the same comparison is also made on that
step; at a trained adapter the optimizer's history is unknown, so there it only compares directions.
Gradients are over the selected parameters (LoRA weights when the model has them, else all), in eval mode
(no dropout), summed per group (harmful, benign) so each group's contribution to the batch mean is reported
too.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from safealign.diagnostics.anchor import changes_reference, reference_views
from safealign.errors import UserError
from safealign.io import finite_or_none
from safealign.losses import LossSpec, build_loss
from safealign.models.modes import eval_mode
from safealign.train.grads import gradients_for, resolve_selection, select_parameters
from safealign.train.logps import pair_logps
from safealign.types import LossOutput, PairLogps

TERMS = ("dpo", "e_dpo", "nll")
GROUPS = ("harmful", "benign")
Grad = list[Tensor]  # one tensor per selected parameter


@dataclass(frozen=True)
class EShare:
    """Per-group gradients of the three terms (each a group's contribution to the batch mean) and per-pair rows."""

    beta: float
    nll_weight: float
    params: str  # the resolved parameter selection
    parameter_count: int
    grads: dict[str, dict[str, Grad]]  # group -> term -> gradient (float32, on the model's device)
    rows: tuple[dict[str, Any], ...]  # per pair: index, group, z and σ(−z) under DPO and E-DPO, gap, NLL
    transformed_pairs: int  # pairs whose reference prompt differs from the policy's (0: E-DPO is DPO here)
    adam_epsilon: float = 1e-8

    def total(self, term: str) -> Grad:
        """The term's gradient of the whole batch mean: the groups' contributions summed."""
        parts = [self.grads[g][term] for g in GROUPS if g in self.grads]
        return [sum(tensors[1:], tensors[0].clone()) for tensors in zip(*parts)]

    def update(self, preference: str, grads: dict[str, Grad] | None = None) -> Grad:
        """The objective's gradient for a run of ``preference`` (dpo or e_dpo): preference + W·NLL."""
        terms = grads if grads is not None else {t: self.total(t) for t in TERMS}
        return [p + self.nll_weight * n for p, n in zip(terms[preference], terms["nll"])]

    def summary(self) -> dict[str, Any]:
        totals = {t: self.total(t) for t in TERMS}
        e_update, dpo_update = self.update("e_dpo", totals), self.update("dpo", totals)
        change = _norm(_sub(totals["e_dpo"], totals["dpo"]))
        step_e, step_dpo = (_adam_first_step(u, self.adam_epsilon) for u in (e_update, dpo_update))
        return {
            "beta": self.beta, "nll_weight": self.nll_weight, "params": self.params,
            "parameter_count": self.parameter_count, "pairs": len(self.rows),
            "transformed_pairs": self.transformed_pairs,
            **_norms(totals, change),
            "update_norm": _norm(e_update),  # ‖g_E + W·g_NLL‖: an E-DPO run's gradient
            "e_share": _ratio(change, _norm(e_update)),
            "cosine_e_dpo": _cosine(totals["e_dpo"], totals["dpo"]),
            "cosine_updates": _cosine(e_update, dpo_update),
            "nll_to_preference": _ratio(self.nll_weight * _norm(totals["nll"]), _norm(totals["e_dpo"])),
            "cosine_nll_e_dpo": _cosine(totals["nll"], totals["e_dpo"]),
            "adam_first_step": {
                "e_share": _ratio(_norm(_sub(step_e, step_dpo)), _norm(step_e)),
                "cosine": _cosine(step_e, step_dpo),
                "share_sign_differs": _sign_differs(e_update, dpo_update),
            },
            "groups": {g: self._group_summary(g) for g in GROUPS if any(r["group"] == g for r in self.rows)},
        }

    def _group_summary(self, group: str) -> dict[str, Any]:
        rows = [r for r in self.rows if r["group"] == group]
        grads = self.grads[group]
        out: dict[str, Any] = {"pairs": len(rows), **_norms(grads, _norm(_sub(grads["e_dpo"], grads["dpo"])))}
        for key in ("z_dpo", "z_e_dpo", "weight_dpo", "weight_e_dpo", "gap", "nll"):
            values = [r[key] for r in rows if r[key] is not None and math.isfinite(r[key])]
            out[f"{key}_mean"] = statistics.fmean(values) if values else None
        return out

    def pairs(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.rows]


def measure_e_share(
    model: nn.Module,
    encoded: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, Tensor]],
    *,
    beta: float = 0.1,
    nll_weight: float = 1.0,
    params: str = "auto",
    batch_size: int = 8,
    chunk_size: int = 1024,
    adam_epsilon: float = 1e-8,
    progress: bool = True,
) -> EShare:
    """The three gradients on ``encoded`` (EncodedPairs built with the E-transform; pairs it left unchanged get the
    same reference in both views), their batch means over all pairs, split into the harmful and benign groups."""
    if not encoded:
        raise UserError("no pairs to measure")
    dpo, nll = build_loss(LossSpec("dpo", params={"beta": beta})), build_loss("sft")
    plain, transformed = reference_views(model, encoded, batch_size=batch_size, chunk_size=chunk_size)
    named = select_parameters(model, params)
    selected = [p for _, p in named]
    device = next(model.parameters()).device
    grads: dict[str, dict[str, Grad]] = {}
    rows: list[dict[str, Any]] = []
    with eval_mode(model):  # dropout (LoRA's included) would make the three gradients differ by noise
        with gradients_for(selected):
            for group, members in _groups(encoded):
                sums = grads.setdefault(group, {t: [torch.zeros_like(p) for p in selected] for t in TERMS})
                for start in tqdm(range(0, len(members), batch_size), desc=f"E-share gradients ({group})",
                                  disable=not progress):
                    chunk = [item for _, item in members[start : start + batch_size]]
                    batch = {k: v.to(device) for k, v in collate(chunk).items()}
                    # reference_views' rows follow the positions in ``encoded``; item.index may be numbered otherwise
                    index = torch.tensor([position for position, _ in members[start : start + batch_size]])
                    outs = _term_losses(model, batch, plain[index], transformed[index], dpo, nll, chunk_size)
                    # no prompt here changed: one reference view, so the same loss and the same gradient as DPO's
                    same_view = all(item.ref_prompt_ids is None for item in chunk)
                    parts: dict[str, Grad] = {}
                    for term in TERMS:
                        reuse = term == "e_dpo" and same_view
                        parts[term] = parts["dpo"] if reuse else _grad(outs[term].losses.sum() / len(encoded), selected)
                        for acc, g in zip(sums[term], parts[term]):
                            acc.add_(g)
                    rows += _pair_rows(chunk, group, outs, beta)
    rows.sort(key=lambda r: r["index"])
    return EShare(beta, nll_weight, resolve_selection(model, params), sum(p.numel() for p in selected), grads,
                  tuple(rows), sum(map(changes_reference, encoded)), adam_epsilon)


def _groups(encoded: Sequence[Any]) -> list[tuple[str, list[tuple[int, Any]]]]:
    """The harmful and the benign pairs, each as ``(position in encoded, pair)``."""
    harmful = [(i, item) for i, item in enumerate(encoded) if item.harmful is True]
    benign = [(i, item) for i, item in enumerate(encoded) if item.harmful is not True]
    return [(g, members) for g, members in zip(GROUPS, (harmful, benign)) if members]


def _term_losses(model: nn.Module, batch: dict[str, Tensor], plain: Tensor, transformed: Tensor, dpo: Any, nll: Any,
                 chunk_size: int) -> dict[str, LossOutput]:
    """One policy forward (the trainer's ``pair_logps``), scored by each term: dpo against both reference views."""
    policy = pair_logps(model, batch, chunk_size=chunk_size)

    def against(ref: Tensor) -> PairLogps:
        ref = ref.to(policy[0].device)
        return PairLogps(*policy, ref_chosen=ref[:, 0], ref_rejected=ref[:, 1])

    return {"dpo": dpo(against(plain)), "e_dpo": dpo(against(transformed)), "nll": nll(against(plain))}


def _grad(loss: Tensor, params: Sequence[nn.Parameter]) -> Grad:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grads, params)]


def _pair_rows(chunk: Sequence[Any], group: str, outs: dict[str, Any], beta: float) -> list[dict[str, Any]]:
    # the loss's own "rewards/margins" is β·(policy − reference margin) = its logit z; σ(−z) weighs the pair's gradient
    z_dpo = outs["dpo"].metrics["rewards/margins"].double().cpu()
    z_e = outs["e_dpo"].metrics["rewards/margins"].double().cpu()
    nll = outs["nll"].losses.detach().double().cpu()
    rows = []
    for i, item in enumerate(chunk):
        zd, ze = float(z_dpo[i]), float(z_e[i])
        rows.append({"index": item.index, "group": group, "z_dpo": finite_or_none(zd), "z_e_dpo": finite_or_none(ze),
                     "weight_dpo": finite_or_none(float(torch.sigmoid(-z_dpo[i]))),
                     "weight_e_dpo": finite_or_none(float(torch.sigmoid(-z_e[i]))),
                     "gap": finite_or_none((zd - ze) / beta), "nll": finite_or_none(float(nll[i]))})
    return rows


# ----------------------------------------------------------------------------- vector arithmetic (float64 sums)
def _dot(a: Grad, b: Grad) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def _norm(a: Grad) -> float:
    return math.sqrt(max(_dot(a, a), 0.0))


def _sub(a: Grad, b: Grad) -> Grad:
    return [x - y for x, y in zip(a, b)]


def _cosine(a: Grad, b: Grad) -> float | None:
    denom = _norm(a) * _norm(b)
    return _dot(a, b) / denom if denom > 0 else None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _norms(grads: dict[str, Grad], change: float) -> dict[str, float]:
    return {"dpo_norm": _norm(grads["dpo"]), "e_dpo_norm": _norm(grads["e_dpo"]), "nll_norm": _norm(grads["nll"]),
            "e_change_norm": change}


def _adam_first_step(g: Grad, eps: float) -> Grad:
    """AdamW's first update direction (bias-corrected m/√v with no history is g/(|g|+ε)), per unit learning rate."""
    return [x / (x.abs() + eps) for x in g]


def _sign_differs(a: Grad, b: Grad) -> float | None:
    """Share of the coordinates either update moves whose direction differs between the two."""
    moved = differs = 0
    for x, y in zip(a, b):
        active = (x != 0) | (y != 0)
        moved += int(active.sum())
        differs += int((active & (torch.sign(x) != torch.sign(y))).sum())
    return differs / moved if moved else None
