"""``safealign defenses``: every defense on tiny-random, on the same prompts, one table, one report."""

from __future__ import annotations

import json

import pytest

from safealign.config import load_config
from safealign.errors import UserError
from safealign.eval.config import DefenseConfig
from safealign.pipelines.defenses import (
    DefenseCompareConfig, MethodConfig, format_comparison, run_defense_comparison,
)


def _config(tmp_path, methods) -> DefenseCompareConfig:
    config = DefenseCompareConfig(harmful_test=3, benign_test=2, borderline_test=1, methods=methods,
                                  output_dir=str(tmp_path / "run"))  # fmt: skip
    config.eval.model.name = "tiny-random"
    config.eval.generation.max_new_tokens = 4
    config.eval.generation.batch_size = 8
    config.eval.attack_params = {"template": {"names": ["refusal_suppression"]}}
    return config


ALL = [
    MethodConfig("base"),
    MethodConfig("reminder", [DefenseConfig("self_reminder")]),
    MethodConfig("icd", [DefenseConfig("in_context", {"k": 1})]),
    MethodConfig("urial", [DefenseConfig("urial")]),
    MethodConfig("ppl", [DefenseConfig("perplexity_filter", {"window": 4, "calibration_limit": 8})]),
    MethodConfig("smooth", [DefenseConfig("smoothllm", {"copies": 3, "q": 10})]),
    MethodConfig("deal", [DefenseConfig("deal", {"top_k": 2, "lookahead": 2})]),
    MethodConfig("mpo", [DefenseConfig("mpo", {"policies": ["target", "tiny-random"], "weights": [0.5, 0.5]})]),
    MethodConfig("alignpro", [DefenseConfig("align_pro", {"candidates": 2, "max_rewrite_tokens": 4})]),
]


def test_every_defense_runs_on_tiny_random_and_is_priced_against_the_bare_model(tmp_path):
    summary = run_defense_comparison(_config(tmp_path, ALL))
    methods = summary["methods"]
    assert list(methods) == [m.name for m in ALL] and summary["base"] == "base"
    for name, m in methods.items():
        assert m["asr"]["direct"]["n"] == 3 and m["asr"]["template"]["n"] == 3, name
        assert m["over_refusal"]["all"]["n"] == 3, name
        assert m["cost"]["answers"] == 9, name  # 3 direct + 3 template + 3 benign
    assert methods["base"]["cost_multiple"]["generated_tokens"] == 1.0
    # a random model rarely stops early: 3 copies cost ~3× the tokens, DeAL's 2 candidates ~2×
    assert methods["smooth"]["cost_multiple"]["generated_tokens"] > 2.0
    assert methods["deal"]["cost_multiple"]["generated_tokens"] > 1.5
    assert methods["mpo"]["cost"]["forward_passes"] > 0 and methods["ppl"]["cost"]["forward_passes"] >= 1
    assert methods["ppl"]["described"][0]["threshold"] is not None
    table = format_comparison(summary)
    assert "smooth" in table and "× base tokens" in table
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Defenses: safety, helpfulness and cost" in html and "self_reminder" in html
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["kind"] == "defense_comparison"
    # resuming generates nothing new and gives the same rates
    again = run_defense_comparison(_config(tmp_path, ALL))
    assert again["methods"]["smooth"]["asr"] == methods["smooth"]["asr"]


def test_a_token_level_defense_on_an_endpoint_fails_before_the_model_loads(tmp_path):
    config = _config(tmp_path, [MethodConfig("base"), MethodConfig("deal", [DefenseConfig("deal")])])
    config.eval.model.backend = "openai"
    with pytest.raises(UserError, match="needs token-level access"):
        run_defense_comparison(config)
    assert not (tmp_path / "run").exists()


def test_the_shipped_config_loads_and_checks():
    from safealign.eval.defenses.base import check_defenses

    config = load_config(DefenseCompareConfig, "configs/eval/defenses.yaml")
    assert config.methods[0].name == "base" and len(config.methods) >= 8
    for method in config.methods:
        check_defenses(method.defenses, config.eval.model.backend)
    with pytest.raises(UserError, match="distinct"):
        DefenseCompareConfig(methods=[MethodConfig("a"), MethodConfig("a")])


