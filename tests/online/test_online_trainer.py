"""The online trainer on tiny-random: every recipe trains, resume repeats the next step exactly, the E-view's
KL equals a hand computation, bad reward functions and settings fail with clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from safealign.cli import main
from safealign.config import load_config
from safealign.errors import UserError
from safealign.online.config import OnlineConfig, SourceConfig
from safealign.online.rewards import RewardError
from safealign.online.run import run_online

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "train"
TINY = ["model=tiny-random", "max_steps=2", "prompts_per_step=2", "gradient_accumulation_steps=2",
        "num_generations=2", "generation.max_new_tokens=6", "prompts.harmful_train=2", "prompts.benign_train=2",
        "prompts.borderline_train=0", "save_steps=1", "learning_rate=1e-3"]


def tiny_config(tmp_path, *overrides: str, recipe: str = "e_rlhf_rloo.yaml", reward: str | None = None) -> OnlineConfig:
    """A recipe shrunk for tiny-random; ``reward``: replace its rewards with this callable of this module."""
    config = load_config(OnlineConfig, RECIPES / recipe, [*TINY, f"output_dir={tmp_path / 'run'}", *overrides])
    if reward:
        config.rewards = [SourceConfig(kind="callable", path=f"tests.online.test_online_trainer:{reward}")]
    return config


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# rewards used through dotted paths below ------------------------------------------------------------------
def length_reward(prompts, completions, harmful):
    return [len(c) / 10 for c in completions]


def byte_reward(prompts, completions, harmful):  # varies between samples of one prompt, unlike their length
    return [sum(map(ord, c)) % 7 / 7 for c in completions]


def nan_reward(prompts, completions, harmful):
    return [float("nan")] * len(completions)


def short_reward(prompts, completions, harmful):
    return [1.0]


def raising_reward(prompts, completions, harmful):
    raise RuntimeError("scorer offline")


@pytest.mark.parametrize("recipe", ["e_rlhf_rloo.yaml", "rlhf_rloo.yaml", "e_rlhf_grpo.yaml", "safe_rlhf.yaml",
                                    "online_ipo.yaml"])
def test_every_recipe_trains_tiny_random_from_the_cli(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(RECIPES / recipe), *TINY, f"output_dir={out}"]) == 0
    rows = metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["loss"]) and row["kl"] is not None
        assert 0.99 < row["share/generate"] + row["share/score"] + row["share/update"] < 1.01
        assert row["entropy"] > 0 and row["completion_length"] >= 1
    assert (out / "final" / "adapter_config.json").is_file()
    if recipe == "safe_rlhf.yaml":
        assert all("lambda" in r and "cost" in r for r in rows)
    if recipe == "online_ipo.yaml":
        assert all("ipo_pairs" in r for r in rows)


@pytest.mark.parametrize("lora", [True, False])
def test_resume_repeats_the_next_step_exactly(lora, tmp_path):
    straight = tiny_config(tmp_path / "a", "max_steps=3", f"lora.enabled={lora}", "seed=3")
    run_online(straight)
    first = tiny_config(tmp_path / "b", "max_steps=2", f"lora.enabled={lora}", "seed=3")
    run_online(first)
    resumed = tiny_config(tmp_path / "b", "max_steps=3", f"lora.enabled={lora}", "seed=3")
    run_online(resumed, resume=True)
    a, b = metrics(tmp_path / "a" / "run" / "metrics.jsonl"), metrics(tmp_path / "b" / "run" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3]
    drop = lambda row: {k: v for k, v in row.items() if not k.startswith(("time/", "share/"))}  # noqa: E731
    assert drop(a[2]) == drop(b[2])
    assert a[2]["grad_norm"] > 0


def test_a_second_run_without_resume_is_refused(tmp_path):
    config = tiny_config(tmp_path, "max_steps=1")
    run_online(config)
    with pytest.raises(UserError, match="--resume"):
        run_online(config)


def test_e_view_kl_equals_a_hand_computation(tmp_path):
    """With the safety prefix, the step-1 KL of harmful prompts is the k1 estimate of log π(y|x) − log πref(y|x_s)
    over the sampled tokens, recomputed here from the model's own logits."""
    from safealign.data import build_transform
    from safealign.models import load_model
    from safealign.online.prompts import load_training_prompts, step_prompts
    from safealign.online.rollout import prompt_views, sample

    config = tiny_config(tmp_path, "max_steps=1", "learning_rate=0", "prompts.benign_train=0",
                         "reference.transform_params.apply_to=all")
    run_online(config)
    row = metrics(Path(config.output_dir) / "metrics.jsonl")[0]
    model, tokenizer = load_model("tiny-random")
    items = step_prompts(load_training_prompts(config.prompts), 0, 2, config.seed)
    views = prompt_views(tokenizer, items, build_transform("safety_prefix", apply_to="all"), 128)
    torch.manual_seed(config.seed * 1_000_003)
    completions = sample(model, tokenizer, views.policy, 2, max_new_tokens=6, temperature=1.0, top_p=1.0, top_k=0)
    total, tokens = 0.0, 0
    for i, completion in enumerate(completions):
        logps = []
        for prompt in (views.policy[i // 2], views.reference[i // 2]):
            ids = torch.tensor([list(prompt) + list(completion)])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0].double()
            rows = logits[len(prompt) - 1: len(prompt) + len(completion) - 1].log_softmax(-1)
            logps.append(rows.gather(1, torch.tensor(completion)[:, None]).squeeze(1))
        total += float((logps[0] - logps[1]).sum())
        tokens += len(completion)
    assert views.policy[0] != views.reference[0]
    assert row["kl/harmful"] == pytest.approx(total / tokens, abs=1e-5)
    assert abs(row["kl/harmful"]) > 1e-4  # the prefix changes the reference: not 0 at step 1


def test_identity_transform_has_zero_kl_at_the_first_step(tmp_path):
    config = tiny_config(tmp_path, "max_steps=1", recipe="rlhf_rloo.yaml")
    run_online(config)
    assert metrics(Path(config.output_dir) / "metrics.jsonl")[0]["kl"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("function, message", [
    ("nan_reward", "returned non-finite values"),
    ("short_reward", "returned 1 values for 4 completions"),
    ("raising_reward", "raised RuntimeError: scorer offline"),
])
def test_a_bad_reward_function_is_named_with_the_step(function, message, tmp_path):
    config = tiny_config(tmp_path, reward=function)
    with pytest.raises(RewardError, match=message) as info:
        run_online(config)
    assert function in str(info.value) and "at step 1" in str(info.value)


def sample_with_empties(monkeypatch) -> None:
    """Online sampling whose first sample of each prompt is an immediate end-of-sequence (an empty completion)."""
    from safealign.online import trainer as trainer_module

    real = trainer_module.sample

    def with_empties(*args, **kwargs):
        out = real(*args, **kwargs)
        eos = args[1].eos_token_id
        return [(eos,) if i % 2 == 0 else c for i, c in enumerate(out)]

    monkeypatch.setattr(trainer_module, "sample", with_empties)


def test_empty_completions_score_the_floor_and_are_counted(tmp_path, monkeypatch):
    sample_with_empties(monkeypatch)
    config = tiny_config(tmp_path, "max_steps=1", "empty_reward=-3", reward="length_reward")
    run_online(config)
    row = metrics(Path(config.output_dir) / "metrics.jsonl")[0]
    assert row["empty_completions"] == 2
    assert row["reward/length_reward"] > 0  # the mean over the two non-empty completions only
    assert row["reward"] == pytest.approx((-3 * 2 + 2 * row["reward/length_reward"]) / 4, abs=1e-6)


def length_reward_never_empty(prompts, completions, harmful, log):
    if any(not c.strip() for c in completions):
        raise ValueError("shown an empty completion")
    with open(log, "a") as f:  # each call's texts, one line
        f.write(json.dumps(list(completions)) + "\n")
    return [len(c) / 10 for c in completions]


def test_empty_reference_samples_score_the_floor_in_lsc_baselines(tmp_path, monkeypatch):
    """The reference's own samples for LSC follow the policy's rule: an empty one is never shown to a source and
    counts as empty_reward in the mean r_ref(x)."""
    sample_with_empties(monkeypatch)
    config = tiny_config(tmp_path, "max_steps=1", "empty_reward=-3", reward="length_reward_never_empty")
    config.rewards[0].lsc = True
    config.rewards[0].params = {"log": str(tmp_path / "shown.jsonl")}
    run_online(config)
    state = torch.load(Path(config.output_dir) / "checkpoint-1" / "state.pt", weights_only=False)
    baselines = sorted(v["length_reward_never_empty"] for v in state["lsc"].values())
    # the first call scores the reference's samples (one non-empty per prompt)
    reference_texts = json.loads((tmp_path / "shown.jsonl").read_text().splitlines()[0])
    assert len(baselines) == len(reference_texts) == 2
    assert baselines == pytest.approx(sorted((-3 + len(t) / 10) / 2 for t in reference_texts), abs=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (["num_generations=1"], "num_generations must be >= 2"),
    (["algorithm=grpo", "num_generations=1"], "num_generations must be >= 2"),
    (["safe_rlhf.threshold=1.5"], "always met"),
    (["safe_rlhf.threshold=-0.5"], "never met"),
    (["safe_rlhf.threshold=nan"], "finite"),
    (["safe_rlhf.lambda_init=0"], "lambda_init must be > 0"),
    (["rewards.0.kind=callable"], "needs a path"),
    (["rewards.0.kind=callable", "rewards.0.path=no_such_module:f"], "cannot import"),
])
def test_settings_that_make_no_sense_fail_before_the_model_loads(overrides, message, tmp_path, monkeypatch):
    import safealign.models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(safealign.models, "load_model", no_load)
    with pytest.raises(UserError, match=message):
        run_online(tiny_config(tmp_path, *overrides, recipe="safe_rlhf.yaml"))


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "Pick a lock", "is_harmful": True}],
     r"prompts.jsonl row 0 \(line 1\): harmful: missing.*is_harmful, prompt"),
    ([{"prompt": "Bake bread", "harmful": False}, {"prompt": "Pick a lock", "harmful": None}],
     r"row 1 \(line 2\): harmful: missing"),
    ([{"prompt": "Bake bread", "harmful": "maybe"}], r"row 0 \(line 1\): harmful: expected a boolean"),
    ([{"id": "1", "prompt": "Bake bread", "harmful": False}, {"prompt": "Pick a lock", "harmful": True}],
     r"row 1 \(line 2\): id: '1' is also the id of row 0 \(line 1\)"),
])
def test_a_prompts_file_row_without_a_harmful_flag_or_with_a_taken_id_is_named(rows, message, tmp_path):
    """An unknown flag would silently give the row plain RLHF's anchor and the benign rewards (E-RLHF's prefix and
    apply_to: harmful sources need harmful is True); a repeated id would share another prompt's LSC baseline."""
    from safealign.online.config import PromptsConfig
    from safealign.online.prompts import load_training_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(UserError, match=message):
        load_training_prompts(PromptsConfig(path=str(path)))
    good = [{"prompt": "Pick a lock", "harmful": "true"}, {"id": "b", "prompt": "Bake bread", "harmful": 0}]
    path.write_text("".join(json.dumps(row) + "\n" for row in good))
    items = load_training_prompts(PromptsConfig(path=str(path)))
    assert [(i.id, i.harmful) for i in items] == [("0", True), ("b", False)]


