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
    stop_token_ids: list[int] | None = None


def _bos_tokenizer():
    """The tiny tokenizer, adding BOS when asked for special tokens (as Llama's does); its chat template
    starts with that BOS already."""
    from tokenizers import processors

    from safealign.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tokenizer.bos_token} $A", special_tokens=[(tokenizer.bos_token, bos)])
    return tokenizer


class _FakeLLM:
    """Samples like vLLM with a per-request seed: the answer is a function of (prompt, that request's seed).
    Like ``vllm.LLM.generate`` it takes one SamplingParams for every prompt, or a list of one per prompt; a
    text prompt is tokenised with the special tokens added, a ``{"prompt_token_ids": ...}`` prompt taken as
    it is, and a prompt longer than ``max_model_len`` fails the whole call with a ValueError, as in vLLM."""

    def __init__(self, model: str, max_model_len: int = 2048, **kwargs) -> None:
        self._tokenizer = _bos_tokenizer()
        self.max_model_len = max_model_len
        self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=max_model_len))
        self.prompts: list[list[int]] = []  # the token ids of every prompt generated from
        self.sampling: list[_SamplingParams] = []  # the SamplingParams of every request
        self.reply = {"finish_reason": "length", "token_ids": [1, 2]}  # every output's (stop_reason: when set)

    def get_tokenizer(self):
        return self._tokenizer

    def generate(self, prompts, sampling):
        per_prompt = sampling if isinstance(sampling, list) else [sampling] * len(prompts)
        assert len(per_prompt) == len(prompts)
        ids = [p["prompt_token_ids"] if isinstance(p, dict) else self._tokenizer(p)["input_ids"] for p in prompts]
        limit = self.max_model_len
        for prompt in ids:
            if len(prompt) > limit:
                raise ValueError(f"The decoder prompt (length {len(prompt)}) is longer than the maximum model length "
                                 f"of {limit}.")  # fmt: skip
        self.prompts.extend(ids)
        self.sampling.extend(per_prompt)
        output = types.SimpleNamespace
        return [output(outputs=[output(text=f"sample with seed {p.seed}", **self.reply)]) for p in per_prompt]


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


def test_prompt_is_sent_as_token_ids_with_special_tokens_only_on_request(fake_vllm):
    from safealign.eval.backends.vllm import VLLMChatModel

    model = VLLMChatModel("fake-model")
    tokenizer, bos = model.tokenizer, model.tokenizer.bos_token_id
    conversation = ({"role": "user", "content": "hi"},)
    model.generate([conversation], GenerationParams())
    rendered = model.render(conversation, GenerationParams())
    assert rendered.startswith(tokenizer.bos_token)  # the chat template's own BOS ...
    assert model.llm.prompts[-1] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert model.llm.prompts[-1][:2] != [bos, bos]  # ... and no second one on top
    raw = ({"role": "user", "content": "[INST] classify [/INST]"},)  # a classifier judge's raw prompt
    model.generate([raw], GenerationParams(chat_template=False, add_special_tokens=True))
    assert model.llm.prompts[-1] == [bos, *tokenizer("[INST] classify [/INST]", add_special_tokens=False)["input_ids"]]
    model.generate([raw], GenerationParams(chat_template=False))
    assert model.llm.prompts[-1][0] != bos


def test_over_long_prompt_is_an_error_of_its_own_and_the_others_run(fake_vllm):
    from safealign.eval.backends.vllm import VLLMChatModel

    model = VLLMChatModel("fake-model", max_model_len=64)
    params = GenerationParams(max_new_tokens=8, do_sample=True, seed=3)
    assert model.prompt_limit(params) == (56, "context length 64 - max_new_tokens 8")
    assert model.prompt_limit(GenerationParams(max_prompt_tokens=20)) == (20, "generation.max_prompt_tokens")
    convs = [({"role": "user", "content": "hi"},), ({"role": "user", "content": "word " * 40},),
             ({"role": "user", "content": "hello"},)]  # fmt: skip
    assert model.prompt_tokens(convs[1], params) > 56 >= model.prompt_tokens(convs[0], params)
    short, long, other = model.generate(convs, params)
    assert long.text == "" and long.error.startswith("prompt too long:") and long.meta["too_long"]
    assert short.error is None and other.error is None and len(model.llm.prompts) == 2
    # each request keeps the seed of its place in the call, whichever prompts were left out
    assert short.text == f"sample with seed {request_seed(3, 0)}"
    assert other.text == f"sample with seed {request_seed(3, 2)}"
    assert short.meta == {"finish": "length", "tokens": 2}
    assert model.generate([convs[1]], params)[0].error.startswith("prompt too long:")  # none to run: no call
    assert len(model.llm.prompts) == 2
    # a seed per conversation (the attempt's, from the pipeline) goes with its own request
    seeded = model.generate(convs, GenerationParams(max_new_tokens=8, do_sample=True, seed=3, seeds=(31, 32, 33)))
    assert [c.text for c in seeded if c.error is None] == ["sample with seed 31", "sample with seed 33"]