def _small(tmp_path, methods) -> DefenseCompareConfig:
    config = _config(tmp_path, methods)
    config.harmful_test, config.benign_test, config.eval.attacks = 1, 1, ["direct"]
    return config


def test_a_rerun_with_other_settings_is_refused_before_it_writes_and_names_fresh(tmp_path, capsys):
    from safealign.cli import main

    run_defense_comparison(_small(tmp_path, [MethodConfig("base")]))
    saved = (tmp_path / "run" / "config.yaml").read_text()
    changed = _small(tmp_path, [MethodConfig("base")])
    changed.eval.generation.max_new_tokens = 3
    with pytest.raises(UserError, match="different settings") as raised:
        run_defense_comparison(changed)
    # the earlier run's saved config still describes its results, and the remedy is an option the command has
    assert (tmp_path / "run" / "config.yaml").read_text() == saved
    assert "--fresh" in str(raised.value) and "--overwrite" not in str(raised.value)
    # a directory made before fingerprints is checked against the config.yaml it saved
    (tmp_path / "run" / "fingerprint.json").unlink()
    with pytest.raises(UserError, match="different settings.*--fresh"):
        run_defense_comparison(changed)
    assert (tmp_path / "run" / "config.yaml").read_text() == saved
    # a method added to the comparison extends the run (the recorded methods are resumed)
    run_defense_comparison(_small(tmp_path, [MethodConfig("base"), MethodConfig("reminder",
                                                                                [DefenseConfig("self_reminder")])]))
    # --fresh deletes the earlier outputs and runs the new settings
    path = tmp_path / "changed.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\nharmful_test: 1\nbenign_test: 1\nborderline_test: 1\n"
                    "eval:\n  model: {name: tiny-random}\n  attacks: [direct]\n"
                    "  generation: {max_new_tokens: 3, batch_size: 8}\n")
    assert main(["defenses", str(path), "--fresh"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert list(summary["methods"]) == ["base"] and not (tmp_path / "run" / "eval" / "reminder").exists()
    assert "max_new_tokens: 3" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize("key, value, instead", [
    ("eval.behaviors.path", "/nonexistent/advbench.csv", "prompts: config"),
    ("eval.behaviors.limit", 5, "harmful_test"),
    ("eval.benign.path", "or-bench-hard-1k.csv", "benign_test"),
    ("eval.benign.limit", 5, "borderline_test"),
    ("eval.benign.from_behaviors", False, "prompts: config"),
    ("eval.defenses", [{"name": "self_reminder"}], "methods"),
    ("eval.output_dir", "runs/elsewhere", r"output_dir.*eval/<method>"),
])  # fmt: skip
def test_an_eval_setting_the_comparison_never_reads_is_refused_naming_what_to_use(key, value, instead):
    # with prompts: builtin every method is handed the built-in held-out prompts, and each method's evaluation gets
    # its own defenses and folder: these loaded without a word and went unused
    from safealign.config import Value

    with pytest.raises(UserError, match=rf"{key}=.*: .*{instead}"):
        load_config(DefenseCompareConfig, None, [Value(key, value, "test")])


def test_prompts_config_reads_eval_behaviors_and_refuses_the_builtin_counts():
    from safealign.config import Value

    config = load_config(DefenseCompareConfig, None, [Value("prompts", "config", "test"),
                                                      Value("eval.behaviors.path", "advbench.csv", "test"),
                                                      Value("eval.behaviors.limit", 5, "test")])
    assert config.eval.behaviors.limit == 5
    with pytest.raises(UserError, match=r"harmful_test=10: prompts: config evaluates eval.behaviors"):
        load_config(DefenseCompareConfig, None, [Value("prompts", "config", "test"), Value("harmful_test", 10, "test")])


def test_an_unread_setting_given_after_the_config_loads_is_refused_before_the_model_loads(tmp_path, no_model_load):
    config = _small(tmp_path, [MethodConfig("base")])
    config.eval.behaviors.limit = 5
    with pytest.raises(UserError, match="eval.behaviors.limit"):
        run_defense_comparison(config)
    assert not (tmp_path / "run").exists()


def test_the_shipped_configs_still_load():
    for path in ("configs/eval/defenses.yaml", "configs/eval/defenses_after_demo.yaml"):
        assert load_config(DefenseCompareConfig, path).prompts == "builtin"
