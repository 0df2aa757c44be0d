"""DemoConfig nests TrainConfig and EvalConfig; the flat keys of earlier versions keep their meaning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from safealign.errors import UserError
from safealign.eval.config import EvalConfig
from safealign.pipelines.demo_config import DemoConfig, eval_config, load_demo_config, objective_name, train_config
from safealign.train.config import DataConfig, DiagnosticsConfig, LoraConfig, LossConfig, TrainConfig

README = ["nll_weight=0", "beta=0.5", "learning_rate=1e-3", "train_seeds=[0,1,2]", "entanglement_every=0",
          "extra_harmful=[a.csv,b.csv]"]


def expected_train(*, loss: LossConfig, lr: float = 2e-3, r: int = 16, every: int = 8, seed: int = 0,
                   transform: str = "identity", transform_params: dict | None = None) -> TrainConfig:
    """What the flat DemoConfig built for a stage, written out field by field."""
    train = TrainConfig(model="tiny-random", output_dir="out", losses=[loss],
                        lora=LoraConfig(enabled=True, r=r, alpha=2 * r, last_layers=None), learning_rate=lr,
                        num_train_epochs=1.0, per_device_train_batch_size=8, logging_steps=1, save_steps=10,
                        save_total_limit=1, seed=seed,
                        data=DataConfig(path="run/pairs.jsonl", format="standard", max_length=192,
                                        max_prompt_length=96),
                        diagnostics=DiagnosticsConfig(entanglement_every=every, probe_pairs=4))
    train.reference.transform = transform
    train.reference.transform_params = transform_params or {}
    return train


def stage(config: DemoConfig, variant: str = "dpo", seed: int = 0) -> TrainConfig:
    return train_config(config, variant, Path("run/pairs.jsonl"), Path("out"), seed)


def test_defaults_build_the_same_training_config_as_before():
    config = load_demo_config(["model=tiny-random"])
    assert stage(config) == expected_train(loss=LossConfig("rpo", params={"beta": 0.1, "eta": 1.0}))
    assert stage(config, "e-dpo", 2) == expected_train(
        loss=LossConfig("rpo", params={"beta": 0.1, "eta": 1.0}), seed=2, transform="safety_prefix",
        transform_params={"prefix": "community_guidelines", "apply_to": "harmful"})
    assert objective_name(config).startswith("DPO (β=0.1) + 1·NLL(chosen) [rpo]; E-variant")


def test_readme_overrides_keep_their_meaning_in_any_order():
    config = load_demo_config(["model=tiny-random", *README])
    want = expected_train(loss=LossConfig("dpo", params={"beta": 0.5}), lr=1e-3, every=0)
    assert stage(config) == want
    assert config.train_seeds == [0, 1, 2] and config.extra_harmful == ["a.csv", "b.csv"]
    assert stage(load_demo_config(["model=tiny-random", *reversed(README)])) == want
    assert objective_name(config).startswith("DPO (β=0.5); E-variant")


def test_flat_aliases_equal_the_nested_paths():
    flat = load_demo_config(["lora_r=8", "epochs=2", "train_batch_size=4", "lora_last_layers=2",
                             "entanglement_probe=3", "eval_max_new_tokens=7", "batch_size=5",
                             "templates=[roleplay_novelist]", "beta=1"])
    nested = load_demo_config(["train.lora.r=8", "train.lora.alpha=16", "train.num_train_epochs=2",
                               "train.per_device_train_batch_size=4", "train.lora.last_layers=2",
                               "train.diagnostics.probe_pairs=3", "eval.generation.max_new_tokens=7",
                               "eval.generation.batch_size=5", "eval.attack_params.template.names=[roleplay_novelist]",
                               "train.losses.0.params.beta=1.0"])
    assert flat == nested
    assert flat.train.losses[0].params["beta"] == 1.0 and isinstance(flat.train.losses[0].params["beta"], float)


def test_eval_config_of_a_stage():
    config = load_demo_config(["model=tiny-random", "eval_max_new_tokens=4"])
    evaluation = eval_config(config, Path("run/eval/before"))
    want = EvalConfig(output_dir="run/eval/before/jailbreak", attacks=["direct", "template"], judges=["refusal"],
                      attack_params={"template": {"names": ["refusal_suppression", "roleplay_novelist"]}})
    want.model.name = "tiny-random"
    want.generation.max_new_tokens, want.generation.batch_size = 4, 16
    assert evaluation == want


@pytest.mark.parametrize("override, message", [("nll_weight=abc", "nll_weight: expected a number"),
                                               ("train.lerning_rate=1", "lerning_rate"),
                                               # both failed only when the first stage trained, after the pair
                                               # build and the base model's evaluation
                                               ("train.training_args.learnig_rate=1", "did you mean the config key "
                                                                                      "learning_rate"),
                                               ("prefix=community_guideline", "did you mean 'community_guidelines'")])
def test_bad_demo_overrides_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_demo_config([override])


def test_a_run_directory_written_with_flat_keys_resumes(tmp_path):
    from safealign.pipelines.demo import _check_same_config

    flat = {"model": "tiny-random", "output_dir": str(tmp_path), "variants": ["e-dpo"], "seed": 0,
            "train_seeds": [0], "harmful_train": 96, "benign_train": 64, "borderline_train": 32, "harmful_test": 40,
            "benign_test": 24, "borderline_test": 24, "templates": ["refusal_suppression", "roleplay_novelist"],
            "extra_harmful": [], "extra_limit": 50, "pair_max_new_tokens": 48, "eval_max_new_tokens": 48,
            "batch_size": 16, "beta": 0.5, "nll_weight": 0.0, "learning_rate": 0.001, "epochs": 1.0,
            "train_batch_size": 8, "lora_r": 16, "lora_last_layers": None, "entanglement_every": 8,
            "entanglement_probe": 4}
    for folder in ("same", "changed"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "demo_config.json").write_text(json.dumps({**flat, "output_dir": str(tmp_path / folder)}))
    # E-DPO alone was the default then; today's default trains DPO beside it, so resuming names the variant
    same = load_demo_config([f"output_dir={tmp_path / 'same'}", "model=tiny-random", "nll_weight=0", "beta=0.5",
                             "learning_rate=1e-3", "variants=[e-dpo]"])
    _check_same_config(same, tmp_path / "same")  # the flat keys went through the aliases: accepted
    changed = load_demo_config([f"output_dir={tmp_path / 'changed'}", "model=tiny-random", "nll_weight=0",
                                "beta=0.5", "variants=[e-dpo]"])
    with pytest.raises(ValueError, match=r"different settings \(train\.learning_rate: 0\.001 -> 0\.002\)"):
        _check_same_config(changed, tmp_path / "changed")


def test_the_default_untuned_benign_set_is_built_in_and_a_misspelt_name_fails_at_once():
    assert DemoConfig().extra_benign == ["builtin:untuned_benign"]
    with pytest.raises(ValueError, match="builtin:untuned_benign"):
        load_demo_config(["extra_benign=[builtin:untuned]"])


def test_the_untuned_set_is_a_seeded_sample_named_after_the_set():
    from safealign.pipelines.demo import prompt_sets

    sets = prompt_sets(DemoConfig())["extra_benign"]
    assert list(sets) == ["untuned_benign"]
    picked = sets["untuned_benign"]
    assert len(picked) == 50 and {p.kind for p in picked} == {"untuned_benign"}
    assert picked == prompt_sets(DemoConfig())["extra_benign"]["untuned_benign"]  # seeded: the same each run
    assert len(prompt_sets(DemoConfig(extra_benign_limit=100))["extra_benign"]["untuned_benign"]) == 60


@pytest.mark.parametrize("override, key", [("eval.attacks=[direct]", "eval.attacks"),
                                           ("eval.attacks=[template,prefill]", "eval.attacks"),
                                           ("eval.judges=[harmbench]", "eval.judges")])
def test_the_attacks_and_judge_the_figures_need_are_checked_before_anything_loads(override, key):
    # the figures are direct and template ASR under the refusal judge: without them a run failed after training
    with pytest.raises(ValueError, match=rf"{key}: the demo reports direct-request and template ASR .* must include"):
        load_demo_config([override])
    load_demo_config(["eval.attacks=[direct,template,prefill]", "eval.judges=[refusal,harmbench]"])  # more: fine


def test_a_saved_text_is_read_back_as_it_was_saved():
    from safealign.pipelines.demo_config import from_saved

    text = 'Say "no".\nRéponds.'
    assert from_saved({"prefix": text, "templates": ['a "b"', "c, d"], "beta": 0.5})["prefix"] == text
    assert from_saved({"templates": ['a "b"', "c, d"]})["eval"]["attack_params"]["template"]["names"] == ['a "b"',
                                                                                                        "c, d"]


def _overrefusal_params(monkeypatch, tmp_path, overrides):
    """The generation settings the demo's over-refusal stage runs with (the evaluation stopped right there)."""
    from safealign.eval.backends import hf
    from safealign.eval.helpfulness import overrefusal
    from safealign.eval import pipeline
    from safealign.pipelines.demo import evaluate

    class Asked(Exception):
        pass

    def answer(chat, prompts, params, **kwargs):
        raise Asked(params)

    monkeypatch.setattr(hf, "HFChatModel", lambda model, tokenizer: object())
    monkeypatch.setattr(pipeline, "run_eval", lambda *args, **kwargs: None)
    monkeypatch.setattr(overrefusal, "overrefusal_eval", answer)
    with pytest.raises(Asked) as asked:
        evaluate(load_demo_config(overrides), None, None, {"harmful_test": [], "benign_test": [], "extra_benign": {}},
                 tmp_path)
    return asked.value.args[0]


