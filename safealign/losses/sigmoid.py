"""Logistic (Bradley–Terry) losses on the DPO margin: dpo, cdpo, robust, rpo, jpo.

Notation (docs/algorithms.md): cl = pc − rc, rl = pr − rr, Δ = cl − rl, all summed over response tokens.
"""

from __future__ import annotations

import torch.nn.functional as F

from safealign.losses.base import Range, chosen_nll, log_ratios, register_loss, reward_metrics
from safealign.types import LossOutput, PairLogps


def _dpo_parts(x: PairLogps, beta: float):
    cl, rl = log_ratios(x)
    return beta * (cl - rl), reward_metrics(beta * cl, beta * rl)


@register_loss("dpo", needs_reference=True, paper="Rafailov et al. 2023, DPO, arXiv:2305.18290")
def dpo(x: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """DPO: ``−logσ(βΔ)`` (Rafailov et al. 2023, Eq. 7).

    ``beta`` is the KL coefficient. Zero margin gives log 2. TRL's ``loss_type="sigmoid"``.
    """
    z, metrics = _dpo_parts(x, beta)
    return LossOutput(-F.logsigmoid(z), metrics)


@register_loss("cdpo", needs_reference=True, paper="Mitchell 2023, 'A note on DPO with noisy preferences' (cDPO)",
               ranges={"epsilon": Range(0.0, 0.5, why="a label-flip probability above 0.5 reverses the labels")})
def cdpo(x: PairLogps, *, beta: float = 0.1, epsilon: float = 0.1) -> LossOutput:
    """Conservative DPO (label smoothing): ``−(1−ε)logσ(βΔ) − ε logσ(−βΔ)``.

    ``epsilon`` is the assumed probability that a preference label is flipped; ε = 0 is DPO.
    TRL 1.16 has no equivalent: its ``sigmoid`` ignores ``label_smoothing`` (docs/trl-differences.md).
    """
    z, metrics = _dpo_parts(x, beta)
    return LossOutput(-(1 - epsilon) * F.logsigmoid(z) - epsilon * F.logsigmoid(-z), metrics)


@register_loss("robust", needs_reference=True, paper="Chowdhury et al. 2024, Provably Robust DPO, arXiv:2403.00409",
               ranges={"epsilon": Range(0.0, 0.5, high_open=True, why="the loss divides by 1 − 2ε")})
def robust(x: PairLogps, *, beta: float = 0.1, epsilon: float = 0.1) -> LossOutput:
    """rDPO: ``(−(1−ε)logσ(βΔ) + ε logσ(−βΔ)) / (1−2ε)`` (the unbiased de-noised loss, §3).

    ``epsilon`` is the label-flip rate, 0 ≤ ε < ½; ε = 0 is DPO. Note the *plus* sign: the loss is an
    unbiased estimate of the clean-label loss, unlike cdpo's smoothing. Matches TRL ``robust``.
    """
    z, metrics = _dpo_parts(x, beta)
    losses = (-(1 - epsilon) * F.logsigmoid(z) + epsilon * F.logsigmoid(-z)) / (1 - 2 * epsilon)
    return LossOutput(losses, metrics)


@register_loss(
    "rpo",
    needs_reference=True,
    paper="Liu et al. 2024, 'Your SFT loss is implicitly an adversarial regularizer', arXiv:2405.16436",
    ranges={"eta": Range(0.0, why="a negative weight rewards raising the chosen NLL: the loss is unbounded below")},
)
def rpo(x: PairLogps, *, beta: float = 0.1, eta: float = 1.0) -> LossOutput:
    """RPO: ``−logσ(βΔ) + η · NLL(y_w)`` with ``NLL(y_w) = −pc / Lw``.

    Deviation: the paper's SFT term is the summed log-likelihood of y_w; we use each example's per-token
    average so that η does not scale with response length (TRL's ``sft`` term instead averages over all
    chosen tokens of the batch; docs/trl-differences.md). ``sft/nll`` is logged.
    """
    z, metrics = _dpo_parts(x, beta)
    nll = chosen_nll(x)
    return LossOutput(-F.logsigmoid(z) + eta * nll, {**metrics, "sft/nll": nll.detach()})


@register_loss("jpo", needs_reference=True, needs_cross_prompt_pairs=True, joint_logps=True,
               paper="Bansal et al. 2024, Joint Preference Optimization, arXiv:2404.00530")
def jpo(x: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """JPO: ``−logσ(β[(pc − rc) − (pr − rr)])`` over joint log-probs of two (prompt, response) pairs.

    Row i is a preference (x_w, y_w) ≻ (x_l, y_l) whose prompts may differ (data format ``joint``);
    ``chosen[i] = log π(x_w, y_w)`` and ``rejected[i] = log π(x_l, y_l)`` score the prompt tokens too (the
    paper's joint probability; its released trainer with ``joint_distribution`` on), ``ref_*`` the same
    sequences under the reference, and the token counts include the prompt. The arithmetic is DPO's: when
    x_w = x_l the prompt terms cancel and JPO is DPO. The registration declares the cross-prompt data and
    joint log-probs, which the data layer and trainer supply (docs/loss-inputs.md).
    """
    z, metrics = _dpo_parts(x, beta)
    return LossOutput(-F.logsigmoid(z), metrics)
