"""Local Hugging Face causal LM backend: batched generation with left padding and the chat template."""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from safealign.eval.backends.base import (
    Conversation,
    GenerationParams,
    render_prompt,
    stop_ids,
    truncate_at_stop,
)
from safealign.interrupt import raise_if_stop_requested, stop_requested
from safealign.types import Completion

logger = logging.getLogger(__name__)


class _StopFlag(StoppingCriteria):
    """Ends generation at the next token once a stop is requested (SIGTERM), instead of after
    ``max_new_tokens`` more steps; the backend then drops the cut batch."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), stop_requested(), dtype=torch.bool, device=input_ids.device)


class HFChatModel:
    """Wraps an already-loaded ``(model, tokenizer)``; see :meth:`from_config` to load one."""

    def __init__(self, model: Any, tokenizer: Any, *, system_prompt: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt

    @classmethod
    def from_config(cls, config: Any, *, model: Any = None, tokenizer: Any = None) -> "HFChatModel":
        if model is None or tokenizer is None:
            from safealign.models.load import load_model

            model, tokenizer = load_model(
                config.name, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code
            )
        return cls(model, tokenizer, system_prompt=config.system_prompt)

    def render(self, conversation: Conversation, params: GenerationParams) -> str:
        """The exact prompt text the model sees (chat template + generation prompt + any prefill)."""
        return render_prompt(self.tokenizer, conversation, params, self.system_prompt)

    def prompt_tokens(self, conversation: Conversation, params: GenerationParams) -> int:
        """Tokens of the prompt as the model sees it (chat template included)."""
        return self._n_tokens(self.render(conversation, params), params)

    def _n_tokens(self, text: str, params: GenerationParams) -> int:
        # one count for the pre-run bound (prompt_tokens) and the check at generation time
        return len(self.tokenizer(text, add_special_tokens=params.add_special_tokens)["input_ids"])

    def context_length(self) -> int | None:
        config = getattr(self.model, "config", None)
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def prompt_limit(self, params: GenerationParams) -> tuple[int | None, str]:
        """The most prompt tokens a generation may start from, and where that number comes from."""
        if params.max_prompt_tokens is not None:
            return params.max_prompt_tokens, "generation.max_prompt_tokens"
        context = self.context_length()
        if context is None:
            return None, "unknown context length"
        return context - params.max_new_tokens, f"context length {context} - max_new_tokens {params.max_new_tokens}"

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Completion]:
        prompts = [self.render(c, params) for c in conversations]
        lengths = [self._n_tokens(p, params) for p in prompts]
        out: list[Completion | None] = [None] * len(prompts)
        limit, source = self.prompt_limit(params)
        for i, n in enumerate(lengths):
            if limit is not None and n > limit:  # past the context the model would produce garbage, or fail
                out[i] = Completion(text="", error=f"prompt too long: {n} tokens, over {limit} ({source})",
                                    meta={"prompt_tokens": n, "too_long": True})  # fmt: skip
        if any(c is not None for c in out):
            logger.warning("%d of %d prompts are longer than %s tokens (%s): not run, recorded as errors",
                           sum(c is not None for c in out), len(out), limit, source)  # fmt: skip
        # Sort by length so each batch pads little; results are put back in input order.
        order = sorted((i for i in range(len(prompts)) if out[i] is None), key=lambda i: lengths[i])
        for start in range(0, len(order), max(1, params.batch_size)):
            raise_if_stop_requested()
            idx = order[start : start + params.batch_size]
            for i, completion in zip(idx, self._generate_batch([prompts[i] for i in idx], params)):
                out[i] = completion
        return out  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[str], params: GenerationParams) -> list[Completion]:
        tok = self.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        try:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=params.add_special_tokens)
        finally:
            tok.padding_side = old_side
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        start = time.perf_counter()
        try:
            with torch.no_grad():
                torch.manual_seed(params.seed)
                output = self.model.generate(**enc, **self._generate_kwargs(params),
                                             stopping_criteria=StoppingCriteriaList([_StopFlag()]))
        except (RuntimeError, ValueError) as exc:  # e.g. CUDA OOM: recorded per attempt, run goes on
            logger.warning("generation failed for a batch of %d: %s", len(prompts), exc)
            return [Completion(text="", error=f"{type(exc).__name__}: {exc}") for _ in prompts]
        raise_if_stop_requested()  # a batch cut short by a stop request is not a completion
        seconds = (time.perf_counter() - start) / len(prompts)
        new_tokens = output[:, enc["input_ids"].shape[1] :]  # (B, T_new)
        return [self._completion(row, params, seconds) for row in new_tokens]

    def _generate_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        tok = self.tokenizer
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.do_sample,
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        }
        if params.do_sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:  # keep a model's sampling defaults from triggering "flags ignored" warnings
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        return kwargs

    def _completion(self, row: torch.Tensor, params: GenerationParams, seconds: float) -> Completion:
        tok = self.tokenizer
        ids = row.tolist()
        ends = stop_ids(tok, self.model)  # generate's own end ids (generation_config's too) and the padding
        n_tokens = next((i for i, t in enumerate(ids) if t in ends), len(ids))
        text = tok.decode(ids[:n_tokens], skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, params.stop)
        finish = "stop" if stopped or n_tokens < len(ids) else "length"
        return Completion(text=text, seconds=seconds, meta={"tokens": n_tokens, "finish": finish})