@pytest.mark.parametrize("text, message", [
    ('{"prompt": "Bake bread", "harmful": false}\n{"prompt": "How do I build a bomb?", "harmful": tr',
     r"prompts.jsonl: line 2: invalid JSON"),  # cut off: one prompt left after a warning
    ('{"prompt": "Bake bread", "harmful": false}\n["Pick a lock", true]\n',
     r"prompts.jsonl: line 2: expected a JSON object, got list"),
    ('{"prompt": "Bake bread", "harmful": false}\n\n{"prompt": "Pick a lock"}\n',
     r"prompts.jsonl row 1 \(line 3\): harmful: missing"),  # a blank line: the row and its line differ
    (None, r"prompts.jsonl: training prompts file \(prompts.path\) not found"),  # was "no training prompts"
])
def test_a_prompts_file_is_read_strictly_and_its_errors_name_the_line(text, message, tmp_path):
    """A user's prompts file is not a run file of ours: a cut-off last line is a broken file (it trained on the
    prompts before it after a warning), a missing file is not found (it said "no training prompts")."""
    from safealign.online.config import PromptsConfig
    from safealign.online.prompts import load_training_prompts

    path = tmp_path / "prompts.jsonl"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_training_prompts(PromptsConfig(path=str(path)))


def test_lsc_scores_log_sigmoid_of_the_reward_above_the_reference_samples(tmp_path):
    config = tiny_config(tmp_path, "max_steps=2", reward="length_reward")
    config.rewards[0].lsc = True
    run_online(config)
    rows = metrics(Path(config.output_dir) / "metrics.jsonl")
    assert all(r["reward/length_reward"] < 0 for r in rows)  # log σ(·) < 0
    state = torch.load(Path(config.output_dir) / "checkpoint-2" / "state.pt", weights_only=False)
    assert len(state["lsc"]) == 4 and all("length_reward" in v for v in state["lsc"].values())


