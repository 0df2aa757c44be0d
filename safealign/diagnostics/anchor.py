"""The anchor gap: how far an E-RLHF prompt transform moves the reference on harmful pairs.

For each harmful pair (docs/findings.md, "Anchor gap"):

    Δchosen   = log πref(y_w | x_s) − log πref(y_w | x)
    Δrejected = log πref(y_l | x_s) − log πref(y_l | x)
    gap       = Δchosen − Δrejected

E-DPO's logit on such a pair is DPO's logit minus ``β · gap`` (both reference terms move): a positive
gap lowers the starting logit, so the loss pushes harder towards y_w. The gap says, before any training,
whether a transform moves the anchor at all and by how much in loss units; a gap near zero means E-DPO
will behave like DPO on that data. Reference = the model with any LoRA
adapter disabled (the same forward the trainer uses for reference log-probs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from torch import Tensor, nn

from safealign.diagnostics.stats import median
from safealign.errors import UserError
from safealign.io import finite_or_none
from safealign.train.reference import compute_reference_columns


@dataclass(frozen=True)
class AnchorGap:
    """Reference log-probs of harmful pairs under both prompt views. Tables are ``(H, 2)``."""

    index: tuple[int, ...]  # EncodedPair.index of each harmful pair
    plain: Tensor  # (H, 2) log πref(y | x): chosen, rejected
    transformed: Tensor  # (H, 2) log πref(y | x_s)
    transformed_pairs: int  # harmful pairs whose reference prompt differs from the policy's (:func:`changes_reference`)

    @property
    def chosen_shift(self) -> Tensor:
        return self.transformed[:, 0] - self.plain[:, 0]

    @property
    def rejected_shift(self) -> Tensor:
        return self.transformed[:, 1] - self.plain[:, 1]

    @property
    def gap(self) -> Tensor:
        """``(H,)`` Δchosen − Δrejected."""
        return self.chosen_shift - self.rejected_shift

    def summary(self, *, beta: float = 0.1) -> dict[str, Any]:
        gap = self.gap.double()
        return {
            "harmful_pairs": len(self.index),
            "transformed_pairs": self.transformed_pairs,
            "chosen_shift_mean": self.chosen_shift.double().mean().item(),
            "rejected_shift_mean": self.rejected_shift.double().mean().item(),
            "gap_mean": gap.mean().item(),
            "gap_median": median(gap),
            "gap_share_positive": (gap > 0).double().mean().item(),
            "beta": beta,
            "edpo_logit_shift_mean": -beta * gap.mean().item(),  # E-DPO logit − DPO logit
        }

    def pairs(self) -> list[dict[str, Any]]:
        columns = {
            "plain_chosen_logps": self.plain[:, 0], "plain_rejected_logps": self.plain[:, 1],
            "transformed_chosen_logps": self.transformed[:, 0], "transformed_rejected_logps": self.transformed[:, 1],
            "chosen_shift": self.chosen_shift, "rejected_shift": self.rejected_shift, "gap": self.gap,
        }
        lists = {k: v.tolist() for k, v in columns.items()}
        return [{"index": idx, **{k: finite_or_none(lists[k][i]) for k in lists}} for i, idx in enumerate(self.index)]


def measure_anchor_gap(
    model: nn.Module,
    encoded: Sequence[Any],
    *,
    batch_size: int = 8,
    chunk_size: int = 1024,
) -> AnchorGap:
    """Anchor gap over the harmful pairs of ``encoded`` (EncodedPairs built with the transform).

    Raises UserError when no pair is flagged harmful: the E-transform applies to harmful prompts only.
    """
    harmful = [item for item in encoded if item.harmful is True]
    if not harmful:
        raise UserError(f"none of the {len(encoded)} pairs is flagged harmful; mark the data set harmful "
                        "(a 'harmful' column, or the dataset-level harmful switch) to measure the anchor gap")
    plain, transformed = reference_views(model, harmful, batch_size=batch_size, chunk_size=chunk_size)
    changed = sum(map(changes_reference, harmful))
    return AnchorGap(tuple(item.index for item in harmful), plain, transformed, changed)


def changes_reference(item: Any) -> bool:
    """Whether the reference sees another prompt than the policy on this encoded pair: the transform changed it and
    left truncation kept (some of) the change. The encoder sets ``ref_prompt_ids`` before it truncates (and training
    uses it as set), so a prefix that ``max_prompt_length`` cut whole leaves reference ids equal to the policy's: no
    anchor gap there, and counting such a pair as transformed passed its gap of 0 off as the prefix's effect."""
    return item.ref_prompt_ids is not None and tuple(item.ref_prompt_ids) != tuple(item.prompt_ids)


def reference_views(model: nn.Module, encoded: Sequence[Any], *, batch_size: int = 8,
                    chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Reference log-probs ``(N, 2)`` (chosen, rejected) of every pair on its plain prompt x and on the reference
    view the encoder built (x_s where the transform applied, else x): DPO's and E-DPO's reference columns, scored
    by the trainer's own reference pass."""
    plain_view = [dataclasses.replace(item, ref_prompt_ids=None) for item in encoded]
    plain = compute_reference_columns(model, plain_view, batch_size=batch_size, chunk_size=chunk_size)
    transformed = plain.clone()  # a pair the transform left alone has one view: the same numbers, not a re-score
    changed = [i for i, item in enumerate(encoded) if item.ref_prompt_ids is not None]
    if changed:
        transformed[changed] = compute_reference_columns(model, [encoded[i] for i in changed], batch_size=batch_size,
                                                         chunk_size=chunk_size)
    return plain, transformed
