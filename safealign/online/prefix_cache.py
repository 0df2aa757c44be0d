"""K samples per prompt from ONE pre-fill of each prompt: the prompt's KV cache is computed once and repeated.

``generate(..., num_return_sequences=K)`` repeats every prompt K times before its pre-fill, so the prompt's
keys and values are computed K times although they are identical (no dropout in eval mode, the same tokens
and positions). Here the left-padded prompts minus their last column go through the model once, the cache is
repeated K times along the batch (``Cache.batch_repeat_interleave``, the order ``num_return_sequences``
uses: the K copies of a prompt consecutive), and one ``generate`` call continues from it: it feeds the last
prompt column and samples exactly as the plain call, with the same logits processors and the same random
draws (one ``(N·K, V)`` draw per step), so the completions have the same distribution and, up to float
rounding in the logits, the same tokens for the same seed (tests/online/test_prefix_cache.py).

Only where that is exact: a decoder-only transformers model whose default cache is a ``DynamicCache`` of
full-attention layers. Anything else (sliding-window or linear-attention layers, a static or offloaded
``cache_implementation``, prompt-learning adapters, remote code, a model without a cache argument) returns
``None`` and the caller uses the plain path; the reason is logged once per model class (docs/online.md).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

_warned: set[tuple[str, str]] = set()


def _hf_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (a LoRA adapter's layers live inside it, so calling it
    directly runs the adapter exactly as the wrapper does, or not, under ``disable_adapter``)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _cache_argument(hf: Any) -> str | None:
    params = inspect.signature(hf.forward).parameters
    # transformers renamed ``past_key_values`` to ``cache`` during 5.x; the project supports both
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def new_prefix_cache(model: Any) -> tuple[Any, str] | str:
    """An empty cache and the forward's name for it, or why prompt-cache reuse would not be exact here."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    hf = _hf_model(model)
    config = getattr(hf, "config", None)
    peft_config = getattr(model, "active_peft_config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return "not a decoder-only transformers model"
    if getattr(peft_config, "is_prompt_learning", False):
        return "a prompt-learning adapter extends the cache itself"
    if getattr(hf, "is_remote_code", lambda: False)():
        return "remote-code model"
    supports = getattr(hf, "_supports_default_dynamic_cache", None)
    if supports is None or not supports():
        return "the model does not use transformers' DynamicCache"
    implementation = getattr(getattr(hf, "generation_config", None), "cache_implementation", None)
    if implementation is not None:
        return f"generation_config.cache_implementation={implementation!r}"
    name = _cache_argument(hf)
    if name is None:
        return "its forward takes no cache argument"
    cache = DynamicCache(config=config)
    kinds = {type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer}
    if kinds:  # sliding-window / linear-attention layers keep state that a repeated prefix was not tested with
        return f"cache layers {sorted(kinds)} (only full-attention DynamicLayer is reused)"
    return cache, name


def _note_fallback(model: Any, reason: str) -> None:
    key = (type(_hf_model(model)).__name__, reason)
    if key not in _warned:
        _warned.add(key)
        logger.warning("generation.reuse_prompt_cache: %s for %s; sampling re-computes each prompt K times "
                       "(num_return_sequences)", reason, key[0])


def generate_from_shared_prefix(model: Any, input_ids: Tensor, attention_mask: Tensor, k: int,
                                **generate_kwargs: Any) -> Tensor | None:  # fmt: skip
    """``generate``'s output for the left-padded ``(N, W)`` prompts with each prompt's K samples consecutive,
    from one pre-fill per prompt; ``None`` (logged once) where that would not be exact."""
    if input_ids.shape[1] < 2:  # nothing to share before the column generate feeds itself
        return None
    made = new_prefix_cache(model)
    if isinstance(made, str):
        _note_fallback(model, made)
        return None
    cache, name = made
    hf = _hf_model(model)
    params = inspect.signature(hf.forward).parameters
    prefix = {"input_ids": input_ids[:, :-1], "attention_mask": attention_mask[:, :-1], name: cache,
              "use_cache": True}
    if "position_ids" in params:  # as generate derives them: left padding shifts each row's positions
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        prefix["position_ids"] = positions[:, :-1]
    if "logits_to_keep" in params:  # the pre-fill's logits are not used
        prefix["logits_to_keep"] = 1
    with torch.no_grad():
        hf(**prefix)
    cache.batch_repeat_interleave(k)
    given = generate_kwargs.get("generation_config")
    if given is None:  # one sample per repeated row; a given config must say so itself (transformers warns on both)
        generate_kwargs["num_return_sequences"] = 1
    elif given.num_return_sequences != 1:
        raise ValueError(f"generate_from_shared_prefix repeats each prompt k={k} times itself; its generation_config "
                         f"must ask for one sequence per row, not num_return_sequences={given.num_return_sequences}")
    return model.generate(input_ids=input_ids.repeat_interleave(k, dim=0),
                          attention_mask=attention_mask.repeat_interleave(k, dim=0), **{name: cache},
                          **generate_kwargs)
