"""Refusal-feature adversarial training (ReFAT; Yu et al. 2024, arXiv:2409.20089; docs/objectives.md).

The refusal feature at layer ``l`` is the difference of mean residuals ``r(l) = mean_harmful h(l) −
mean_harmless h(l)`` at the prompt's last token (the end of the assistant header: the model has read the
request and not yet answered), normalised to ``r̂``. It is re-estimated from the current model every
``recompute_every`` steps on ``samples_per_class`` prompts of each kind. With probability
``rfa_probability`` per step, the harmful rows are trained with the feature ablated — ``h ← h − r̂ r̂ᵀh``
at every position of every chosen layer — so the model must refuse without it; benign rows never are.
Loss: token-mean NLL of the refusal on harmful rows + token-mean NLL of the answer on benign rows.

Defaults follow the unofficial reimplementation the sheet cites (no official code): layers = the last 75%
of the blocks (``int(0.25·L)..L−1``), ``recompute_every=4``, ``samples_per_class=32``, ``p=0.5``.
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from safealign.errors import UserError
from safealign.models.modes import eval_mode
from safealign.train.hooks import check_layers, edit_residuals, hidden_states, num_layers
from safealign.train.logps import sequence_logps
from safealign.train.objectives.base import (
    BENIGN_ANSWER,
    REFUSAL,
    Objective,
    ObjectiveContext,
    ObjectiveOutput,
    register_objective,
    require,
)
from safealign.train.objectives.data import sequences


def default_layers(depth: int) -> list[int]:
    """The last 75% of the blocks: ``int(0.25·L) .. L−1`` (the ablation edits each block's input)."""
    return list(range(int(0.25 * depth), depth))


def project_out(hidden: Tensor, direction: Tensor) -> Tensor:
    """``h − r̂ (r̂ᵀh)`` at every position; ``direction`` is a unit vector ``(H,)``."""
    unit = direction.to(hidden.dtype)
    return hidden - (hidden @ unit)[..., None] * unit


@torch.no_grad()
def mean_last_prompt_state(model: nn.Module, prompts: Sequence[Sequence[int]], layers: list[int],
                           pad_token_id: int, batch_size: int = 16) -> dict[int, Tensor]:
    """``{layer: (H,)}``: the residual at each prompt's last token, averaged over ``prompts`` (float32)."""
    sums: dict[int, Tensor] = {}
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        batch = sequences(chunk, [()] * len(chunk), pad_token_id)
        last = torch.tensor([len(p) - 1 for p in chunk], device=device)
        states = hidden_states(model, layers, batch["input_ids"].to(device), batch["attention_mask"].to(device))
        for layer in layers:
            picked = states[layer][torch.arange(len(chunk), device=device), last].float().sum(0)
            sums[layer] = picked if layer not in sums else sums[layer] + picked
    return {layer: total / len(prompts) for layer, total in sums.items()}


def refusal_directions(model: nn.Module, harmful: Sequence[Sequence[int]], harmless: Sequence[Sequence[int]],
                       layers: list[int], pad_token_id: int) -> dict[int, Tensor]:
    """Unnormalised ``r(l) = mean_harmful − mean_harmless`` of the last-prompt-token residual, in eval mode."""
    with eval_mode(model):  # LoRA dropout would add noise to the estimate
        bad = mean_last_prompt_state(model, harmful, layers, pad_token_id)
        good = mean_last_prompt_state(model, harmless, layers, pad_token_id)
    return {layer: bad[layer] - good[layer] for layer in layers}


def _nll(model: nn.Module, rows: Mapping[str, Tensor], chunk_size: int) -> Tensor:
    """Token-mean negative log-likelihood of the completions of ``rows``."""
    out = sequence_logps(model, rows["input_ids"], rows["attention_mask"], rows["response_mask"],
                         chunk_size=chunk_size)
    return -out.logps.sum() / out.tokens.sum().clamp(min=1)


@register_objective("refat")
class ReFAT(Objective):
    """Refusal-feature adversarial training: refuse harmful prompts with the refusal direction ablated.

    ``layers``: blocks whose input is ablated and where the direction is measured (default the last 75%).
    ``recompute_every``: re-estimate the direction every k optimizer steps. ``samples_per_class``: prompts of
    each kind per estimate. ``rfa_probability``: chance that a step ablates the harmful rows.
    """

    paper = "Yu et al. 2024, Robust LLM Safeguarding via Refusal Feature Adversarial Training, arXiv:2409.20089"
    needs_reference = False  # the direction comes from the current model; no frozen copy is kept
    reference_role = "it has no reference term (the refusal direction comes from the current model)"

    def __init__(self, *, layers: list[int] | None = None, recompute_every: int = 4, samples_per_class: int = 32,
                 rfa_probability: float = 0.5) -> None:
        require(recompute_every >= 1, "refat", f"recompute_every must be >= 1, got {recompute_every}")
        require(samples_per_class >= 1, "refat", f"samples_per_class must be >= 1, got {samples_per_class}")
        require(0 <= rfa_probability <= 1, "refat", f"rfa_probability must be in [0, 1], got {rfa_probability}")
        self.layer_choice = layers
        self.recompute_every = recompute_every
        self.samples_per_class = samples_per_class
        self.rfa_probability = float(rfa_probability)
        self.roles = {"harmful": (REFUSAL,), "benign": (BENIGN_ANSWER,)}
        self.directions: dict[int, Tensor] | None = None  # unit vectors
        self.estimated_at = -1

    def layers(self, model: nn.Module) -> list[int]:
        depth = num_layers(model)
        layers = check_layers(model, self.layer_choice or default_layers(depth), "objective.params.layers")
        if layers[-1] >= depth:
            raise UserError(f"objective 'refat': layer {depth} is the output of the last block, which no block "
                             f"reads; choose layers in 0..{depth - 1}")
        return layers

    def estimate(self, model: nn.Module, ctx: ObjectiveContext) -> dict[int, Tensor]:
        """Re-estimate the directions on a sample of the data's harmful and benign prompts (seeded by step)."""
        rng = random.Random(f"{ctx.seed}:directions:{ctx.step}")
        harmful = _distinct_prompts(ctx.rows["harmful"])
        benign = _distinct_prompts(ctx.rows["benign"])
        sample = [rng.sample(p, min(self.samples_per_class, len(p))) for p in (harmful, benign)]
        raw = refusal_directions(model, sample[0], sample[1], self.layers(model), ctx.pad_token_id)
        return {layer: r / r.norm().clamp(min=1e-12) for layer, r in raw.items()}

    def ablate(self, step: int, seed: int) -> bool:
        """Whether step ``step`` ablates the harmful rows (a seeded draw: the same on every process and rerun)."""
        return random.Random(f"{seed}:rfa:{step}").random() < self.rfa_probability

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        if self.directions is None or (ctx.step % self.recompute_every == 0 and self.estimated_at != ctx.step):
            # also right after a resume: the direction is re-estimated from the resumed model
            self.directions, self.estimated_at = self.estimate(model, ctx), ctx.step
        rfa = self.ablate(ctx.step, ctx.seed)
        edits = {layer: partial(project_out, direction=r) for layer, r in self.directions.items()} if rfa else {}
        with edit_residuals(model, edits):
            harmful = _nll(model, batch["harmful"], ctx.chunk_size)
        benign = _nll(model, batch["benign"], ctx.chunk_size)
        metrics = {"nll/harmful": harmful.detach(), "nll/benign": benign.detach(),
                   "rfa": torch.tensor(float(rfa))}
        return ObjectiveOutput(harmful + benign, metrics)


def _distinct_prompts(rows: Sequence[Any]) -> list[tuple[int, ...]]:
    return list(dict.fromkeys(tuple(r.prompt_ids) for r in rows))