def tied_then_distinct(prompts, completions, harmful):  # the first prompt's group all ties, the second's differ
    half = len(completions) // 2
    return [0.0] * half + [float(i) for i in range(len(completions) - half)]


@pytest.mark.parametrize("recipe", ["rlhf_rloo.yaml", "e_rlhf_grpo.yaml", "online_ipo.yaml"])
def test_gradient_accumulation_gives_the_step_of_one_big_batch(recipe, tmp_path):
    """Same prompts and samples (seeded per step): two micro-batches accumulate the same gradient as one. K = 3
    and one micro-batch of tied rewards: IPO's micro-batches then hold 0 and 3 of the batch's 3 pairs."""
    rows = []
    for accumulation in (1, 2):
        config = tiny_config(tmp_path / str(accumulation), "max_steps=1",
                             f"gradient_accumulation_steps={accumulation}", "num_generations=3",
                             "lora.enabled=false", "generation.max_new_tokens=5", recipe=recipe,
                             reward="tied_then_distinct")
        run_online(config)
        rows.append(metrics(Path(config.output_dir) / "metrics.jsonl")[0])
    for key in ("loss", "grad_norm", "reward", "kl") + (("ipo_pairs",) if recipe == "online_ipo.yaml" else ()):
        assert rows[0][key] == pytest.approx(rows[1][key], rel=1e-4, abs=1e-6), key
    assert rows[0]["grad_norm"] > 0


