"""Response embeddings for pair selection (REAL; docs/seed-methods.md).

An embedding is the mean of the model's last hidden layer over a response's tokens, weighted by the
attention mask, then L2-normalised, so the cosine similarity of two responses is their dot product. A
response is embedded alone, without its prompt: REAL compares the two answers "independently of prompts",
and both answers of a pair share the prompt anyway.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from safealign.data.collate import pad_sequences
from safealign.errors import UserError
from safealign.models.modes import eval_mode


@torch.no_grad()
def embed_texts(model: nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 512,
                batch_size: int = 8) -> Tensor:
    """``(N, H)`` float32 unit vectors, one per text (its first ``max_length`` tokens); a text with no tokens gets a
    zero vector."""
    if max_length < 1 or batch_size < 1:  # 0 would embed nothing, -3 cut the last 3 tokens
        raise UserError(f"embedding needs max_length and batch_size >= 1, got {max_length} and {batch_size}")
    device = next(model.parameters()).device
    ids = [tuple(tokenizer(t, add_special_tokens=False)["input_ids"][:max_length]) for t in texts]
    out = torch.zeros(len(texts), _hidden_size(model), dtype=torch.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch: less padding
    with eval_mode(model):
        for start in tqdm(range(0, len(order), batch_size), desc="embedding responses", unit="batch",
                          disable=len(order) < 64):
            rows = [i for i in order[start : start + batch_size] if ids[i]]
            if not rows:
                continue
            # the "prompt" slot is empty: the whole sequence is the response, and only it is pooled
            input_ids, attention, _ = pad_sequences([() for _ in rows], [ids[i] for i in rows], 0)
            hidden = _last_hidden(model, input_ids.to(device), attention.to(device)).float()
            mask = attention.to(device, hidden.dtype)[..., None]
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
    return out


def _last_hidden(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """The last hidden layer (after the final norm, as ``output_hidden_states`` gives it); through the decoder
    alone when the model exposes it, so the LM head's ``T × V`` logits are never computed."""
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        return get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                 use_cache=False).hidden_states[-1]


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if config is not None and callable(getattr(config, "get_text_config", None)):
        config = config.get_text_config()
    size = getattr(config, "hidden_size", None)
    if size is None:
        raise ValueError(f"{type(model).__name__}: no config.hidden_size to size the embeddings")
    return int(size)
