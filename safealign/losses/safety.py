"""Safety-training losses: safedpo, sft, constrained_sft (docs/safety-training.md).

Notation (docs/algorithms.md): cl = pc − rc, rl = pr − rr, summed over response tokens; per token,
ℓ_t = log πθ(y_t | x, y_<t) and ℓ^ref_t the reference's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from safealign.losses.base import Range, chosen_nll, log_ratios, per_token, register_loss, reward_metrics
from safealign.types import LossOutput, PairLogps, TokenLogps


@register_loss("safedpo", needs_reference=True, needs_safety_flags=True,
               paper="Kim et al. 2025, SafeDPO: A Simple Approach to Direct Preference Optimization with Enhanced "
                     "Safety, arXiv:2505.20065",
               ranges={"delta": Range(0.0, why="Δ asks a larger margin where safety decides the pair, not less")})
def safedpo(x: PairLogps, *, beta: float = 0.1, delta: float = 0.0) -> LossOutput:
    """SafeDPO: ``−logσ(β(cl − rl) − (h_l − h_w)·Δ)`` with h = 1 for an unsafe response, on rows reordered
    by the ``safety_order`` data transform (an unsafe chosen with a safe rejected swapped, two unsafe dropped);
    rows in the wrong order and rows of two unsafe responses are refused, not reordered or dropped silently.

    After that reordering h_l − h_w is 1 on safe-vs-unsafe pairs and 0 otherwise, so the offset ``delta``
    (Δ ≥ 0) asks a larger margin only where safety decides the pair; Δ = 0 is the pure safety-constrained
    objective. Safety labels come from ``x.chosen_safe``/``x.rejected_safe`` (1 safe, 0 unsafe).
    """
    if x.chosen_safe is None or x.rejected_safe is None:
        raise ValueError("loss 'safedpo' needs PairLogps.chosen_safe and rejected_safe (per-response safety labels)")
    if bool((x.chosen_safe < x.rejected_safe).any()):
        raise ValueError("loss 'safedpo': a row has an unsafe chosen and a safe rejected response; reorder the data "
                         "with the 'safety_order' data transform first (docs/safety-training.md)")
    # T(D) drops them; trained here they would be plain DPO between two unsafe answers, which SafeDPO never does
    if bool(((x.chosen_safe == 0) & (x.rejected_safe == 0)).any()):
        raise ValueError(
            "loss 'safedpo': a row has two unsafe responses; the 'safety_order' data transform drops "
            "such rows, as SafeDPO's T(D) does (docs/safety-training.md)"
        )
    cl, rl = log_ratios(x)
    unsafe_gap = x.chosen_safe - x.rejected_safe  # h_l − h_w with h = 1 − safe
    z = beta * (cl - rl) - unsafe_gap.to(cl.dtype) * delta
    return LossOutput(-F.logsigmoid(z), {**reward_metrics(beta * cl, beta * rl),
                                         "safedpo/safety_pairs": unsafe_gap.detach().float()})


@register_loss("sft", needs_reference=False, policy_inputs=("chosen",),
               paper="maximum likelihood on the chosen response (DeRTa's and Qi et al.'s SFT objective)")
def sft(x: PairLogps) -> LossOutput:
    """SFT: the chosen response's NLL, ``−pc / Lw`` (per-token average per example, like rpo's term).

    The rejected response is not used (it is still scored, one pair batch); rewards: each response's
    per-token log-prob. Transition rows of the ``derta``
    data transform score the refusal's first token at every position, so their NLL is DeRTa's RTO term.
    """
    nll = chosen_nll(x)
    rewards = reward_metrics(-nll, per_token(x.rejected, x.rejected_tokens))  # per-token log-probs, for the log
    return LossOutput(nll, {**rewards, "sft/nll": nll.detach()})


def beta_schedule(length: int, beta: float, first_token_factor: float, bias_factor: float, bias_length: int,
                  like: torch.Tensor) -> torch.Tensor:
    """β_t for response positions t = 1..length: β·first_token_factor at t = 1, β·bias_factor for
    t = 2..bias_length, β after (Qi et al.'s ``get_beta_list``)."""
    betas = torch.full((length,), beta, dtype=like.dtype, device=like.device)
    betas[1:bias_length] = beta * bias_factor
    betas[:1] = beta * first_token_factor
    return betas


@register_loss("constrained_sft", needs_reference=True, input="token",
               paper="Qi et al. 2024, Safety Alignment Should Be Made More Than Just a Few Tokens Deep, "
                     "arXiv:2406.05946 (token-wise constrained objective)",
               ranges={"first_token_factor": Range(0.0, low_open=True, why="β_t scales the loss and divides it"),
                       "bias_factor": Range(0.0, low_open=True, why="β_t scales the loss and divides it"),
                       "bias_length": Range(1, why="the biased prefix ends at this token (1: the first only)")})
def constrained_sft(x: TokenLogps, *, beta: float = 0.1, first_token_factor: float = 5.0, bias_factor: float = 20.0,
                    bias_length: int = 5) -> LossOutput:
    """Token-wise constrained SFT: ``L_t = −(2/β_t)·logσ(β_t(ℓ_t − ℓ^ref_t))``, averaged over the response
    tokens of the micro-batch it is given; β_t from :func:`beta_schedule` (defaults: 0.5 on the first token, 2.0
    on tokens 2–5, 0.1 after), so the first tokens stay close to the reference while later ones learn freely.
    Column 0 is the scored response's first token, which must be the answer's: training refuses a chat template
    that opens the assistant turn with fixed text such as Qwen3's empty think block (safealign/train/data.py).

    The gradient is the authors' code's: ``−w_t ∇ℓ_t`` with ``w_t = max(2(1 − σ(β_t(ℓ_t − ℓ^ref_t))), 1e-3)``
    (the exact gradient except the floor); the value is the formula's. Each example's value is its token sum
    divided by the micro-batch's mean token count, so the micro-batch mean is the mean over its tokens. That is
    per device micro-batch, as in the authors' trainer: data parallelism and gradient accumulation average those
    means, so a step with unequal token counts per micro-batch is not its global token mean
    (docs/safety-training.md).
    """
    assert x.ref_logps is not None
    mask = x.mask.to(x.logps.dtype)
    betas = beta_schedule(x.logps.shape[1], beta, first_token_factor, bias_factor, bias_length, x.logps)[None, :]
    gap = x.logps - x.ref_logps
    value = -(2 / betas) * F.logsigmoid(betas * gap)
    weight = (2 * (1 - torch.sigmoid(betas * gap))).clamp(min=1e-3).detach()
    surrogate = -weight * x.logps
    per_token = value.detach() + surrogate - surrogate.detach()  # the formula's value, the code's gradient
    scale = x.logps.shape[0] / mask.sum().clamp(min=1)
    losses = (per_token * mask).sum(dim=1) * scale
    tokens = mask.sum(dim=1).clamp(min=1)
    return LossOutput(losses, {"constrained/logratio": ((gap * mask).sum(dim=1) / tokens).detach(),
                               "sft/nll": (-(x.logps * mask).sum(dim=1) / tokens).detach()})