def test_over_refusal_answers_with_the_evaluations_generation_settings(monkeypatch, tmp_path):
    from safealign.eval.backends.base import GenerationParams

    # the defaults: the very settings earlier versions used, so recorded answers stay valid
    assert _overrefusal_params(monkeypatch, tmp_path, []) == GenerationParams(max_new_tokens=48, batch_size=16, seed=0)
    params = _overrefusal_params(monkeypatch, tmp_path, [
        "eval.generation.do_sample=true", "eval.generation.temperature=0.7", "eval.generation.top_p=0.9",
        "eval.generation.stop=[END]", "eval.generation.max_new_tokens=20", "eval.generation.seed=3"])
    assert (params.do_sample, params.temperature, params.top_p, params.stop, params.max_new_tokens, params.seed) == \
        (True, 0.7, 0.9, ("END",), 20, 3)


@pytest.mark.parametrize("stem", ["borderline", "ordinary", "all"])
def test_an_extra_benign_file_named_as_a_built_in_kind_is_refused(tmp_path, stem):
    """Its prompts would be recorded under that kind: borderline_refusal_rate over 74 prompts instead of 24."""
    from safealign.errors import UserError

    path = tmp_path / f"{stem}.json"
    with pytest.raises(UserError, match=rf"extra_benign: {path}.*'{stem}'.*rename"):
        DemoConfig(extra_benign=[str(path)])
    DemoConfig(extra_benign=[str(tmp_path / f"{stem}_alpaca.json")])  # another stem is a set of its own


