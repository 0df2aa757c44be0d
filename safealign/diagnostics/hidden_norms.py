"""How concentrated the residual stream is, per layer: what a hidden-state objective's cosine sees.

Circuit breakers (safealign/train/objectives/circuit_breakers.py) push harmful states orthogonal to the frozen
model's, measured by their cosine. When a few dimensions carry most of the squared norm (the "massive
activations" of many decoder models) or the first token's state is orders of magnitude larger than the rest,
that cosine stays near 1 until those few dimensions move, whatever the rest of the state does. This measures
both on the sequences a method would train on (prompt + response of each pair, one sequence per pair):

- ``first_token_norm``: median over sequences of ‖h‖ at the first position;
- ``token_norm_median``: median of ‖h‖ over all later positions;
- ``top_dims``: the ``top_k`` dimensions with the largest mean |h| over later positions;
- ``top_share_median``: median over later positions of the share of ‖h‖² on those dimensions
  (``top_k / hidden size`` if the norm were spread evenly).
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

import torch
from torch import nn

from safealign.diagnostics.stats import median
from safealign.errors import UserError
from safealign.train.hooks import check_layers, hidden_states


def measure_hidden_norms(model: nn.Module, sequences: Sequence[Sequence[int]], layers: Sequence[int],
                         top_k: int = 3) -> list[dict[str, Any]]:
    """One summary per layer (the keys above). Layer l is the residual stream after l blocks (0 = the
    embeddings' output), HF's ``output_hidden_states[l]``, as circuit breakers' target layers count."""
    if not sequences or any(len(s) < 2 for s in sequences):
        raise UserError("hidden-norms needs sequences of at least 2 tokens (a first position and later ones)")
    layers = check_layers(model, list(layers), "layers")
    first: dict[int, list[float]] = {layer: [] for layer in layers}
    later: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    with torch.no_grad():
        for ids in sequences:  # one at a time: no padding, so every position is a real token
            input_ids = torch.tensor([list(ids)], device=next(model.parameters()).device)
            states = hidden_states(model, layers, input_ids, torch.ones_like(input_ids))
            for layer in layers:
                h = states[layer][0].float().cpu()
                first[layer].append(float(h[0].norm()))
                later[layer].append(h[1:])
    out = []
    for layer in layers:
        h = torch.cat(later[layer])  # (positions, hidden)
        k = min(top_k, h.shape[1])
        top = h.abs().mean(0).topk(k).indices
        share = (h[:, top] ** 2).sum(-1) / (h ** 2).sum(-1).clamp(min=1e-12)
        out.append({"layer": layer, "first_token_norm": statistics.median(first[layer]),
                    "token_norm_median": median(h.norm(dim=-1)), "top_dims": top.tolist(),
                    "top_share_median": median(share), "even_share": k / h.shape[1],
                    "sequences": len(sequences), "positions": h.shape[0]})  # fmt: skip
    return out