@pytest.mark.parametrize("recipe", ["rlhf_rloo.yaml", "safe_rlhf.yaml"])
def test_rloo_takes_the_sampling_policys_logps_from_the_update_forward(recipe, tmp_path, monkeypatch):
    """With one update per batch the update's own forward stands for the sampling policy (one no-grad policy
    forward less per step); the metrics equal those of the separate old-policy forward, the second step's
    included (so the first update moved the weights the same way)."""
    from safealign.online import trainer as trainer_module

    calls = []
    counted = trainer_module.completion_logps
    monkeypatch.setattr(trainer_module, "completion_logps", lambda *a, **k: calls.append(1) or counted(*a, **k))
    runs = {}
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(trainer_module.OnlineTrainer, "_old_from_update", lambda self: False)
        calls.clear()
        config = tiny_config(tmp_path / str(fused), "max_steps=2", "lora.enabled=false", recipe=recipe,
                             reward="byte_reward")
        run_online(config)
        runs[fused] = (metrics(Path(config.output_dir) / "metrics.jsonl"), len(calls))
    (fused_rows, fused_calls), (plain_rows, plain_calls) = runs[True], runs[False]
    assert plain_calls - fused_calls == 2  # one policy forward fewer in each of the 2 steps
    keys = ["loss", "grad_norm", "reward", "kl", "clip_fraction"] + (["lambda"] if recipe == "safe_rlhf.yaml" else [])
    for fused_row, plain_row in zip(fused_rows, plain_rows):
        for key in keys:
            assert fused_row[key] == pytest.approx(plain_row[key], rel=1e-5, abs=1e-7), key
    assert fused_rows[1]["grad_norm"] > 0


def test_active_dropout_keeps_the_separate_old_policy_forward(tmp_path):
    from safealign.online.trainer import OnlineTrainer

    trainer = OnlineTrainer.__new__(OnlineTrainer)
    trainer.config = tiny_config(tmp_path)
    trainer.model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
    assert not trainer._old_from_update()  # a train-mode forward would not reproduce the sampling policy
    trainer.model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.0))
    assert trainer._old_from_update()
    trainer.config = tiny_config(tmp_path, "updates_per_batch=2")  # the weights move between updates
    assert not trainer._old_from_update()


def _with_attention_dropout(rate: float):
    """tiny-random whose attention applies dropout functionally (no nn.Dropout module), as transformers' Llama does."""
    from safealign.models import load_model

    model, tokenizer = load_model("tiny-random")
    model.config.attention_dropout = rate
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = rate
    return model, tokenizer


