"""Preference-Oriented Supervised Fine-Tuning (POFT): prefer the target model over aligned LLMs."""

from __future__ import annotations

import torch.nn.functional as F

from safealign.losses.base import per_token, register_loss
from safealign.types import LossOutput, PairLogps


@register_loss(
    "poft",
    needs_reference=False,
    paper="Fan et al. 2024, Preference-Oriented Supervised Fine-Tuning (PoFT), arXiv:2412.12865",
    policy_inputs=("chosen",),
    needs_scores=True,
)
def poft(x: PairLogps, *, beta: float = 1.0) -> LossOutput:
    """POFT: ``−logσ(β(p̄c − mean_j s_j))`` with p̄c = pc/Lw the policy's per-token-averaged log-prob of
    the SFT response and s_j the same quantity under aligned model j (``x.chosen_scores``, shape (B, K)).

    Input: the SFT response is ``chosen``; ``rejected`` is not used (pass the chosen columns again, or
    any same-shaped tensor). ``chosen_scores`` are precomputed once by scoring the data with K aligned
    models and come from the data's ``chosen_scores`` column (docs/loss-inputs.md; the average is per
    token, so tokenisers may differ). ``beta`` scales the Bradley–Terry logit (1.0 = the formula in
    docs/algorithms.md). Rewards: p̄c − mean_j s_j.
    """
    if x.chosen_scores is None:
        raise ValueError(
            "loss 'poft' needs PairLogps.chosen_scores: (B, K) per-token-averaged log-probs of the chosen "
            "response under K aligned models, precomputed"
        )
    scores = x.chosen_scores if x.chosen_scores.dim() == 2 else x.chosen_scores.unsqueeze(1)
    gap = per_token(x.chosen, x.chosen_tokens) - scores.to(x.chosen.dtype).mean(dim=1)
    g = gap.detach()
    return LossOutput(-F.logsigmoid(beta * gap), {"rewards/chosen": g, "rewards/accuracies": (g > 0).float()})
