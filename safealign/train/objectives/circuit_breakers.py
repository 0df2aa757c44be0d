"""Circuit breakers by representation rerouting (RR; Zou et al. 2024, arXiv:2406.04313; docs/objectives.md).

On harmful completions the policy's residual at the target layers is pushed orthogonal to the frozen model's:
``L_rr = mean_{layer, token} ReLU(cos(h_θ, h_ref))``. On retain rows it is held in place:
``L_ret = mean_{layer, token} ‖h_θ − h_ref‖₂``. With progress ``p = t / 2T`` (``t`` = this
step, counted from 1 like the reference code; ``T`` = total steps) the loss is
``α·p·L_ret + α·(1 − p)·L_rr``: rerouting dominates early, retention grows.

Layers: the reference code takes layers 10 and 20 of 32-layer models. For a model of depth ``L`` the
default scales them, ``max(1, min(L − 1, round(L·k/32)))`` for k in (10, 20) (9 and 19 for the embedded
model's 30 layers; our inference, not the paper's). Only those layers are hooked and every forward stops
after the deepest of them (the reference code trains a truncated model for the same reason), so no
block past it and no LM head runs.

Each step also logs how hard each term pulls on the hooked hidden states (``pull/reroute``, ``pull/retain``):
the norm of the coefficient-weighted term's gradient with respect to the states themselves (the loss's own
last step, not the backward through the model, so it costs two small autograd calls). At the start the
policy equals the frozen model, ``cos = 1`` is the rerouting term's maximum and its gradient vanishes
(``‖∂cos/∂h‖ = sin θ / ‖h‖``), while the retain distance has a unit gradient however small it is: the ratio
shows whether rerouting can leave that point (docs/objectives.md).

Rerouted tokens (:func:`reroute_mask`): the reference code reroutes every token of the harmful sequence, prompt
and completion. In a causal model the state at position ``t`` is a function of the tokens ``0..t`` alone, so a
position whose token prefix is also a prefix of a retain row has the same state there, which the retain term
holds while the rerouting term pushes it away. Such positions are left out of the rerouting mask: each harmful
row reroutes from the end of the longest prefix it shares with any retain row of the data. With a chat template
that adds a default system prompt (SmolLM2's) every row shares the system turn and user header; with
``retain_refusals`` a harmful prompt retained with its refusal shares its whole prompt, so only its completion
is rerouted. The reference code's own template has no system prompt and it retains refusals of part of its
prompts only; this adapts its mask to data where the two sets share states (docs/objectives.md).
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from safealign.train.hooks import check_layers, hidden_states, num_layers
from safealign.train.objectives.base import (
    BENIGN_ANSWER,
    HARMFUL_COMPLETION,
    REFUSAL,
    Objective,
    ObjectiveContext,
    ObjectiveOutput,
    register_objective,
    require,
)

PAPER_LAYERS, PAPER_DEPTH = (10, 20), 32  # Llama-3-8B / Mistral-7B (32 blocks) in the reference scripts


def default_target_layers(depth: int) -> list[int]:
    """The paper's layers 10 and 20 of 32, scaled to ``depth`` blocks (never the embeddings, never past L−1)."""
    return sorted({max(1, min(depth - 1, round(depth * k / PAPER_DEPTH))) for k in PAPER_LAYERS})


def coefficients(alpha: float, step: int, total_steps: int) -> tuple[float, float]:
    """``(c_retain, c_reroute)`` at optimizer step ``step`` (0-based) of ``total_steps``: ``t = step + 1``,
    ``c_ret = α·t/2T``, ``c_rr = α·(1 − t/2T)``."""
    progress = (step + 1) / (2 * max(total_steps, 1))
    return alpha * progress, alpha * (1 - progress)


def _stack(states: Mapping[int, Tensor], layers: list[int]) -> Tensor:
    return torch.stack([states[layer].float() for layer in layers])  # (K, N, T, H)


