"""Aligned-model scores of responses: the ``chosen_scores`` column PoFT trains on (docs/loss-inputs.md).

PoFT compares the policy's per-token-averaged log-prob of each SFT (chosen) response with the same
quantity under K aligned models. :func:`chosen_scores` computes one aligned model's column with the
trainer's own rendering, truncation and log-prob code, so with the same ``max_length`` and
``max_prompt_length`` the two sides of PoFT's comparison average over the same response tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from safealign.data import PairEncoder
from safealign.data.collate import pad_sequences
from safealign.models.modes import eval_mode
from safealign.train.logps import sequence_logps
from safealign.types import PreferencePair


@torch.no_grad()
def chosen_scores(model: nn.Module, tokenizer: Any, pairs: Sequence[PreferencePair], *, max_length: int = 512,
                  max_prompt_length: int | None = 256, batch_size: int = 8,
                  chunk_size: int = 1024, per_token: bool = True) -> list[float | None]:
    """Per-token-averaged log-prob of each pair's chosen response after its prompt (``per_token=False``:
    summed over its tokens), in ``pairs`` order; None where the prompt leaves no room for a response token
    within ``max_length``."""
    encoder = PairEncoder(tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
    # only the chosen side is scored, after its own prompt, so a cross-prompt pair needs no joint view
    encoded, _ = encoder.encode_all(dataclasses.replace(p, rejected_prompt=None) for p in pairs)
    device = next(model.parameters()).device
    scores: list[float | None] = [None] * len(pairs)
    with eval_mode(model):
        for start in tqdm(range(0, len(encoded), batch_size), desc="scoring chosen responses", unit="batch"):
            batch = encoded[start : start + batch_size]
            # pad id 0: padded positions are masked out of attention and never scored
            tensors = pad_sequences([e.prompt_ids for e in batch], [e.chosen_ids for e in batch], 0)
            out = sequence_logps(model, *(t.to(device) for t in tensors), chunk_size=chunk_size)
            for item, total, count in zip(batch, out.logps.tolist(), out.tokens.tolist()):
                scores[item.index] = total / max(count, 1.0) if per_token else total  # the loss's per_token rule
    return scores


def response_scores(model: nn.Module, tokenizer: Any, items: Sequence[tuple[str, str]], *, source: str,
                    open_ends: Sequence[bool] | None = None, **scoring: Any) -> list[float | None]:
    """:func:`chosen_scores` of each ``(user prompt, response)``, the response as the answer to a one-turn chat;
    ``source`` names where the texts came from (in a row's error messages); ``open_ends[i]``: response i was cut at
    the generation limit, so it is scored without the template's end-of-turn tokens (``chosen_cut``,
    safealign/data/tokenize.py); ``scoring``: chosen_scores' options."""
    opened = list(open_ends) if open_ends is not None else [False] * len(items)
    rows = [PreferencePair(prompt=({"role": "user", "content": prompt},), chosen=response, rejected="", source=source,
                           row=i, meta={"chosen_cut": True} if cut else {})
            for i, ((prompt, response), cut) in enumerate(zip(items, opened, strict=True))]
    return chosen_scores(model, tokenizer, rows, **scoring) if rows else []
