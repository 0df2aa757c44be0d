"""Prompt-KV reuse in online sampling (safealign/online/prefix_cache.py): the same completions as the plain
``num_return_sequences`` path, token for token, on left-padded prompts of different lengths; the log-probs the
trainer records are unchanged; models where reuse would not be exact fall back and say so once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from safealign.models import load_model
from safealign.online.prefix_cache import generate_from_shared_prefix
from safealign.online.rollout import completion_logps, sample

LENGTHS = (5, 17, 1, 9, 30)  # different lengths: rows 0-3 are left-padded, one prompt is a single token


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random")


def prompts(tokenizer, lengths=LENGTHS) -> list[tuple[int, ...]]:
    generator = torch.Generator().manual_seed(7)
    special = set(tokenizer.all_special_ids)
    pool = [i for i in range(len(tokenizer)) if i not in special]
    return [tuple(pool[j] for j in torch.randint(len(pool), (n,), generator=generator).tolist()) for n in lengths]


class ForwardShapes:
    """The ``input_ids`` shape of every forward call of a model (pre-fills and decode steps)."""

    def __init__(self, model) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.handle = model.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs, output) -> None:
        self.shapes.append(tuple(kwargs["input_ids"].shape))

    def __enter__(self) -> "ForwardShapes":
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def left_padded(ids: list[tuple[int, ...]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, ids))
    input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in ids])
    return input_ids, (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in ids])[:, None]).long()


@pytest.mark.parametrize("k", [2, 4])
def test_greedy_continuation_from_the_repeated_cache_equals_generate_on_repeated_prompts(tiny, k):
    """transformers refuses num_return_sequences without sampling; repeating the prompts is what it does."""
    model, tokenizer = tiny
    input_ids, attention = left_padded(prompts(tokenizer), tokenizer.pad_token_id)
    settings = dict(do_sample=False, max_new_tokens=24, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        plain = model.generate(input_ids=input_ids.repeat_interleave(k, 0),
                               attention_mask=attention.repeat_interleave(k, 0), **settings)
        with ForwardShapes(model) as calls:
            reused = generate_from_shared_prefix(model, input_ids, attention, k, **settings)
    n, width = input_ids.shape
    assert calls.shapes[:2] == [(n, width - 1), (n * k, 1)]  # one pre-fill per prompt, then the last column
    assert torch.equal(reused, plain)
    assert len({tuple(row) for row in plain[::k, width:].tolist()}) == n  # the prompts' continuations differ


@pytest.mark.parametrize(("k", "temperature", "top_p", "top_k"), [(2, 1.0, 1.0, 0), (4, 1.0, 1.0, 0),
                                                                  (4, 0.7, 0.9, 40)])
def test_seeded_samples_and_their_logps_are_the_plain_paths(tiny, k, temperature, top_p, top_k):
    """Same seed: the same random draws in the same order, so the same tokens; the trainer's per-token
    log-probs (recomputed from the tokens) are then the same numbers."""
    model, tokenizer = tiny
    ids = prompts(tokenizer)
    runs = {}
    for reuse in (False, True):
        torch.manual_seed(1234)
        with ForwardShapes(model) as calls:
            runs[reuse] = sample(model, tokenizer, ids, k, max_new_tokens=32, temperature=temperature, top_p=top_p,
                                 top_k=top_k, reuse_prompt_cache=reuse)
        assert calls.shapes[0][0] == (len(ids) if reuse else len(ids) * k)
    assert runs[True] == runs[False]
    assert len(set(runs[True])) > len(ids)  # really sampled: a prompt's K samples are not all equal
    owners = [ids[i // k] for i in range(len(ids) * k)]
    logps = [completion_logps(model, owners, runs[reuse], tokenizer.pad_token_id) for reuse in (False, True)]
    assert torch.equal(logps[0][0], logps[1][0]) and torch.equal(logps[0][1], logps[1][1])


def test_a_lora_policy_and_its_disabled_adapter_sample_as_the_plain_path():
    from safealign.models import LoraSettings, apply_lora

    model, tokenizer = load_model("tiny-random")
    model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a trained adapter: B starts at 0, which would make the adapter a no-op
            param.data.normal_(0, 0.5)
    ids = prompts(tokenizer)[:3]

    def draw(reuse: bool) -> list:
        torch.manual_seed(99)
        return sample(model, tokenizer, ids, 2, max_new_tokens=16, temperature=1.0, top_p=1.0, top_k=0,
                      reuse_prompt_cache=reuse)

    with_adapter = draw(True)
    assert with_adapter == draw(False)
    with model.disable_adapter():
        without = draw(True)
        assert without == draw(False)
    assert with_adapter != without  # the adapter was active in one and not the other


def test_sliding_window_layers_fall_back_to_the_plain_path_and_say_so_once(caplog):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tokenizer = load_model("tiny-random")
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, use_sliding_window=True, sliding_window=8,
                         max_window_layers=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    ids = prompts(tokenizer)
    with caplog.at_level(logging.WARNING, logger="safealign.online.prefix_cache"):
        for _ in range(2):
            with ForwardShapes(model) as calls:
                sample(model, tokenizer, ids, 2, max_new_tokens=4, temperature=1.0, top_p=1.0, top_k=0)
            assert calls.shapes[0] == (len(ids) * 2, max(LENGTHS))  # the plain path: every copy pre-filled
    notes = [r.getMessage() for r in caplog.records if "reuse_prompt_cache" in r.getMessage()]
    assert len(notes) == 1 and "DynamicSlidingWindowLayer" in notes[0] and "Qwen2ForCausalLM" in notes[0]


def test_an_online_step_logs_the_same_metrics_with_and_without_reuse(tmp_path):
    from tests.online.test_online_trainer import metrics, tiny_config
    from safealign.online.run import run_online

    rows = []
    for reuse in ("false", "true"):
        config = tiny_config(tmp_path / reuse, "max_steps=1", f"generation.reuse_prompt_cache={reuse}",
                             reward="byte_reward")
        run_online(config)
        row = metrics(Path(config.output_dir) / "metrics.jsonl")[0]
        rows.append({key: value for key, value in row.items() if not key.startswith(("time/", "share/"))})
    assert rows[0] == rows[1]


@pytest.mark.parametrize("reuse", [True, False])
def test_online_samples_ignore_the_models_shipped_decoding_defaults(reuse):
    """Samples must come from the policy whose log-probs the update uses: a repetition penalty (or top-k) in the
    model's generation_config would draw them from another distribution."""
    model, tokenizer = load_model("tiny-random")
    ids = prompts(tokenizer)[:3]

    def draw() -> list:
        torch.manual_seed(5)
        return sample(model, tokenizer, ids, 2, max_new_tokens=16, temperature=1.0, top_p=1.0, top_k=0,
                      reuse_prompt_cache=reuse)

    plain = draw()
    model.generation_config.repetition_penalty = 50.0  # as a shipped default would set it
    model.generation_config.top_k = 2
    assert draw() == plain