@pytest.mark.parametrize("recipe", ["rlhf_rloo.yaml", "e_rlhf_grpo.yaml"])
def test_the_reference_and_the_sampling_policy_are_scored_without_dropout(recipe, tmp_path):
    """The model is in train mode after an update (and from the start); with dropout there, the reference's and the
    sampling policy's log-probs would be noisy: the identity transform's KL would not be 0 with the weights fixed."""
    from safealign.online.trainer import OnlineTrainer

    model, tokenizer = _with_attention_dropout(0.5)
    config = tiny_config(tmp_path, "max_steps=2", "learning_rate=0", recipe=recipe, reward="byte_reward")
    config.reference.transform, config.reference.transform_params = "identity", {}
    trainer = OnlineTrainer.__new__(OnlineTrainer)
    trainer.config, trainer.model = config, model
    assert not trainer._old_from_update()  # functional dropout is dropout too
    run_online(config, model=model, tokenizer=tokenizer)
    for row in metrics(Path(config.output_dir) / "metrics.jsonl"):
        assert row["kl"] == pytest.approx(0.0, abs=1e-7)


def test_dropout_leaves_the_ratio_at_one_with_one_update_per_batch(tmp_path):
    """With one update per batch the weights have not moved since sampling: the ratio is 1 (TRL's choice), not
    exp(dropout noise) against the eval-mode sampling policy. RLOO's loss is then −mean(A) = 0 (leave-one-out
    advantages sum to 0 in each group) and nothing is clipped."""
    config = tiny_config(tmp_path, "max_steps=4", "lora.dropout=0.3", "learning_rate=5e-2",
                         "generation.max_new_tokens=12", recipe="rlhf_rloo.yaml", reward="byte_reward")
    run_online(config)
    rows = metrics(Path(config.output_dir) / "metrics.jsonl")
    assert all(row["clip_fraction"] == 0 for row in rows)
    assert all(row["loss"] == pytest.approx(0.0, abs=1e-6) for row in rows)
    assert any(abs(row["kl"]) > 1e-4 for row in rows)  # the policy moved


@pytest.mark.parametrize("overrides, named", [
    ([], None),
    (["generation.temperature=0.7"], "generation.temperature=0.7"),
    (["generation.top_p=0.9", "generation.top_k=5"], "generation.top_p=0.9, generation.top_k=5"),
])
def test_sampling_from_a_tempered_or_truncated_distribution_is_warned_about(overrides, named, tmp_path, caplog):
    """The update and the KL score the untempered policy: other sampling settings are allowed but off-policy."""
    import logging

    with caplog.at_level(logging.WARNING, logger="safealign.online.trainer"):
        run_online(tiny_config(tmp_path, "max_steps=1", *overrides))
    warned = [r.getMessage() for r in caplog.records if "off-policy" in r.getMessage()]
    if named is None:
        assert warned == []
    else:
        assert len(warned) == 1 and warned[0].startswith(named)


def test_a_longer_max_steps_continues_a_constant_schedule_but_not_a_decaying_one(tmp_path):
    """A linear schedule decays over max_steps: resuming with more steps would jump back up to a high learning rate,
    a run neither setting describes, so max_steps is then part of the fingerprint."""
    from safealign.io.rundir import same_settings
    from safealign.online.run import online_fingerprint

    def fingerprint(*overrides):
        return online_fingerprint(tiny_config(tmp_path, *overrides))

    assert same_settings(fingerprint("max_steps=100"), fingerprint("max_steps=200"))
    linear = "lr_scheduler_type=linear"
    assert not same_settings(fingerprint(linear, "max_steps=100"), fingerprint(linear, "max_steps=200"))


def test_a_reference_model_with_another_tokenizer_is_refused(tmp_path):
    """The online reference scores the policy's token ids too: a reference.model of the same vocabulary size but
    another tokenizer would give meaningless KL values silently (safealign.train.reference.check_same_tokenizer)."""
    from safealign.models.tiny import tiny_model, tiny_tokenizer

    folder = tmp_path / "ref"
    tiny_model(seed=1).save_pretrained(folder)
    tiny_tokenizer(reversed_alphabet=True).save_pretrained(folder)
    config = tiny_config(tmp_path, "max_steps=1", f"reference.model={folder}")
    with pytest.raises(UserError, match="does not share the policy's tokenizer"):
        run_online(config)