@pytest.mark.parametrize("key", ["extra_harmful", "extra_benign"])
def test_two_extra_sets_of_one_name_are_refused(tmp_path, key):
    """A set is named by its file's stem: a second file of that stem would replace the first (extra_harmful) or
    merge into it."""
    from safealign.errors import UserError

    first, second = tmp_path / "a" / "advbench_behaviors.csv", tmp_path / "b" / "advbench_behaviors.v2.csv"
    with pytest.raises(UserError, match=rf"{key}: {first} and {second} are both named 'advbench_behaviors'.*rename"):
        DemoConfig(**{key: [str(first), str(second)]})


@pytest.mark.parametrize(("overrides", "match"), [
    (["harmful_test=0"], "harmful_test must be >= 1"),
    (["harmful_train=0", "benign_train=0", "borderline_train=0"], "harmful_train, benign_train, borderline_train"),
    (["variants=[dpo,e-dpoo]"], r"unknown demo variant\(s\) \['e-dpoo'\]"),
    (["variants=[]"], "unknown demo variant"),
    (["train_seeds=[0,0]"], "train_seeds must be distinct"),
])  # fmt: skip
def test_a_count_or_list_that_would_fail_after_the_pair_build_is_refused_when_the_config_loads(overrides, match):
    from safealign.errors import UserError

    with pytest.raises(UserError, match=match):
        load_demo_config(["model=tiny-random", *overrides])


