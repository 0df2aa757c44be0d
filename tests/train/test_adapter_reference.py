"""Which reference a LoRA adapter gets: a saved adapter named as ``reference.model`` is scored with its adapter on
(cached or live), a policy continuing a trained adapter is anchored to itself rather than to its base model, and
the common path -- a fresh adapter, disabled -- keeps the cache key it always had (docs/algorithms.md, "Which πref")."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from safealign.cli import main
from safealign.data import PairEncoder
from safealign.data.formats import load_preferences
from safealign.models import LoraSettings, apply_lora, load_model
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train import reference
from safealign.train.config import TrainConfig
from safealign.train.reference import (
    load_or_compute_reference,
    model_fingerprint,
    reference_view_hash,
    starts_from_trained_adapter,
)
from safealign.train.run import run_training
from train.lora_helpers import perturb_adapter

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "train"

def old_fingerprint(model) -> str:
    """model_fingerprint's formula restated for the base weights (adapter left out, names unwrapped): the key a
    plain model's cache entries are stored under, which a policy with its adapter disabled must reuse (the
    formula itself changed on 2026-12-07: a spread sample and each tensor's sum and sum of squares; later that day
    the model config, less what cannot change the numbers, and integer moments of the bit patterns, which no
    reduction order changes). A tiny Llama has no persistent buffers."""
    assert not any(n not in m._non_persistent_buffers_set for _, m in model.named_modules()
                   for n, _ in m.named_buffers(recurse=False))
    ignored = {"_name_or_path", "transformers_version", "_commit_hash", "use_cache", "return_dict",
               "output_attentions", "output_hidden_states"}
    config = {str(k): v for k, v in model.config.to_dict().items() if k not in ignored}
    config["id2label"] = {str(k): v for k, v in config["id2label"].items()}
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    named = ((n.removeprefix("base_model.model.").replace(".base_layer.", "."), p)
             for n, p in model.named_parameters() if "lora_" not in n)
    for name, param in sorted(named, key=lambda kv: kv[0]):
        flat = param.detach().reshape(-1)
        picks = torch.arange(min(4096, flat.numel())) * 1_000_003 % flat.numel()
        bits = flat.view(torch.int32).to(torch.int64)  # float32 weights
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
        digest.update(flat[picks].to("cpu", torch.float32).contiguous().numpy().tobytes())
        digest.update(torch.stack([bits.sum(), (bits * bits).sum()]).numpy().tobytes())
    return digest.hexdigest()


def old_key(model, encoded) -> str:
    return hashlib.blake2b(f"{old_fingerprint(model)}:{reference_view_hash(encoded)}".encode(),
                           digest_size=16).hexdigest()


@pytest.fixture()
def sft_adapter(tmp_path):
    """A saved LoRA adapter folder over tiny-random whose adapter changes the model's outputs."""
    model, tokenizer = load_model("tiny-random", lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    perturb_adapter(model)
    folder = tmp_path / "sft_adapter"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def encoded(pairs_file):
    return PairEncoder(tiny_tokenizer()).encode_all(load_preferences(str(pairs_file)).items)[0]


def step_one(tmp_path, pairs_file, model, mode, name, reference_model=None, lora=True):
    """Metrics row of one DPO step at learning rate 0, and the run's result."""
    config = TrainConfig(model=str(model), output_dir=str(tmp_path / name))
    config.data.path = str(pairs_file)
    config.reference.cache_dir = str(tmp_path / "refcache")
    config.reference.mode = mode
    config.reference.model = str(reference_model) if reference_model else None
    config.lora.enabled = lora
    config.per_device_train_batch_size = 8
    config.max_steps = config.logging_steps = 1
    config.learning_rate = 0.0
    result = run_training(config)
    return json.loads((result.output_dir / "metrics.jsonl").read_text().splitlines()[0]), result


# --------------------------------------------------------------------------- the cache key
def test_the_key_of_the_policy_with_its_adapter_disabled_is_the_old_one_whatever_the_lora_weights(encoded, tmp_path):
    policy = apply_lora(tiny_model(), LoraSettings(r=4, alpha=8, dropout=0.0))
    fresh = load_or_compute_reference(policy, encoded, tmp_path)
    assert fresh.key == old_key(policy, encoded) and fresh.path.name == f"{fresh.key}.safetensors"
    perturb_adapter(policy)  # what training does to the adapter: the base, and so the key, stay put
    moved = load_or_compute_reference(policy, encoded, tmp_path)
    assert moved.key == fresh.key and moved.reused
    assert model_fingerprint(policy) == old_fingerprint(policy) == old_fingerprint(tiny_model())


def test_a_fresh_lora_runs_reference_cache_keeps_its_old_key(tmp_path, pairs_file, monkeypatch):
    """End to end through run_training: a fresh adapter's reference is the disabled adapter, stored under the key
    computed by the old formula (so existing cache entries keep being reused)."""
    real = reference.load_or_compute_reference
    seen = []

    def spy(model, encoded, cache_dir, **kwargs):
        expected = old_key(model, encoded)  # before training touches the policy
        cache = real(model, encoded, cache_dir, **kwargs)
        seen.append((cache.key, expected, kwargs.get("with_adapter")))
        return cache

    monkeypatch.setattr(reference, "load_or_compute_reference", spy)
    row, result = step_one(tmp_path, pairs_file, "tiny-random", "cache", "fresh")
    (key, expected, with_adapter), = seen
    assert key == expected and with_adapter is False
    assert (tmp_path / "refcache" / f"{expected}.safetensors").is_file()
    assert row["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_an_adapter_reference_is_keyed_by_its_adapter_weights_and_a_plain_model_by_its_old_key(encoded, tmp_path):
    adapted = perturb_adapter(apply_lora(tiny_model(), LoraSettings(r=4, alpha=8, dropout=0.0)))
    other = perturb_adapter(apply_lora(tiny_model(), LoraSettings(r=4, alpha=8, dropout=0.0)), seed=2)
    keys = {model_fingerprint(m, with_adapter=True) for m in (adapted, other)}
    assert len(keys) == 2 and model_fingerprint(adapted) not in keys  # neither shares the base's entry
    plain = tiny_model()
    assert model_fingerprint(plain, with_adapter=True) == model_fingerprint(plain) == old_fingerprint(plain)
    base = load_or_compute_reference(adapted, encoded, tmp_path)
    on = load_or_compute_reference(adapted, encoded, tmp_path, with_adapter=True)
    assert on.path != base.path and not on.reused
    assert not torch.allclose(on.table, base.table)  # scored with the adapter on, not as the base


def test_only_an_adapter_that_moved_off_its_zero_init_counts_as_trained():
    fresh = apply_lora(tiny_model(), LoraSettings(r=4, alpha=8))
    assert not starts_from_trained_adapter(fresh) and not starts_from_trained_adapter(tiny_model())
    assert starts_from_trained_adapter(perturb_adapter(fresh))


# --------------------------------------------------------------------------- training runs
@pytest.mark.parametrize("mode", ["cache", "live"])
def test_a_saved_adapter_as_reference_model_is_scored_with_its_adapter(mode, sft_adapter, tmp_path, pairs_file):
    """Policy and reference are the same saved adapter, so at learning rate 0 DPO's step 1 is log 2 with margin 0;
    a reference scored as the base model would not be."""
    row, result = step_one(tmp_path, pairs_file, sft_adapter, mode, "explicit", reference_model=sft_adapter,
                           lora=False)
    assert row["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert row["rewards/margins"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("mode", ["cache", "live"])
def test_continuing_a_trained_adapter_anchors_to_it_not_to_its_base(mode, sft_adapter, tmp_path, pairs_file):
    row, result = step_one(tmp_path, pairs_file, sft_adapter, mode, "continue", lora=False)
    assert row["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert row["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert "trained LoRA adapter" in result.reference
    if mode == "cache":  # the same weights as the saved adapter named as reference.model: the same cache entry
        _, explicit = step_one(tmp_path, pairs_file, sft_adapter, mode, "explicit", reference_model=sft_adapter,
                               lora=False)
        assert "reused" in explicit.reference


def test_an_objective_continuing_a_trained_adapter_starts_at_its_reference(sft_adapter, tmp_path, pairs_file):
    """Circuit breakers' reroute loss is the cosine to the frozen model's states: 1 at step 1 when the reference
    is the starting policy (learning rate 0 keeps it there)."""
    out = tmp_path / "cb"
    assert main(["train", str(RECIPES / "circuit_breakers.yaml"), f"model={sft_adapter}", "lora.enabled=false",
                 f"data.path={pairs_file}", f"output_dir={out}", "max_steps=1", "logging_steps=1",
                 "per_device_train_batch_size=2", "learning_rate=0"]) == 0
    row = json.loads(next(line for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line))
    assert row["loss/reroute"] == pytest.approx(1.0, abs=1e-4)
    summary = json.loads((out / "train_summary.json").read_text())
    assert "trained LoRA adapter" in summary["reference"]


def test_a_live_reference_scores_without_dropout_like_the_cached_table():
    """A model with dropout, trained with a fresh adapter: the live reference forward (policy with its adapter
    disabled) runs in eval mode, so it equals the cached table and leaves the policy in train mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from safealign.data import PreferenceCollator
    from safealign.train.reference import LiveReference, compute_reference_columns
    from safealign.types import PreferencePair

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, attention_dropout=0.3, pad_token_id=0)
    torch.manual_seed(0)
    model = apply_lora(LlamaForCausalLM(config), LoraSettings(r=4, alpha=8))
    pair = PreferencePair(prompt=({"role": "user", "content": "How do I pick a lock?"},), chosen="No.",
                          rejected="Sure, take a pin", source="x", row=0)
    encoded, _ = PairEncoder(tokenizer, max_length=128, max_prompt_length=64).encode_all([pair])
    cached = compute_reference_columns(model, encoded)
    model.train()
    live = LiveReference(None)
    batch = PreferenceCollator(tokenizer.pad_token_id)(encoded)
    for _ in range(3):
        torch.testing.assert_close(live.logps(model, batch), cached[0].to(torch.float32), atol=1e-5, rtol=0)
    assert model.training


def _dropout_policy():
    """A fresh-adapter policy with attention dropout, in train mode: a reference pass in train mode is random."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, attention_dropout=0.3, pad_token_id=0)
    torch.manual_seed(0)
    model = apply_lora(LlamaForCausalLM(config), LoraSettings(r=4, alpha=8)).train()
    return model, tokenizer


def test_the_per_token_and_objective_references_score_without_dropout():
    """The per-token live reference (constrained_sft) and an objective's FrozenReference (circuit breakers) run
    the policy with its adapter disabled in eval mode: the same numbers on every call, the policy left training."""
    from safealign.data import PreferenceCollator
    from safealign.train.objectives.trainer import FrozenReference
    from safealign.train.reference import LiveReference
    from safealign.train.token_inputs import chosen_token_logps, reference_token_logps
    from safealign.types import PreferencePair

    model, tokenizer = _dropout_policy()
    pair = PreferencePair(prompt=({"role": "user", "content": "How do I pick a lock?"},), chosen="No, I will not.",
                          rejected="Sure, take a pin", source="x", row=0)
    encoded, _ = PairEncoder(tokenizer, max_length=128, max_prompt_length=64).encode_all([pair])
    batch = PreferenceCollator(tokenizer.pad_token_id)(encoded)
    with torch.no_grad(), reference.adapter_disabled(model):
        expected = chosen_token_logps(model.eval(), batch)[0]
    model.train()
    for _ in range(3):
        torch.testing.assert_close(reference_token_logps(LiveReference(None), model, batch), expected,
                                   atol=1e-6, rtol=0)
        with FrozenReference(model)(model) as ref:
            got = chosen_token_logps(ref, batch)[0]
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
        assert model.training


def test_separate_reference_is_the_one_place_a_live_reference_is_chosen():
    from safealign.models.tiny import tiny_model
    from safealign.online.trainer import Reference
    from safealign.train.objectives.trainer import FrozenReference
    from safealign.train.reference import FULL_FINE_TUNING_REFERENCE, separate_reference

    full = tiny_model()
    copy, what = separate_reference(None, full, "cpu", trust_remote_code=False)
    assert what == FULL_FINE_TUNING_REFERENCE and copy is not full
    assert not any(p.requires_grad for p in copy.parameters())
    with torch.no_grad():
        next(full.parameters()).add_(1.0)  # training moves the policy; the copy keeps the starting weights
    assert not torch.equal(next(full.parameters()), next(copy.parameters()))
    for make in (Reference, FrozenReference):  # neither class makes a reference of its own any more
        with pytest.raises(ValueError, match="separate_reference"):
            make(full)