def test_max_grad_norm_zero_means_no_clipping_and_a_negative_one_is_refused(tmp_path):
    """0 is "no clipping" (as the offline trainer and HF's Trainer): clip_grad_norm_(…, 0) would zero every gradient
    while the logged norm looked healthy, and a negative norm would flip them (gradient ascent)."""
    rows = {}
    for norm in ("0", "1e9"):  # 1e9: far above any gradient norm here, so clipping never bites either
        config = tiny_config(tmp_path / norm, "max_steps=2", f"max_grad_norm={norm}", "learning_rate=5e-2",
                             recipe="rlhf_rloo.yaml", reward="byte_reward")
        run_online(config)
        rows[norm] = metrics(Path(config.output_dir) / "metrics.jsonl")
    drop = lambda row: {k: v for k, v in row.items() if not k.startswith(("time/", "share/"))}  # noqa: E731
    assert [drop(r) for r in rows["0"]] == [drop(r) for r in rows["1e9"]]
    assert rows["0"][0]["grad_norm"] > 0 and abs(rows["0"][1]["kl"]) > 1e-6  # the first update moved the policy
    with pytest.raises(UserError, match="max_grad_norm must be >= 0"):
        tiny_config(tmp_path, "max_grad_norm=-1")


def _old_step_prompts(items, step, per_step, seed):
    """step_prompts as first written (a fresh shuffle per position): the order existing runs were trained in."""
    import random

    picked = []
    for position in range(step * per_step, (step + 1) * per_step):
        epoch, offset = divmod(position, len(items))
        order = list(range(len(items)))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        picked.append(items[order[offset]])
    return picked


def test_step_prompts_shuffles_each_epoch_once_and_keeps_the_order_runs_were_trained_in(monkeypatch):
    from safealign.online import prompts as prompts_module
    from safealign.online.prompts import step_prompts

    items = list(range(7))
    for seed in (0, 3, 41):
        for per_step in (1, 3, 7, 16):  # 16 > 7: one step spans three epochs
            for step in (0, 1, 2, 5, 13):
                assert step_prompts(items, step, per_step, seed) == _old_step_prompts(items, step, per_step, seed)
    shuffles = []

    class Counting(prompts_module.random.Random):
        def shuffle(self, x):
            shuffles.append(len(x))
            return super().shuffle(x)

    monkeypatch.setattr(prompts_module.random, "Random", Counting)
    many = list(range(1000))
    for step in range(5):  # 5 steps of 100 prompts: all in epoch 0 of seed 987
        step_prompts(many, step, 100, 987)
    assert shuffles == [1000]


def test_truncated_fraction_leaves_out_completions_that_end_with_eos_at_the_last_position(tmp_path, monkeypatch):
    """A completion of max_new_tokens tokens whose last one is an eos finished on its own: it was not cut."""
    from safealign.eval.backends.base import eos_ids
    from safealign.online import trainer as trainer_module

    real = trainer_module.sample

    def full_length(model, tokenizer, *args, max_new_tokens, **kwargs):
        out = real(model, tokenizer, *args, max_new_tokens=max_new_tokens, **kwargs)
        stops = eos_ids(tokenizer, model)
        eos, word = min(stops), next(t for t in range(100) if t not in stops and t != tokenizer.pad_token_id)
        # even samples end with an eos exactly at the last position, odd ones are cut there
        return [(word,) * (max_new_tokens - 1) + ((eos,) if i % 2 == 0 else (word,)) for i in range(len(out))]

    monkeypatch.setattr(trainer_module, "sample", full_length)
    config = tiny_config(tmp_path, "max_steps=1", reward="length_reward")
    run_online(config)
    row = metrics(Path(config.output_dir) / "metrics.jsonl")[0]
    assert row["completion_length"] == config.generation.max_new_tokens
    assert row["truncated_fraction"] == 0.5


def test_lsc_on_a_cost_source_is_refused(tmp_path):
    """A cost source is combined raw (no LSC baseline) while an LSC source counts as unbounded, which skipped the
    threshold's range check: the constraint could be always met and training silently reward-only."""
    with pytest.raises(UserError, match=r"safe_rlhf\.cost\.0\.lsc.*cost source"):
        tiny_config(tmp_path, "safe_rlhf.cost.0.lsc=true", recipe="safe_rlhf.yaml")
    assert tiny_config(tmp_path, "rewards.0.lsc=true", recipe="safe_rlhf.yaml").rewards[0].lsc  # rewards may


def test_editing_the_prompts_file_refuses_a_resume_naming_it(tmp_path):
    """The run fingerprint holds the prompts file's content, not only its path."""
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"Question {i}?", "harmful": i % 2 == 0} for i in range(4)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run_online(tiny_config(tmp_path, "max_steps=1", f"prompts.path={path}"))
    path.write_text("".join(json.dumps({**row, "prompt": row["prompt"] + " Please."}) + "\n" for row in rows))
    with pytest.raises(UserError, match=r"different settings \(prompts\.path_data: "):
        run_online(tiny_config(tmp_path, "max_steps=2", f"prompts.path={path}"), resume=True)


