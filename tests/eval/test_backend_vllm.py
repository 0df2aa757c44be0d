"""The vLLM backend against a fake ``vllm`` module (vLLM itself needs a GPU and is not installed for tests)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest

from safealign.eval.backends.base import GenerationParams, request_seed


@dataclass
class _SamplingParams:
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str] | None
    seed: int | None


class _FakeLLM:
    """Samples like vLLM with a per-request seed: the answer is a function of (prompt, that request's seed).
    Like ``vllm.LLM.generate`` it takes one SamplingParams for every prompt, or a list of one per prompt."""

    def __init__(self, model: str, **kwargs) -> None:
        from safealign.models.tiny import tiny_tokenizer

        self._tokenizer = tiny_tokenizer()

    def get_tokenizer(self):
        return self._tokenizer

    def generate(self, prompts, sampling):
        per_prompt = sampling if isinstance(sampling, list) else [sampling] * len(prompts)
        assert len(per_prompt) == len(prompts)
        output = types.SimpleNamespace
        return [output(outputs=[output(text=f"sample with seed {p.seed}", finish_reason="length")])
                for p in per_prompt]  # fmt: skip


@pytest.fixture()
def fake_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=_FakeLLM, SamplingParams=_SamplingParams))


def test_identical_conversations_of_one_batch_get_their_own_seeds(fake_vllm):
    from safealign.eval.backends.vllm import VLLMChatModel

    model = VLLMChatModel("fake-model")
    conversation = ({"role": "user", "content": "Write an attack prompt."},)
    params = GenerationParams(do_sample=True, seed=7)
    texts = [c.text for c in model.generate([conversation] * 4, params)]
    assert len(set(texts)) == 4  # TAP's branches, PAIR's streams, zero-shot's cases must not all be one sample
    assert texts == [f"sample with seed {request_seed(7, i)}" for i in range(4)]
    assert [c.text for c in model.generate([conversation] * 4, params)] == texts  # a re-run draws the same


def test_request_seeds_are_deterministic_distinct_and_in_range():
    seeds = [request_seed(0, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**31 for s in seeds)
    assert seeds == [request_seed(0, i) for i in range(1000)]
    assert request_seed(1, 0) not in seeds[:2]  # a neighbouring seed does not replay this batch shifted by one
