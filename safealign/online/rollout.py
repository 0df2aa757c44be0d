"""Sampling K completions per prompt in one batched ``generate`` call, and scoring their tokens.

A prompt is rendered with the chat template once for the policy (x) and once for the reference view
(x_s = transform(x), docs/online.md "E-RLHF"); the sampled completion ids are appended to both, never
decoded and re-tokenized, so policy and reference score identical tokens. Completions end at their
first eos (kept, it is a sampled action) or at ``max_new_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from safealign.data import PairEncoder, PromptTransform
from safealign.data.collate import pad_sequences
from safealign.eval.backends.base import eos_ids
from safealign.eval.backends.hf import explicit_generation_config
from safealign.models.modes import eval_mode
from safealign.online.prefix_cache import generate_from_shared_prefix
from safealign.train.logps import token_logps
from safealign.types import Message

Ids = tuple[int, ...]


@dataclass(frozen=True)
class PromptItem:
    id: str
    messages: tuple[Message, ...]
    harmful: bool | None


@dataclass(frozen=True)
class Views:
    """Per prompt: the policy's prompt ids and the reference's (equal where the transform leaves x); and how
    many prompts had their x view, and their x_s view where it differs from x, left-truncated."""

    policy: list[Ids]
    reference: list[Ids]
    truncated: int = 0
    reference_truncated: int = 0


def prompt_views(tokenizer: Any, items: Sequence[PromptItem], transform: PromptTransform,
                 max_prompt_length: int) -> Views:  # fmt: skip
    """Long prompts keep their last ``max_prompt_length`` tokens, as offline training does; a cut x_s view may
    lose the safety prefix at its start, so cuts are counted (the trainer logs them every step)."""
    encoder = PairEncoder(tokenizer, transform=transform, max_length=max_prompt_length + 1,
                          max_prompt_length=max_prompt_length)
    cuts = {"policy": 0, "reference": 0}

    def ids(messages: tuple[Message, ...], view: str) -> Ids:
        full = tuple(tokenizer(encoder.render_prompt(messages), add_special_tokens=False)["input_ids"])
        cuts[view] += len(full) > max_prompt_length
        return full[-max_prompt_length:]

    policy = [ids(item.messages, "policy") for item in items]
    reference = []
    for item, own in zip(items, policy):
        shown = transform(item.messages, item.harmful)
        reference.append(own if shown is item.messages or shown == item.messages else ids(shown, "reference"))
    return Views(policy, reference, cuts["policy"], cuts["reference"])


@torch.no_grad()
def sample(model: Any, tokenizer: Any, prompts: Sequence[Ids], k: int, *, max_new_tokens: int, temperature: float,
           top_p: float, top_k: int, reuse_prompt_cache: bool = True) -> list[Ids]:  # fmt: skip
    """``len(prompts)·k`` completions, prompt-major (the k samples of a prompt are consecutive), from ONE
    ``generate`` call on the left-padded prompts. ``reuse_prompt_cache``: each prompt is pre-filled once and
    its KV cache repeated k times (safealign/online/prefix_cache.py, where that is exact); otherwise
    transformers expands each prompt k times (``num_return_sequences``) and pre-fills every copy."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, ids in enumerate(prompts):
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        attention[i, width - len(ids):] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    # the sampling settings alone: a model's shipped decoding defaults (repetition_penalty …) would make the samples
    # come from another distribution than the policy whose log-probs the update uses
    def settings(copies: int) -> Any:  # every generate setting in the config, none beside it (transformers warns)
        return explicit_generation_config(tokenizer, model, max_new_tokens=max_new_tokens, do_sample=True,
                                          temperature=temperature, top_p=top_p, top_k=top_k,
                                          num_return_sequences=copies)

    with eval_mode(model):  # no dropout while sampling: the samples come from the policy itself
        out = generate_from_shared_prefix(model, input_ids, attention, k, generation_config=settings(1)) \
            if reuse_prompt_cache else None
        if out is None:
            out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=settings(k))
    stops = eos_ids(tokenizer, model)
    completions = []
    for row in out[:, width:].tolist():
        end = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
        completions.append(tuple(row[:end]))
    return completions


def decode(tokenizer: Any, completions: Sequence[Ids]) -> list[str]:
    return [tokenizer.decode(list(ids), skip_special_tokens=True) for ids in completions]


def completion_logps(model: Any, prompts: Sequence[Ids], completions: Sequence[Ids], pad_token_id: int, *,
                     chunk_size: int = 1024) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Per-token log-probs ``(N, C)`` of each completion after its prompt, and the mask ``(N, C)``.

    Rows are right-padded ``prompt + completion``; the log-probs come from ``safealign.train.logps`` (the
    only place logits become log-probs) and are gathered into completion-aligned columns.
    """
    device = next(model.parameters()).device
    ids, attention, response = pad_sequences(list(prompts), list(completions), pad_token_id)
    full = token_logps(model, ids.to(device), attention.to(device), response.to(device), chunk_size=chunk_size)
    width = max(1, max(len(c) for c in completions))
    offsets = torch.arange(width, device=device)
    starts = torch.tensor([len(p) for p in prompts], device=device)
    lengths = torch.tensor([len(c) for c in completions], device=device)
    cols = (starts[:, None] + offsets[None]).clamp(max=full.shape[1] - 1)
    mask = (offsets[None] < lengths[:, None]).float()
    return full.gather(1, cols) * mask, mask
