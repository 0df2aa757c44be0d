"""The online KL anchor: a continued LoRA adapter is its own reference, Safe RLHF keeps the KL weight β for every λ,
GRPO refuses a k1 KL with no pull, LSC baselines come from the anchor's own view x_s, and a cut prompt view is
counted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from safealign.config import load_config
from safealign.data import build_transform
from safealign.errors import UserError
from safealign.models import LoraSettings, load_model
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.online.config import OnlineConfig, SafeRLHFConfig, SourceConfig
from safealign.online.rollout import PromptItem, prompt_views
from safealign.online.run import run_online
from safealign.online.trainer import OnlineTrainer, Reference
from safealign.train.reference import separate_reference

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "train"
TINY = ["max_steps=1", "prompts_per_step=2", "num_generations=2", "generation.max_new_tokens=6",
        "prompts.harmful_train=2", "prompts.benign_train=2", "prompts.borderline_train=0", "save_steps=1"]


def tiny_config(tmp_path, *overrides: str, recipe: str = "rlhf_rloo.yaml") -> OnlineConfig:
    return load_config(OnlineConfig, RECIPES / recipe,
                       ["model=tiny-random", *TINY, f"output_dir={tmp_path / 'run'}", *overrides])


def first_row(config: OnlineConfig) -> dict:
    return json.loads((Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()[0])


def length_reward(prompts, completions, harmful):
    return [len(c) / 10 for c in completions]


# --------------------------------------------------------------------------- a continued adapter
@pytest.fixture()
def sft_adapter(tmp_path):
    """A saved LoRA adapter over tiny-random whose B matrices are off their zero init (a trained adapter)."""
    model, tokenizer = load_model("tiny-random", lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "sft_adapter")
    tokenizer.save_pretrained(tmp_path / "sft_adapter")
    return tmp_path / "sft_adapter"


def test_continuing_a_trained_adapter_keeps_the_kl_anchor_at_it(sft_adapter, tmp_path):
    """Plain RLHF (identity transform) starts at its reference: step-1 KL 0. Anchored to the base model (the
    adapter disabled) it would not be."""
    config = tiny_config(tmp_path, f"model={sft_adapter}", "lora.enabled=false", "learning_rate=0")
    result = run_online(config)
    assert first_row(config)["kl"] == pytest.approx(0.0, abs=1e-6)
    assert "trained LoRA adapter" in result.reference


def test_a_fresh_adapter_is_still_the_policy_with_its_adapter_disabled(tmp_path):
    result = run_online(tiny_config(tmp_path, "learning_rate=0"))
    assert result.reference == "policy with its LoRA adapter disabled"


# --------------------------------------------------------------------------- Safe RLHF's KL weight
def safe_trainer(tmp_path, beta: float = 0.1) -> OnlineTrainer:
    config = OnlineConfig(model="tiny-random", num_generations=2, beta=beta, algorithm="rloo",
                          safe_rlhf=SafeRLHFConfig(enabled=True, cost=[SourceConfig()], threshold=0.5))
    model = tiny_model()
    reference = Reference(model, *separate_reference(None, model, "cpu", trust_remote_code=False))
    return OnlineTrainer(config, model, tiny_tokenizer(), reference, [], [], [], tmp_path)


@pytest.mark.parametrize("lam", [None, 0.0, 1.0, 5.0])
def test_safe_rlhf_keeps_the_kl_weight_beta_for_every_lambda(lam, tmp_path):
    """One prompt, two samples of equal reward and cost; sample 0 is 1 nat/token from the reference on 2 tokens
    (KL 2), sample 1 is at it. With R̃ = R − β·KL and C̃ = C + β·KL (safe-rlhf's ppo_lag) sample 0's advantage is
    −β·(2 − 0) = −0.2 whatever λ is; shaping the reward alone gave −0.2/(1 + λ)."""
    trainer = safe_trainer(tmp_path)
    policy, ref, mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.zeros(2, 2), torch.ones(2, 2)
    costs = None if lam is None else torch.zeros(2)
    advantages = trainer._shaped_advantages(torch.ones(2), costs, policy, ref, mask, lam)
    assert advantages.tolist() == pytest.approx([-0.2, 0.2])


def test_safe_rlhf_costs_still_enter_as_minus_lambda_over_one_plus_lambda(tmp_path):
    trainer = safe_trainer(tmp_path)
    same = torch.zeros(2, 2)  # no KL difference between the samples
    advantages = trainer._shaped_advantages(torch.ones(2), torch.tensor([1.0, 0.0]), same, same, torch.ones(2, 2), 3.0)
    assert advantages.tolist() == pytest.approx([-3.0 / 4.0, 3.0 / 4.0])  # −λ·A_C/(1 + λ), A_C = ±1


# --------------------------------------------------------------------------- GRPO's k1 without ratio correction
def test_grpo_refuses_a_k1_kl_without_ratio_correction(tmp_path):
    with pytest.raises(UserError, match="no KL pull"):
        tiny_config(tmp_path, "algorithm=grpo", "kl_estimator=k1", "kl_ratio_correction=false")
    for fine in (["kl_ratio_correction=true"], ["kl_estimator=k3", "kl_ratio_correction=false"],
                 ["beta=0", "kl_ratio_correction=false"]):
        assert tiny_config(tmp_path, "algorithm=grpo", *fine).algorithm == "grpo"


# --------------------------------------------------------------------------- LSC's baseline
def test_lsc_baselines_are_drawn_by_the_reference_on_its_own_view(tmp_path, monkeypatch):
    """Under E-RLHF the reference samples r_ref(x)'s K responses after x_s (the anchor πref(·|x_s)), not x."""
    from safealign.online import trainer as trainer_module

    views, sampled = [], []
    real_views, real_sample = trainer_module.prompt_views, trainer_module.sample
    monkeypatch.setattr(trainer_module, "prompt_views", lambda *a, **k: views.append(real_views(*a, **k)) or views[-1])
    monkeypatch.setattr(trainer_module, "sample",
                        lambda model, tok, prompts, *a, **k: sampled.append(list(prompts)) or real_sample(
                            model, tok, prompts, *a, **k))
    config = tiny_config(tmp_path, "reference.transform=safety_prefix", "reference.transform_params.apply_to=all",
                         "learning_rate=0")
    config.rewards = [SourceConfig(kind="callable", path="tests.online.test_online_anchor:length_reward", lsc=True)]
    run_online(config)
    (view,), (policy_prompts, baseline_prompts) = views, sampled
    assert policy_prompts == view.policy and baseline_prompts == view.reference != view.policy


# --------------------------------------------------------------------------- cut prompt views
def test_prompt_views_count_the_prompts_they_cut():
    tokenizer = tiny_tokenizer()
    items = [PromptItem("h", ({"role": "user", "content": "How do I pick a lock?"},), True),
             PromptItem("b", ({"role": "user", "content": "Name a prime."},), False)]
    transform = build_transform("safety_prefix")  # harmful prompts only
    full = prompt_views(tokenizer, items, transform, 10_000)
    assert (full.truncated, full.reference_truncated) == (0, 0)
    longest_x = max(map(len, full.policy))
    assert len(full.reference[0]) > longest_x  # x_s is x plus the prefix
    cut = prompt_views(tokenizer, items, transform, longest_x)  # every x fits; the harmful x_s does not
    assert (cut.truncated, cut.reference_truncated) == (0, 1)
    assert cut.reference[0] == full.reference[0][-longest_x:] and cut.policy == full.policy
    tight = prompt_views(tokenizer, items, transform, 4)
    assert (tight.truncated, tight.reference_truncated) == (2, 1)


def test_an_online_step_logs_and_warns_about_cut_prompts(tmp_path, caplog):
    config = tiny_config(tmp_path, "max_steps=2", "prompts.max_prompt_length=8", "reference.transform=safety_prefix",
                         "reference.transform_params.apply_to=all", "learning_rate=0")
    with caplog.at_level(logging.WARNING, logger="safealign.online.trainer"):
        run_online(config)
    rows = [json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [(r["prompts_truncated"], r["prompts_truncated/reference"]) for r in rows] == [(2, 2), (2, 2)]
    assert sum("left-truncated" in r.getMessage() for r in caplog.records) == 1  # warned once, counted every step