def rerouting_loss(policy: Mapping[int, Tensor], reference: Mapping[int, Tensor], mask: Tensor,
                   layers: list[int]) -> tuple[Tensor, Tensor]:
    """``(mean ReLU(cos), mean cos)`` over the ``layers`` × masked tokens; ``mask`` is ``(N, T)``."""
    cos = F.cosine_similarity(_stack(policy, layers), _stack(reference, layers), dim=-1)  # (K, N, T)
    weight = mask.to(cos.dtype).expand_as(cos)
    count = weight.sum().clamp(min=1)
    return (F.relu(cos) * weight).sum() / count, (cos.detach() * weight).sum() / count


def state_pull(term: Callable[[Mapping[int, Tensor]], Tensor], states: Mapping[int, Tensor],
               layers: list[int]) -> Tensor:
    """Norm of the direct gradient of ``term(states)`` with respect to the ``layers``' hidden states (each
    layer's state held as a leaf, so no backward runs through the model), over all layers and tokens."""
    leaves = {layer: states[layer].detach().float().requires_grad_() for layer in layers}
    with torch.enable_grad():
        grads = torch.autograd.grad(term(leaves), list(leaves.values()), allow_unused=True)
    return torch.sqrt(sum((g**2).sum() for g in grads if g is not None) + torch.zeros(()))


def retain_loss(policy: Mapping[int, Tensor], reference: Mapping[int, Tensor], mask: Tensor,
                layers: list[int]) -> Tensor:
    """Mean L2 distance ``‖h_θ − h_ref‖₂`` over the ``layers`` × masked tokens."""
    distance = (_stack(policy, layers) - _stack(reference, layers)).norm(dim=-1)  # (K, N, T)
    weight = mask.to(distance.dtype).expand_as(distance)
    return (distance * weight).sum() / weight.sum().clamp(min=1)


class RetainedPrefixes:
    """The retain rows' token sequences, sorted, to find how long a prefix a sequence shares with any of them."""

    def __init__(self, sequences: Iterable[Sequence[int]]) -> None:
        self.sequences = sorted({tuple(s) for s in sequences})

    def shared(self, ids: Sequence[int]) -> int:
        """Length of the longest prefix of ``ids`` that is also a prefix of a retained sequence: in sorted order
        the sequence sharing the longest prefix with ``ids`` is one of the two around ``ids``' insertion point."""
        ids = tuple(ids)
        at = bisect.bisect_left(self.sequences, ids)
        return max((_common_prefix(ids, self.sequences[i]) for i in (at - 1, at) if 0 <= i < len(self.sequences)),
                   default=0)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def reroute_mask(rows: Mapping[str, Tensor], retained: RetainedPrefixes) -> Tensor:
    """The ``(N, T)`` rerouting mask of right-padded ``rows``: the attention mask less each row's positions whose
    token prefix is also a retain row's (their states are the retained ones; module docstring)."""
    mask = rows["attention_mask"].clone()
    for n, (ids, length) in enumerate(zip(rows["input_ids"].tolist(), mask.sum(dim=1).tolist())):
        mask[n, :retained.shared(ids[:length])] = 0
    return mask