def test_over_long_behaviors_are_bounded_before_the_run(fake_vllm):
    from safealign.eval.backends.vllm import VLLMChatModel
    from safealign.eval.bounds import bound_by_tokens
    from safealign.types import Behavior

    model = VLLMChatModel("fake-model", max_model_len=64)
    behaviors = [Behavior("short", "hi"), Behavior("long", "word " * 40)]
    kept, counts = bound_by_tokens(types.SimpleNamespace(too_long="skip"), behaviors, model,
                                   GenerationParams(max_new_tokens=8))  # fmt: skip
    assert [b.id for b in kept] == ["short"] and counts == {"skipped": 1}


def test_unknown_max_model_len_means_no_limit(fake_vllm):
    from safealign.eval.backends.vllm import VLLMChatModel

    model = VLLMChatModel("fake-model")
    model.llm.llm_engine = object()  # a vLLM version that keeps it elsewhere
    assert model.prompt_limit(GenerationParams()) == (None, "unknown context length")
    assert model.generate([({"role": "user", "content": "hi"},)], GenerationParams())[0].error is None


def test_model_identity_of_a_vllm_target(fake_vllm, tmp_path):
    from safealign.eval.backends import chat_model_identity
    from safealign.eval.backends.vllm import VLLMChatModel
    from safealign.models.load import TINY_RANDOM

    assert chat_model_identity(VLLMChatModel(TINY_RANDOM))["kind"] == "tiny"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    local = chat_model_identity(VLLMChatModel(str(folder)))
    assert local["kind"] == "dir" and local["fingerprint"].startswith("sha256:")
    named = chat_model_identity(VLLMChatModel("not a spec"))  # a name only vLLM knows how to load
    assert named == {"spec": "not a spec", "kind": "remote", "backend": "vllm", "fingerprint": None}


@pytest.mark.parametrize(("finish", "stop_reason", "tokens"), [
    ("stop", None, 2),  # eos: generated and listed by vLLM, not counted (the hf backend does not count it)
    ("stop", 7, 2),  # a stop token id (a generation_config eos vLLM adds, or a special-token stop string): the same
    ("stop", "END", 3),  # a stop string: its tokens counted up to the one completing it, as the hf backend does
    ("length", None, 3),
])  # fmt: skip
def test_token_counts_leave_out_the_token_that_ended_the_answer(fake_vllm, finish, stop_reason, tokens):
    from safealign.eval.backends.vllm import VLLMChatModel

    model = VLLMChatModel("fake-model")
    model.llm.reply = {"finish_reason": finish, "stop_reason": stop_reason, "token_ids": [5, 6, 7]}
    [c] = model.generate([({"role": "user", "content": "hi"},)], GenerationParams())
    assert c.meta == {"finish": finish, "tokens": tokens}


def test_a_stop_string_that_is_a_special_token_is_sent_as_a_stop_token(fake_vllm):
    """vLLM matches stop strings in the text decoded without special tokens, where "<|im_start|>" never occurs:
    sent as a stop token id too, it ends the answer there, as it does on the hf backend."""
    from safealign.errors import UserError
    from safealign.eval.backends.vllm import VLLMChatModel

    model = VLLMChatModel("fake-model")
    conversation = ({"role": "user", "content": "hi"},)
    model.generate([conversation], GenerationParams(stop=("END", "<|im_start|>")))
    sent = model.llm.sampling[-1]
    assert sent.stop == ["END", "<|im_start|>"] and sent.stop_token_ids == [model.tokenizer.convert_tokens_to_ids(
        "<|im_start|>")]  # fmt: skip
    model.generate([conversation], GenerationParams(stop=("END",)))
    assert model.llm.sampling[-1].stop_token_ids is None
    with pytest.raises(UserError, match=r"generation\.stop"):
        model.generate([conversation], GenerationParams(stop=("<|im_start|>user",)))


def test_a_vllm_configs_identity_before_loading_is_the_built_models(fake_vllm, tmp_path):
    from safealign.eval.backends import build_chat_model, chat_model_identity, config_identity
    from safealign.eval.config import ModelConfig

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    for name in (str(folder), "not a spec", "tiny-random"):
        config = ModelConfig(backend="vllm", name=name)
        assert config_identity(config) == chat_model_identity(build_chat_model(config)), name
