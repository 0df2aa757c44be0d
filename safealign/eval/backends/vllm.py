"""vLLM backend (GPU, optional): same ChatModel interface; ``vllm`` is imported only here.

vLLM seeds each request on its own, so request ``i`` of a batch gets ``request_seed(params.seed, i)``
(:func:`safealign.eval.backends.base.request_seed`): identical conversations in one batch differ, and a
re-run draws the same samples.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from safealign.errors import UserError
from safealign.eval.backends.base import Conversation, GenerationParams, render_prompt, request_seed
from safealign.types import Completion


class VLLMChatModel:
    def __init__(self, model_name: str, *, system_prompt: str | None = None, **engine_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError:
            raise UserError("the vllm backend needs the optional package 'vllm' (pip install vllm)") from None
        self._vllm = vllm
        self.llm = vllm.LLM(model=model_name, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.system_prompt = system_prompt

    @classmethod
    def from_config(cls, config: Any, *, model: Any = None, tokenizer: Any = None) -> "VLLMChatModel":
        kwargs = {"trust_remote_code": config.trust_remote_code}
        if config.dtype:
            kwargs["dtype"] = config.dtype
        return cls(config.name, system_prompt=config.system_prompt, **kwargs)

    def _render(self, conversation: Conversation, params: GenerationParams) -> str:
        return render_prompt(self.tokenizer, conversation, params, self.system_prompt)

    def _sampling(self, params: GenerationParams, seed: int) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature if params.do_sample else 0.0,
            top_p=params.top_p if params.do_sample else 1.0,
            stop=list(params.stop) or None,
            seed=seed,
        )

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Completion]:
        sampling = [self._sampling(params, request_seed(params.seed, i)) for i in range(len(conversations))]
        start = time.perf_counter()
        try:
            outputs = self.llm.generate([self._render(c, params) for c in conversations], sampling)
        except (RuntimeError, ValueError) as exc:
            return [Completion(text="", error=f"{type(exc).__name__}: {exc}") for _ in conversations]
        seconds = (time.perf_counter() - start) / max(1, len(conversations))
        return [
            Completion(text=o.outputs[0].text, seconds=seconds, meta={"finish": o.outputs[0].finish_reason})
            for o in outputs
        ]