@register_objective("circuit_breakers")
class CircuitBreakers(Objective):
    """Representation rerouting: harmful states pushed orthogonal to the frozen model's, retained ones held.

    The paper's coefficient schedule shifts weight from rerouting to retention over the run.

    ``alpha``: the schedule's scale (10 in the paper's Llama-3-8B run, 5 for Mistral-7B).
    ``target_layers``: rerouting layers (default scaled from the paper's 10, 20 of 32 to the model's depth).
    ``retain_layers``: retain layers (default every layer l from 1 to the deepest target D, the residual after
    l blocks). The reference code truncates the model to D + 1 blocks and retains over all its hidden states,
    0 to D + 1: also the embeddings' output (distance 0) and the output of its last block, block D, after the
    model's final norm (layer D + 1 here), which this default leaves out (finished runs depend on it).
    ``retain_refusals``: also retain the refusals of harmful prompts (the paper's Llama-3 retain set); else
    only benign answers. Either way a harmful row is rerouted only past the longest prefix it shares with a
    retain row of the data (``ctx.rows``; :func:`reroute_mask`): with refusals retained, its completion alone.
    """

    paper = "Zou et al. 2024, Improving Alignment and Robustness with Circuit Breakers, arXiv:2406.04313"

    def __init__(self, *, alpha: float = 10.0, target_layers: list[int] | None = None,
                 retain_layers: list[int] | None = None, retain_refusals: bool = True) -> None:
        require(alpha > 0, "circuit_breakers", f"alpha must be > 0 (it scales both terms), got {alpha}")
        for key, layers in (("target_layers", target_layers), ("retain_layers", retain_layers)):
            require(layers is None or (len(layers) > 0 and min(layers) >= 1), "circuit_breakers",
                    f"{key} must be a non-empty list of layers >= 1 (0 is the embeddings), got {layers}")
        self.alpha = float(alpha)
        self.target_layers = target_layers
        self.retain_layers = retain_layers
        self.roles = {"reroute": (HARMFUL_COMPLETION,),
                      "retain": (BENIGN_ANSWER, REFUSAL) if retain_refusals else (BENIGN_ANSWER,)}
        self._retained: tuple[object, RetainedPrefixes] | None = None

    def retained(self, rows: Sequence[Any]) -> RetainedPrefixes:
        """The data's retain rows (``ctx.rows["retain"]``, the same list every step) as :class:`RetainedPrefixes`,
        built once; none (a context without rows) leaves the rerouting mask the attention mask."""
        if self._retained is None or self._retained[0] is not rows:
            self._retained = (rows, RetainedPrefixes(tuple(r.prompt_ids) + tuple(r.completion_ids) for r in rows))
        return self._retained[1]

    def layers(self, model: nn.Module) -> tuple[list[int], list[int]]:
        """(target layers, retain layers) for ``model``, checked against its depth."""
        depth = num_layers(model)
        target = check_layers(model, self.target_layers or default_target_layers(depth),
                              "objective.params.target_layers")
        # 1..D, not the reference code's 0..D+1 (class docstring): kept, finished runs depend on this default
        retain = self.retain_layers or list(range(1, max(target) + 1))
        return target, check_layers(model, retain, "objective.params.retain_layers")

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        target, retain = self.layers(model)
        reroute, kept = batch["reroute"], batch["retain"]
        with ctx.reference(model) as frozen:
            ref_reroute = hidden_states(frozen, target, reroute["input_ids"], reroute["attention_mask"])
            ref_kept = hidden_states(frozen, retain, kept["input_ids"], kept["attention_mask"])
        own_reroute = hidden_states(model, target, reroute["input_ids"], reroute["attention_mask"])
        own_kept = hidden_states(model, retain, kept["input_ids"], kept["attention_mask"])
        rerouted = reroute_mask(reroute, self.retained(ctx.rows.get("retain", ())))
        l_rr, cos_rr = rerouting_loss(own_reroute, ref_reroute, rerouted, target)
        l_ret = retain_loss(own_kept, ref_kept, kept["attention_mask"], retain)
        c_ret, c_rr = coefficients(self.alpha, ctx.step, ctx.total_steps)
        loss = c_ret * l_ret + c_rr * l_rr
        metrics = {"loss/reroute": l_rr.detach(), "loss/retain": l_ret.detach(), "cos/reroute": cos_rr,
                   "coef/reroute": torch.tensor(c_rr), "coef/retain": torch.tensor(c_ret),
                   "pull/reroute": state_pull(lambda h: c_rr * rerouting_loss(h, ref_reroute, rerouted, target)[0],
                                              own_reroute, target),
                   "pull/retain": state_pull(lambda h: c_ret * retain_loss(h, ref_kept, kept["attention_mask"], retain),
                                             own_kept, retain)}
        return ObjectiveOutput(loss, metrics)