@pytest.mark.parametrize("reuse", [True, False])
def test_online_sampling_passes_every_generation_setting_inside_its_config(reuse, monkeypatch):
    """transformers deprecates generation settings passed beside a ``generation_config`` (and warns on every
    run): the number of samples per row belongs in the config too, and K rows still come back per prompt."""
    model, tokenizer = load_model("tiny-random")
    ids = prompts(tokenizer)[:3]
    calls = []
    real = model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    out = sample(model, tokenizer, ids, 3, max_new_tokens=4, temperature=1.0, top_p=1.0, top_k=0,
                 reuse_prompt_cache=reuse)
    assert len(out) == 9 and len(calls) == 1
    config = calls[0]["generation_config"]
    assert set(calls[0]) - {"input_ids", "attention_mask", "generation_config", "past_key_values", "cache"} == set()
    assert config.num_return_sequences == (1 if reuse else 3)


def test_a_shared_prefix_config_asking_for_several_sequences_per_row_is_refused(tiny):
    from safealign.eval.backends.hf import explicit_generation_config

    model, tokenizer = tiny
    input_ids, attention = left_padded(prompts(tokenizer)[:2], tokenizer.pad_token_id)
    config = explicit_generation_config(tokenizer, model, max_new_tokens=2, do_sample=True, num_return_sequences=2)
    with pytest.raises(ValueError, match="num_return_sequences=2"):
        generate_from_shared_prefix(model, input_ids, attention, 2, generation_config=config)
