"""Binary Classifier Optimization: bco_pair (paired data) and bco (unpaired, desirable/undesirable).

Reward shift δ (the paper's running average of rewards), chosen by the caller, most explicit first:
``delta=<float>`` fixes δ (``delta=0.0`` reproduces TRL 1.16's ``bco_pair``); otherwise a
:class:`RunningMean` passed as ``state`` is updated with this batch's detached rewards and its mean
is δ (a :class:`ComposedLoss` owns one per component and checkpoints it: the paper's setting);
otherwise δ is the mean of this batch's detached rewards (stateless; used when called directly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from safealign.losses.base import as_tensor, log_ratios, register_loss, reward_metrics
from safealign.losses.kto import unpaired_metrics
from safealign.losses.state import RunningMean
from safealign.types import LossOutput, PairLogps, UnpairedLogps

_PAPER = "Jung et al. 2024, Binary Classifier Optimization for LLM alignment (BCO), arXiv:2404.04656"


def _delta(rewards: Tensor, delta: float | None, state: RunningMean | None) -> Tensor:
    """δ as a detached 0-d tensor; ``rewards`` are all rewards of this batch, (N,)."""
    if delta is not None:
        return as_tensor(delta, rewards)
    if state is not None:
        return as_tensor(state.update(rewards.detach()), rewards)
    return rewards.detach().mean()


@register_loss("bco_pair", needs_reference=True, paper=_PAPER, state=RunningMean)
def bco_pair(
    x: PairLogps, *, beta: float = 0.1, delta: float | None = None, state: RunningMean | None = None
) -> LossOutput:
    """BCO on pairs: ``−logσ(β cl − δ) − logσ(−(β rl − δ))``, δ = running mean of rewards (module doc).

    The chosen response is classified as positive and the rejected as negative, with the reward shift
    δ centring the classifier's logit. The paper's underlying-distribution-matching (UDM) density
    ratio is not implemented.
    """
    cl, rl = log_ratios(x)
    c, r = beta * cl, beta * rl
    d = _delta(torch.cat([c, r]), delta, state)
    losses = -F.logsigmoid(c - d) - F.logsigmoid(-(r - d))
    return LossOutput(losses, {**reward_metrics(c, r), "bco/delta": d.detach()})


@register_loss("bco", needs_reference=True, paper=_PAPER, input="unpaired", state=RunningMean)
def bco(
    x: UnpairedLogps, *, beta: float = 0.1, delta: float | None = None, state: RunningMean | None = None
) -> LossOutput:
    """BCO, unpaired: desirable ``−logσ(β r − δ)``, undesirable ``−logσ(−(β r − δ))``, r = logps − ref_logps.

    δ as in the module doc, computed over all examples of the batch (both labels). Per-example losses
    in input order; UDM is not implemented.
    """
    assert x.ref_logps is not None
    rewards = beta * (x.logps - x.ref_logps)
    d = _delta(rewards, delta, state)
    label = x.label.bool()
    losses = torch.where(label, -F.logsigmoid(rewards - d), -F.logsigmoid(-(rewards - d)))
    return LossOutput(losses, {**unpaired_metrics(rewards, label), "bco/delta": d.detach()})