def test_no_training_prompts_are_fine_when_no_variant_trains():
    from safealign.pipelines.demo_methods import METHODS

    inference = next(n for n in METHODS.names() if not METHODS.get(n).trains)
    load_demo_config([f"variants=[{inference}]", "harmful_train=0", "benign_train=0", "borderline_train=0"])


@pytest.mark.parametrize("overrides", [
    ["eval.behaviors.path=/nonexistent/advbench.csv", "eval.behaviors.limit=5"],
    ["eval.behaviors.limit=5"], ["eval.behaviors.rows=0:5"], ["eval.behaviors.ids=[advbench_1]"],
    ["eval.behaviors.sample=3"], ["eval.behaviors.seed=1"], ["eval.behaviors.categories=[cybercrime]"],
    ["eval.behaviors.targets=targets.json"], ["eval.behaviors.copyright=true", "eval.judges=[refusal,copyright]"],
])  # fmt: skip
def test_a_behavior_selection_the_demo_never_reads_is_refused_naming_what_to_use(overrides):
    # the demo hands its evaluation the built-in held-out prompts: `eval.behaviors.limit=5` loaded and the run still
    # evaluated 40 prompts (a missing behaviors file was never read)
    from safealign.errors import UserError

    key = overrides[0].partition("=")[0]
    with pytest.raises(UserError, match=rf"{key}=.*: the demo evaluates .*use harmful_test, extra_harmful"):
        load_demo_config(overrides)


def test_the_length_bounds_of_eval_behaviors_still_apply_to_the_demos_prompts():
    config = load_demo_config(["eval.behaviors.max_chars=500", "eval.behaviors.too_long=skip"])
    assert (config.eval.behaviors.max_chars, config.eval.behaviors.too_long) == (500, "skip")


def test_a_behavior_selection_set_after_the_config_loads_is_refused_before_any_model_loads(tmp_path, no_model_load):
    from safealign.errors import UserError
    from safealign.pipelines.demo import run_demo

    config = DemoConfig(model="tiny-random", output_dir=str(tmp_path / "run"))
    config.eval.behaviors.limit = 5
    with pytest.raises(UserError, match="eval.behaviors.limit"):
        run_demo(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, instead", [("train.seed=3", "train_seeds="), ("train.model=tiny-random", "model="),
                                               ("eval.model.name=other", "model="),
                                               ("eval.output_dir=x", "output_dir="),
                                               ("train.output_dir=x", "output_dir="),
                                               ("train.data.path=p.jsonl", "safealign train"),
                                               ("train.reference.transform=identity", "variants="),
                                               ("train.reference.transform_params.prefix=responsible", "prefix=")])
def test_a_key_every_stage_sets_itself_is_refused_naming_the_demo_key(override, instead):
    """`safealign demo train.seed=3` trained with seed 0: each stage sets its seed, model, folders, pairs and
    reference view itself (train_config, eval_config), so such an override was fingerprinted and silently replaced."""
    key = override.partition("=")[0]
    with pytest.raises(UserError, match=rf"command-line overrides: {re.escape(key)}: every demo stage sets .* use "
                                        rf".*{re.escape(instead)}"):
        load_demo_config([override])


def test_a_sweep_grid_refuses_them_too(tmp_path):
    from safealign.pipelines.sweep import load_grid

    grid = tmp_path / "g.yaml"
    grid.write_text("output_dir: out\ndemo: {model: tiny-random}\naxes: {beta: [0.1]}\nvariants: [dpo]\nseeds: [0]\n")
    with pytest.raises(UserError, match=r"train.seed: every demo stage sets train.seed itself"):
        load_grid(grid, ["train.seed=3"]).setting_config({"beta": 0.1})
    grid.write_text("output_dir: out\ndemo: {model: tiny-random, eval.model.name: x}\naxes: {beta: [0.1]}\n"
                    "variants: [dpo]\nseeds: [0]\n")
    with pytest.raises(UserError, match=r"g.yaml: demo: eval.model.name: every demo stage sets"):
        load_grid(grid).setting_config({"beta": 0.1})
