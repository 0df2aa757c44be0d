"""Cross-check with TRL 1.16: fixed sampled completions and rewards, identity transform -> the same
advantages, loss and gradients as TRL's RLOOTrainer / GRPOTrainer within 1e-5.

TRL's own generation is replaced by the fixed completions (its ``_generate`` is patched), so everything
after sampling — its reward weighting, the KL in RLOO's reward, the advantages, the clipped loss — runs
TRL's code. The prompts have the same token length: TRL left-pads prompts without position ids, safealign
right-pads whole sequences, and only unpadded prompts mean the same positions to both. Both sides use a
separate reference model (seed 1, so the KL is not 0) set on TRL's trainer after construction (TRL would
otherwise load the reference from the policy's hub id, which tiny-random has none of), with the fused LM
head TRL gives a reference it builds itself.
"""

from __future__ import annotations

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is a test-only dependency for the cross-check")
datasets = pytest.importorskip("datasets", reason="TRL's trainers need the datasets package")

from safealign.config import load_config  # noqa: E402
from safealign.data import IdentityTransform  # noqa: E402
from safealign.models.tiny import tiny_model, tiny_tokenizer  # noqa: E402
from safealign.online.config import OnlineConfig  # noqa: E402
from safealign.online.rollout import PromptItem, completion_logps, prompt_views  # noqa: E402
from safealign.online.trainer import OnlineTrainer, Reference  # noqa: E402

PROMPTS = ["What is 2 + 3?", "What is 4 + 5?"]  # same byte length: same token length
K = 3
REWARDS = [1.0, 0.0, 0.5, 0.2, 0.9, 0.2]
BETA = 0.1


def completions(tokenizer) -> list[tuple[int, ...]]:
    eos = tokenizer.eos_token_id
    texts = ["Five.", "It is 5", "I cannot say", "Nine", "9, of course.", "Sorry"]
    ids = [tuple(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return [c + (eos,) if i % 2 == 0 else c for i, c in enumerate(ids)]  # some end with eos, some are cut


def trl_loss_and_grads(kind: str, config_kwargs: dict, prompt_ids, comps, tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model(seed=0)
    cls, config_cls = (trl.RLOOTrainer, trl.RLOOConfig) if kind == "rloo" else (trl.GRPOTrainer, trl.GRPOConfig)
    args = config_cls(output_dir=str(tmp_path / kind), num_generations=K, per_device_train_batch_size=len(comps),
                      beta=0.0, temperature=1.0, max_completion_length=16, use_cpu=True, bf16=False, report_to=[],
                      logging_steps=1, save_strategy="no", seed=0, **config_kwargs)
    rewards = iter([REWARDS])
    dataset = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
    trainer = cls(model=model, reward_funcs=lambda **kw: next(rewards), args=args, train_dataset=dataset,
                  processing_class=tokenizer)
    trainer.beta = BETA
    trainer.ref_model = tiny_model(seed=1).eval()
    trl.trainer.add_fused_lm_head(trainer.ref_model, temperature=1.0)  # what TRL does to a reference it built
    texts = [tokenizer.decode(list(c), skip_special_tokens=True) for c in comps]
    expanded = [list(prompt_ids[i // K]) for i in range(len(comps))]
    if kind == "rloo":
        trainer._generate = lambda prompts: (expanded, [list(c) for c in comps], texts)
    else:
        trainer._generate = lambda prompts: (expanded, [list(c) for c in comps], None, texts, None, {}, None, None)
    trainer.current_gradient_accumulation_steps = 1
    model.train()
    inputs = [{"prompt": [{"role": "user", "content": PROMPTS[i // K]}]} for i in range(len(comps))]
    batch = trainer._generate_and_score_completions(inputs)
    loss = trainer._compute_loss(model, batch)
    loss.backward()
    return loss.detach(), batch["advantages"].detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def safealign_loss_and_grads(algorithm: str, overrides: dict, prompt_ids, comps, tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model(seed=0).train()
    config = load_config(OnlineConfig, values={"model": "tiny-random", "algorithm": algorithm, "num_generations": K,
                                               "beta": BETA, "prompts_per_step": len(PROMPTS),
                                               "lora": {"enabled": False}, **overrides})
    trainer = OnlineTrainer(config, model, tokenizer, Reference(model, tiny_model(seed=1).eval()), [], [], [],
                            tmp_path)
    expanded = [prompt_ids[i // K] for i in range(len(comps))]
    with torch.no_grad():
        ref_lp, mask = completion_logps(trainer.reference.separate, expanded, comps, tokenizer.pad_token_id)
        old_lp = completion_logps(model, expanded, comps, tokenizer.pad_token_id)[0] if algorithm == "rloo" else None
    rewards = torch.tensor(REWARDS)
    advantages, _ = trainer._advantages(rewards, None, old_lp, ref_lp, mask)
    lp, m = completion_logps(model, expanded, comps, tokenizer.pad_token_id)
    old_seq = (old_lp * mask).sum(-1) if old_lp is not None else None
    loss, *_ = trainer._loss(lp, m, ref_lp, old_lp, old_seq, advantages, rewards)
    loss.backward()
    return loss.detach(), advantages.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("algorithm, trl_kwargs, ours", [
    ("rloo", {}, {"kl_estimator": "k1"}),
    ("grpo", {"loss_type": "grpo", "scale_rewards": "group"}, {"kl_estimator": "k3", "loss_aggregation": "sequence"}),
    ("grpo", {"loss_type": "bnpo", "scale_rewards": "batch", "use_bias_correction_kl": False},
     {"kl_estimator": "k3", "loss_aggregation": "token", "scale_rewards": "batch", "kl_ratio_correction": False}),
])
def test_loss_and_gradients_equal_trl(algorithm, trl_kwargs, ours, tmp_path):
    tokenizer = tiny_tokenizer()
    items = [PromptItem(str(i), ({"role": "user", "content": p},), None) for i, p in enumerate(PROMPTS)]
    views = prompt_views(tokenizer, items, IdentityTransform(), 256)
    assert len({len(ids) for ids in views.policy}) == 1, "the prompts must have one token length (see docstring)"
    comps = completions(tokenizer)
    trl_loss, trl_adv, trl_grads = trl_loss_and_grads(algorithm, trl_kwargs, views.policy, comps, tmp_path)
    loss, adv, grads = safealign_loss_and_grads(algorithm, ours, views.policy, comps, tmp_path)
    assert torch.allclose(adv, trl_adv, atol=1e-5), (adv, trl_adv)
    assert abs(loss.item() - trl_loss.item()) < 1e-5, (loss.item(), trl_loss.item())
    assert trl_loss.abs() > 1e-4 or algorithm == "rloo"  # a loss that is not trivially 0 (RLOO's is 0 at ratio 1)
    assert set(grads) == set(trl_grads)
    for name, grad in grads.items():
        assert torch.allclose(grad, trl_grads[name], atol=1e-5, rtol=1e-4), (name, (grad - trl_grads[name]).abs().max())
    assert any(g.abs().max() > 1e-6 for g in grads.values())
