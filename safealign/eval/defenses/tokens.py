"""Token-level decoding helpers shared by the defenses that decode with the model itself (DeAL, MPO).

Prompts are left-padded so every row's next token sits in the last column; position ids follow the
attention mask (a left-padded row starts at position 0 at its first real token, as ``generate`` does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from safealign.eval.backends.base import (
    Conversation,
    GenerationParams,
    decode_answer,
    special_stops,
    too_long,
    truncate_at_stop,
)
from safealign.eval.defenses.base import Answer, Defense, batched_answers
from safealign.types import Completion

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """Left-padded rows: ``ids`` ``(B, T)`` and ``mask`` ``(B, T)``."""

    ids: Tensor
    mask: Tensor

    @property
    def positions(self) -> Tensor:
        return (self.mask.cumsum(-1) - 1).clamp(min=0)

    def extend(self, tokens: Tensor) -> Batch:
        """Append one column ``(B,)`` or several ``(B, n)`` of real tokens."""
        tokens = tokens.view(tokens.shape[0], -1)
        return Batch(torch.cat([self.ids, tokens], 1), torch.cat([self.mask, torch.ones_like(tokens)], 1))

    def rows(self, index: Sequence[int] | Tensor) -> Batch:
        index = torch.as_tensor(index, dtype=torch.long, device=self.ids.device)
        return Batch(self.ids[index], self.mask[index])

    def repeat(self, k: int) -> Batch:
        return Batch(self.ids.repeat_interleave(k, 0), self.mask.repeat_interleave(k, 0))

    def real(self, row: int) -> list[int]:
        """Row ``row``'s tokens, its left padding left out."""
        return self.ids[row][self.mask[row].bool()].tolist()


def pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode(tokenizer: Any, prompts: Sequence[str], params: GenerationParams, device: Any) -> Batch:
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=params.add_special_tokens)
    finally:
        tokenizer.padding_side = old
    return Batch(enc["input_ids"].to(device), enc["attention_mask"].to(device))


def answers_within_limit(defense: Defense, inner: Any, conversations: Sequence[Conversation], params: GenerationParams,
                         run: Callable[[Sequence[Conversation]], list[Answer]]) -> list[Answer]:  # fmt: skip
    """``run`` in batches (:func:`~safealign.eval.defenses.base.batched_answers`) over the conversations whose prompt
    the hf backend ``inner`` would run; one over its limit (generation.max_prompt_tokens, else the context length
    less max_new_tokens) is not decoded and gets the backend's own "prompt too long" error, so a defended run and
    the bare one leave the same prompts out of their rates."""
    lengths = [inner.prompt_tokens(c, params) for c in conversations]
    errors = too_long(lengths, *inner.prompt_limit(params), logger)
    fitting = [c for c, error in zip(conversations, errors) if error is None]
    answered = iter(batched_answers(defense, fitting, params, run) if fitting else [])
    return [next(answered) if error is None else Answer(error, defense.step("decode")) for error in errors]


def answer_ends(tokenizer: Any, ends: set[int], stop: Sequence[str]) -> set[int]:
    """The tokens that end an answer under generation.stop ``stop``: ``ends`` (the bare model's,
    :func:`~safealign.eval.backends.base.stop_ids`) and every stop string that is exactly a special token
    (:func:`~safealign.eval.backends.base.special_stops`, which refuses one holding a special token among other
    text). Answers are decoded without special tokens, so such a string is never in their text (:func:`holds_stop`
    never meets it): the hf and vllm backends end the answer at the token, not counted, its finish "stop"; so do
    DeAL and MPO, or a defended answer would run on where the bare one stops."""
    return set(ends) | set(special_stops(tokenizer, stop).values())


def holds_stop(tokenizer: Any, prompt: Sequence[int], tokens: Sequence[int], stop: Sequence[str]) -> bool:
    """Whether the answer ``tokens``, read after the prompt ``prompt`` as the backends read it
    (:func:`~safealign.eval.backends.base.decode_answer`: a SentencePiece Strip decoder keeps its leading space),
    holds one of the ``stop`` strings (generation.stop), where the hf backend ends a row (its stopping criteria
    match the answer alone). A stop string that is a special token is an end token instead (:func:`answer_ends`)."""
    return bool(stop) and truncate_at_stop(decode_answer(tokenizer, prompt, tokens), stop)[1]


def next_logprobs(model: Any, batch: Batch) -> Tensor:
    """``log p(· | row)`` for the next token of every row, ``(B, V)`` float32 (one forward pass)."""
    with torch.no_grad():
        logits = model(input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.positions,
                       use_cache=False).logits[:, -1]  # fmt: skip
    return torch.log_softmax(logits.float(), -1)


def sample_token(logprobs: Tensor, params: GenerationParams, generator: torch.Generator) -> Tensor:
    """The next token of every row ``(B,)`` from log-probs ``(B, V)``: greedy, or sampled as the HF backend
    samples (``temperature``, then nucleus ``top_p``: the smallest set of likeliest tokens whose mass
    reaches top_p, at least one)."""
    if not params.do_sample:
        return logprobs.argmax(-1)
    probs = torch.softmax(logprobs / max(params.temperature, 1e-6), -1)
    if params.top_p < 1.0:
        ordered, order = probs.sort(-1, descending=True)
        before = ordered.cumsum(-1) - ordered  # mass of the likelier tokens
        ordered = ordered.masked_fill(before >= params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, ordered)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def to_completion(tokenizer: Any, prompt: Sequence[int], tokens: Sequence[int], params: GenerationParams, *,
                  ends: set[int], ended: bool, seconds: float = 0.0) -> Completion:  # fmt: skip
    """The answer text of ``tokens`` up to the first of ``ends`` (:func:`answer_ends`), read after the prompt
    ``prompt`` (:func:`~safealign.eval.backends.base.decode_answer`, as the backends decode it) and cut at any stop
    string. ``tokens`` counts the answer's tokens without the end token, as the HF backend counts them."""
    n = next((i for i, t in enumerate(tokens) if t in ends), len(tokens))
    text, stopped = truncate_at_stop(decode_answer(tokenizer, prompt, tokens[:n]), params.stop)
    finish = "stop" if stopped or ended or n < len(tokens) else "length"
    return Completion(text=text, seconds=seconds, meta={"tokens": n, "finish": finish})
