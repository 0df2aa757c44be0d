"""Small builders for loss inputs used across the loss tests."""

from __future__ import annotations

import torch

from safealign.types import PairLogps, UnpairedLogps


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def pair(pc, pr, rc=None, rr=None, lw=None, ll=None, scores=None) -> PairLogps:
    """PairLogps from plain lists; token counts default to 1 (averaged = summed)."""
    pc, pr = t(*pc), t(*pr)
    ones = torch.ones_like(pc)
    return PairLogps(
        chosen=pc,
        rejected=pr,
        chosen_tokens=ones if lw is None else t(*lw),
        rejected_tokens=ones if ll is None else t(*ll),
        ref_chosen=None if rc is None else t(*rc),
        ref_rejected=None if rr is None else t(*rr),
        chosen_scores=None if scores is None else torch.tensor(scores, dtype=torch.float64),
    )


def unpaired(logps, ref, label, kl=None, ref_kl=None) -> UnpairedLogps:
    return UnpairedLogps(
        logps=t(*logps),
        tokens=torch.ones(len(logps), dtype=torch.float64),
        label=torch.tensor(label, dtype=torch.bool),
        ref_logps=t(*ref),
        kl_logps=None if kl is None else t(*kl),
        ref_kl_logps=None if ref_kl is None else t(*ref_kl),
    )