def test_a_run_recorded_before_content_and_weights_were_fingerprinted_still_resumes(tmp_path):
    """A fingerprint.json of the config alone (as written before the prompts' content and the models' weights were
    recorded), lacking a setting added since at its default, resumes; a changed setting is still refused."""
    from safealign.config import to_dict
    from safealign.io.rundir import make_fingerprint
    from safealign.online.run import EXCLUDED

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q{i}?", "harmful": i % 2 == 0}) + "\n" for i in range(4)))
    first = tiny_config(tmp_path, "max_steps=1", f"prompts.path={path}")
    run_online(first)
    old = make_fingerprint("online", to_dict(first), exclude=EXCLUDED).to_json()
    del old["values"]["generation.top_k"]  # as if top_k had been added to the config since (it is at its default)
    (Path(first.output_dir) / "fingerprint.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"beta: "):
        run_online(tiny_config(tmp_path, "max_steps=2", f"prompts.path={path}", "beta=0.5"), resume=True)
    run_online(tiny_config(tmp_path, "max_steps=2", f"prompts.path={path}"), resume=True)
    assert [r["step"] for r in metrics(Path(first.output_dir) / "metrics.jsonl")] == [1, 2]


def test_the_fingerprint_holds_the_reference_and_reward_model_weights(tmp_path):
    """Other weights at the same reference.model or reward-model path are another run."""
    from safealign.io.rundir import differing_keys
    from safealign.models.tiny import tiny_model, tiny_tokenizer
    from safealign.online.run import online_fingerprint

    reference, scorer = tmp_path / "ref", tmp_path / "rm"
    tiny_model(seed=1).save_pretrained(reference)
    tiny_tokenizer().save_pretrained(reference)
    (scorer / "backbone").mkdir(parents=True)
    (scorer / "backbone" / "model.safetensors").write_bytes(b"backbone")
    (scorer / "head.pt").write_bytes(b"head")
    (scorer / "reward_model.json").write_text('{"kind": "reward", "base": "tiny-random"}')
    config = tiny_config(tmp_path, f"reference.model={reference}")
    config.rewards = [SourceConfig(), SourceConfig(kind="reward_model", path=str(scorer))]
    before = online_fingerprint(config)
    assert before.values["rewards.weights"][0] is None and before.values["rewards.weights"][1]
    tiny_model(seed=2).save_pretrained(reference)
    (scorer / "head.pt").write_bytes(b"another head")
    assert differing_keys(before, online_fingerprint(config)) == ["reference.weights", "rewards.weights"]


def test_a_reward_models_tokenizer_files_are_in_the_fingerprint_as_a_key_of_their_own(tmp_path):
    """The chat template (backbone/chat_template.jinja, tokenizer*.json) decides every score: edited in place, a
    resumed run would go on under another reward. Held under rewards.tokenizer, not in rewards.weights, so a run
    recorded before (weights digest unchanged, no tokenizer key) still resumes."""
    from safealign.eval.reward_model import reward_model_fingerprint
    from safealign.io.rundir import Fingerprint, differing_keys, same_settings
    from safealign.online.run import online_fingerprint

    scorer = tmp_path / "rm"
    (scorer / "backbone").mkdir(parents=True)
    (scorer / "backbone" / "model.safetensors").write_bytes(b"backbone")
    (scorer / "backbone" / "chat_template.jinja").write_text("{{ messages }}")
    (scorer / "backbone" / "tokenizer.json").write_text("{}")
    (scorer / "head.pt").write_bytes(b"head")
    (scorer / "reward_model.json").write_text('{"kind": "reward", "base": "tiny-random"}')
    config = tiny_config(tmp_path)
    config.rewards = [SourceConfig(kind="reward_model", path=str(scorer))]
    before, weights = online_fingerprint(config), reward_model_fingerprint(scorer)
    assert before.values["rewards.tokenizer"][0]
    (scorer / "backbone" / "chat_template.jinja").write_text("{{ messages | reverse }}")
    after = online_fingerprint(config)
    assert differing_keys(before, after) == ["rewards.tokenizer"] and reward_model_fingerprint(scorer) == weights
    recorded = Fingerprint(before.kind, {k: v for k, v in before.values.items() if k != "rewards.tokenizer"})
    assert same_settings(recorded, after)  # recorded before the key existed: resumes


def test_a_judge_source_retrained_in_place_refuses_a_resume_naming_it(tmp_path, tiny_tokenizer):
    """A classifier judge names its model by a folder's path: retrained in place, it keeps its name and params, and
    a resumed run would go on under another reward. The fingerprint holds the weights of the models a judge source
    runs (reward and cost), so the resume is refused naming the key; a judge that runs no model (refusal) adds none,
    so such runs keep the digest they were recorded under."""
    from safealign.models.tiny import tiny_model
    from safealign.online.run import online_fingerprint

    folder = tmp_path / "classifier"

    def save(seed):
        tiny_model(seed=seed).save_pretrained(folder)
        tiny_tokenizer.save_pretrained(folder)

    def config(*overrides, recipe="e_rlhf_rloo.yaml"):
        found = tiny_config(tmp_path, *overrides, recipe=recipe)
        found.rewards = [SourceConfig(), SourceConfig(name="classifier", params={
            "model": str(folder), "format": "strongreject-finetuned"})]
        return found

    save(0)
    assert "rewards.judge_weights" not in online_fingerprint(tiny_config(tmp_path)).values
    safe = tiny_config(tmp_path, recipe="safe_rlhf.yaml")
    assert not {"rewards.judge_weights", "safe_rlhf.cost.judge_weights"} & set(online_fingerprint(safe).values)
    safe.safe_rlhf.cost = config().rewards
    assert online_fingerprint(safe).values["safe_rlhf.cost.judge_weights"][1][0]["weights"]
    run_online(config("max_steps=1"))
    save(1)  # retrained: other weights at the same path, the same params
    with pytest.raises(UserError, match=r"different settings \(rewards\.judge_weights: "):
        run_online(config("max_steps=2"), resume=True)


def _scorer_folder(root, kind):
    """A reward-model folder holding only reward_model.json: the kind check must come before anything loads."""
    folder = root / f"{kind}_rm"
    folder.mkdir()
    (folder / "reward_model.json").write_text(json.dumps({"kind": kind, "base": "tiny-random"}))
    return folder


def test_a_model_of_the_wrong_kind_is_refused_as_a_reward_or_a_cost_before_the_policy_loads(tmp_path):
    """A cost model (cost > 0 = unsafe) used as a reward rewards unsafe answers; a reward model used as a
    Safe-RLHF cost flips the constraint. Both are refused by the config check, naming the setting, folder and
    kind; the right kinds pass."""
    from safealign.online.run import check_online_config

    cost, reward = _scorer_folder(tmp_path, "cost"), _scorer_folder(tmp_path, "reward")
    config = tiny_config(tmp_path, recipe="safe_rlhf.yaml")
    config.rewards = [SourceConfig(), SourceConfig(kind="reward_model", path=str(cost))]
    with pytest.raises(UserError, match=rf"rewards\.1 \('cost_rm'\): {cost} is a cost model.*kind: cost.*reward"):
        check_online_config(config)
    config.rewards = [SourceConfig(kind="reward_model", path=str(reward))]
    config.safe_rlhf.cost = [SourceConfig(kind="reward_model", path=str(reward))]
    with pytest.raises(UserError, match=rf"safe_rlhf\.cost\.0 \('reward_rm'\): {reward} is a reward model"):
        check_online_config(config)
    config.safe_rlhf.cost = [SourceConfig(kind="reward_model", path=str(cost))]
    check_online_config(config)
    with pytest.raises(UserError, match=rf"{reward} is a reward model"):  # a direct build checks it too
        from safealign.online.rewards import build_sources

        build_sources([SourceConfig(kind="reward_model", path=str(reward))], what="cost")


def test_a_resume_with_max_steps_below_the_checkpoint_is_refused(tmp_path):
    """Under the constant schedule max_steps is no setting (a longer one extends a run), so a shorter one passed the
    fingerprint: the loop never ran and the longer run was saved as ``final`` under the shorter run's config. It
    cannot be shortened: refused, naming the folder, its step and max_steps, before anything is written."""
    run_online(tiny_config(tmp_path, "max_steps=2"))
    out = tmp_path / "run"
    summary, config = (out / "train_summary.json").read_text(), (out / "config.yaml").read_text()
    with pytest.raises(UserError, match=rf"^--resume: {out} holds a run trained for 2 steps, more than max_steps=1"):
        run_online(tiny_config(tmp_path, "max_steps=1"), resume=True)
    assert (out / "train_summary.json").read_text() == summary and (out / "config.yaml").read_text() == config
    run_online(tiny_config(tmp_path, "max_steps=2"), resume=True)  # the run's own max_steps still resumes
