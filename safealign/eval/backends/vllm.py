"""vLLM backend (GPU, optional): same ChatModel interface; ``vllm`` is imported only here.

vLLM seeds each request on its own: request ``i`` of a batch gets its conversation's seed from
``params.seeds`` (the evaluation's attempts carry one each, so a sample follows its attempt, not its place),
else ``request_seed(params.seed, i)`` (:func:`safealign.eval.backends.base.conversation_seeds`): identical
conversations in one batch differ, and a re-run draws the same samples.

Prompts are tokenised here, with the tokenizer's special tokens only when ``params.add_special_tokens``
(as the HF backend does: a rendered chat template already starts with BOS), and sent as token ids, so
vLLM adds nothing on top. A prompt longer than ``generation.max_prompt_tokens`` (default: the engine's
``max_model_len`` minus ``max_new_tokens``) is not run and comes back as an error of its own, as in the
HF backend, instead of failing the whole call in vLLM.

A stop string that is exactly a special token is sent as a stop token id as well (vLLM matches stop strings in
text decoded without special tokens, where it never occurs), so the answer ends there as on the HF backend
(:func:`~safealign.eval.backends.base.special_stops`). ``meta["tokens"]`` leaves out the token that ended an
answer (eos or a stop token id; vLLM lists it in ``token_ids``), as the HF backend counts.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from safealign.errors import UserError
from safealign.eval.backends.base import (
    Conversation,
    GenerationParams,
    prompt_limit,
    conversation_seeds,
    render_prompt,
    special_stops,
    too_long,
)
from safealign.types import Completion

logger = logging.getLogger(__name__)


class VLLMChatModel:
    backend = "vllm"  # the name a run's model identity records when ``spec`` names no local or hub weights

    def __init__(self, model_name: str, *, system_prompt: str | None = None, **engine_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError:
            raise UserError("the vllm backend needs the optional package 'vllm' (pip install vllm)") from None
        self._vllm = vllm
        self.spec = model_name  # what vLLM loaded: a local folder, a hub id (safealign.models.identity)
        self.revision = engine_kwargs.get("revision")  # the hub id's commit, branch or tag vLLM was asked for
        self.llm = vllm.LLM(model=model_name, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.system_prompt = system_prompt

    @classmethod
    def from_config(cls, config: Any, *, model: Any = None, tokenizer: Any = None) -> "VLLMChatModel":
        kwargs = {"trust_remote_code": config.trust_remote_code}
        if getattr(config, "revision", None) is not None:
            kwargs["revision"] = config.revision
        if config.dtype:
            kwargs["dtype"] = config.dtype
        return cls(config.name, system_prompt=config.system_prompt, **kwargs)

    def render(self, conversation: Conversation, params: GenerationParams) -> str:
        """The exact prompt text the model sees (chat template + generation prompt + any prefill)."""
        return render_prompt(self.tokenizer, conversation, params, self.system_prompt)

    def _token_ids(self, text: str, params: GenerationParams) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=params.add_special_tokens)["input_ids"])

    def prompt_tokens(self, conversation: Conversation, params: GenerationParams) -> int:
        """Tokens of the prompt as the model sees it (chat template included)."""
        return len(self._token_ids(self.render(conversation, params), params))

    def context_length(self) -> int | None:
        """The engine's ``max_model_len`` (None when this vLLM version does not expose it where looked)."""
        engine = getattr(self.llm, "llm_engine", None)
        for config in (getattr(engine, "model_config", None),
                       getattr(getattr(engine, "vllm_config", None), "model_config", None)):  # fmt: skip
            value = getattr(config, "max_model_len", None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def prompt_limit(self, params: GenerationParams) -> tuple[int | None, str]:
        """The most prompt tokens a generation may start from, and where that number comes from."""
        return prompt_limit(params, self.context_length())

    def _sampling(self, params: GenerationParams, seed: int) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature if params.do_sample else 0.0,
            top_p=params.top_p if params.do_sample else 1.0,
            stop=list(params.stop) or None,
            stop_token_ids=sorted(set(special_stops(self.tokenizer, params.stop).values())) or None,
            seed=seed,
        )

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Completion]:
        prompts = [self._token_ids(self.render(c, params), params) for c in conversations]
        out = too_long([len(p) for p in prompts], *self.prompt_limit(params), logger)
        run = [i for i in range(len(prompts)) if out[i] is None]
        if not run:
            return out  # type: ignore[return-value]
        # request i keeps its seed whichever prompts around it were too long
        seeds = conversation_seeds(params, len(prompts))
        sampling = [self._sampling(params, seeds[i]) for i in run]
        start = time.perf_counter()
        try:
            outputs = self.llm.generate([{"prompt_token_ids": prompts[i]} for i in run], sampling)
        except (RuntimeError, ValueError) as exc:
            for i in run:
                out[i] = Completion(text="", error=f"{type(exc).__name__}: {exc}")
            return out  # type: ignore[return-value]
        seconds = (time.perf_counter() - start) / len(run)
        for i, o in zip(run, outputs):
            first = o.outputs[0]
            meta: dict[str, Any] = {"finish": first.finish_reason}
            token_ids = getattr(first, "token_ids", None)
            if token_ids is not None:
                meta["tokens"] = len(token_ids) - int(_ended_by_token(first) and len(token_ids) > 0)
            out[i] = Completion(text=first.text, seconds=seconds, meta=meta)
        return out  # type: ignore[return-value]


def _ended_by_token(output: Any) -> bool:
    """Whether vLLM ended ``output`` at a token it lists last in ``token_ids``: eos (``stop_reason`` None) or a
    stop token id (an int: a ``generation_config`` eos vLLM adds to ``stop_token_ids``, or a special-token stop
    string); a stop string's ``stop_reason`` is the string, and its tokens count up to the one completing it."""
    return output.finish_reason == "stop" and not isinstance(getattr(output, "stop_reason", None), str)
