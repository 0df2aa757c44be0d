"""The demo's methods (safealign/pipelines/demo_methods.py): each recipe's training config, the comparison
pairs, the pre-load check of a method's data needs, and a tiny-random ``demo --compare`` over all of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safealign.errors import UserError
from safealign.losses import get_loss
from safealign.pipelines.demo_config import DemoConfig, load_demo_config, train_config
from safealign.pipelines.demo_methods import (
    METHODS,
    check_methods_on_layout,
    comparison_pairs,
    describe,
    register_method,
)
from safealign.train.config import LossConfig
from tests.losses.loss_helpers import pair


def _train(config: DemoConfig, method: str):
    return train_config(config, method, Path("run/pairs.jsonl"), Path("out"), 0)


def _names(train) -> list[tuple[str, float, dict]]:
    return [(loss.name, loss.weight, dict(loss.params)) for loss in train.losses]


def test_each_method_rewrites_the_demo_objective_as_its_recipe_says():
    config = DemoConfig()  # rpo(β 0.1, η 1)
    dpo, e_dpo = _train(config, "dpo"), _train(config, "e-dpo")
    assert _names(dpo) == _names(e_dpo) == [("rpo", 1.0, {"beta": 0.1, "eta": 1.0})]
    assert (dpo.reference.transform, e_dpo.reference.transform) == ("identity", "safety_prefix")
    safedpo = _train(config, "safedpo")
    assert _names(safedpo) == [("safedpo", 1.0, {"beta": 0.1, "delta": 1.0}), ("sft", 1.0, {})]
    assert [t["name"] for t in safedpo.data.transforms] == ["flags_from_harmful", "safety_order"]
    assert _train(config, "e-safedpo").reference.transform_params == {"prefix": "community_guidelines",
                                                                      "apply_to": "harmful"}
    deep = _train(config, "deep-aug")
    assert _names(deep) == _names(dpo) and [t["name"] for t in deep.data.transforms] == ["flags_from_harmful",
                                                                                         "recovery"]
    constrained = _train(config, "constrained-sft")
    assert _names(constrained) == [("constrained_sft", 1.0, {"beta": 0.1})]
    assert constrained.reference.mode == "live" and constrained.diagnostics.entanglement_every == 0
    derta = _train(config, "derta")
    assert _names(derta) == [("sft", 1.0, {})] and derta.data.transforms[-1]["name"] == "derta"
    assert "e-derta" not in METHODS  # maximum likelihood: no reference term, no E-variant
    assert config.train.data.transforms == []  # the demo's own config is not changed by a method
    plain = load_demo_config(["nll_weight=0", "beta=0.5"])
    assert _names(_train(plain, "safedpo")) == [("safedpo", 1.0, {"beta": 0.5, "delta": 1.0})]
    # constrained_sft's β is the per-token sigmoid scale of Qi et al. (0.1), not the demo's DPO β
    assert _names(_train(plain, "constrained-sft")) == [("constrained_sft", 1.0, {"beta": 0.1})]
    assert describe(safedpo).startswith("1·safedpo(beta=0.1, delta=1.0) + 1·sft(); data: flags_from_harmful")


def test_safedpo_method_is_the_demo_objective_when_its_offset_is_zero():
    """rpo(β, η) = safedpo(β, Δ=0) + η·sft on safety-ordered pairs: the method changes only the offset."""
    x = pair([-4.0, -2.0], [-9.0, -1.0], [-5.0, -2.5], [-8.0, -1.5], lw=[3, 2], ll=[4, 1])
    import dataclasses

    import torch
    x = dataclasses.replace(x, chosen_safe=torch.ones(2, dtype=torch.float64),
                            rejected_safe=torch.tensor([0.0, 1.0], dtype=torch.float64))
    rpo = get_loss("rpo")(x, beta=0.3, eta=0.7).losses
    parts = get_loss("safedpo")(x, beta=0.3).losses + 0.7 * get_loss("sft")(x).losses
    assert rpo.tolist() == pytest.approx(parts.tolist())
    assert (get_loss("safedpo")(x, beta=0.3, delta=1.0).losses > get_loss("safedpo")(x, beta=0.3).losses).tolist() \
        == [True, False]  # the offset acts on the safe-vs-unsafe row only


def test_comparison_pairs_use_dpo_as_baseline_and_pair_each_e_variant_with_its_method():
    assert comparison_pairs(["dpo", "e-dpo"]) == [("e-dpo", "dpo")]
    assert comparison_pairs(["e-dpo", "dpo"]) == [("e-dpo", "dpo")]
    assert comparison_pairs(["e-dpo"]) == []
    assert comparison_pairs(["dpo", "safedpo", "e-safedpo", "derta"]) == [
        ("safedpo", "dpo"), ("e-safedpo", "dpo"), ("derta", "dpo"), ("e-safedpo", "safedpo")]
    assert comparison_pairs(["derta", "deep-aug"]) == [("deep-aug", "derta")]


def test_every_built_in_method_can_train_on_the_self_generated_layout():
    check_methods_on_layout(DemoConfig(variants=[n for n in METHODS.names() if METHODS.get(n).trains]))


def test_a_method_needing_a_field_the_pairs_lack_fails_before_the_model_loads(tmp_path, monkeypatch):
    import safealign.models
    from safealign.pipelines.demo import run_demo

    if "test-needs-scores" not in METHODS:
        register_method("test-needs-scores", "poft: needs aligned-model scores",
                        lambda train: setattr(train, "losses", [LossConfig("poft")]), e_variant=False)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(safealign.models, "load_model", no_model)
    config = DemoConfig(output_dir=str(tmp_path / "run"), model="tiny-random", variants=["dpo", "test-needs-scores"])
    with pytest.raises(UserError, match="method 'test-needs-scores'.*demo's pairs.jsonl.*'chosen_scores'"):
        run_demo(config)
    with pytest.raises(UserError, match="unknown demo variant"):
        run_demo(DemoConfig(output_dir=str(tmp_path / "run2"), variants=["dpo", "nope"]))


class _Prefixing:
    """An inference-time test method: answers through the wrapped model, counting the calls."""

    calls = 0

    def __init__(self, chat, params) -> None:
        self.chat = chat

    def __getattr__(self, name):
        return getattr(self.chat, name)

    def generate(self, conversations, params):
        type(self).calls += 1
        return self.chat.generate(conversations, params)


def test_demo_compare_trains_every_method_from_the_same_pairs_and_reports_one_table(tmp_path, monkeypatch):
    from safealign.cli import main

    if "test-wrapped" not in METHODS:
        register_method("test-wrapped", "the starting model behind a wrapper", trains=False, wrap_chat=_Prefixing,
                        e_variant=False)
    methods = ["dpo", "e-dpo", "safedpo", "deep-aug", "e-constrained-sft", "derta", "test-wrapped"]
    run = tmp_path / "demo"
    argv = ["demo", "--output-dir", str(run), "--model", "tiny-random", "--compare", ",".join(methods),
            "harmful_train=4", "benign_train=2", "borderline_train=0", "harmful_test=2", "benign_test=1",
            "borderline_test=1", "eval_max_new_tokens=3", "pair_max_new_tokens=6", "train_batch_size=8",
            "templates=[refusal_suppression]", "entanglement_every=0"]
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    assert main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["after"]) == set(methods)
    assert [(c["a"], c["b"]) for c in summary["comparisons"]] == [(m, "dpo") for m in methods[1:]]
    assert summary["comparison"]["a"] == "e-dpo"  # the e-dpo − dpo comparison keeps its place
    for c in summary["comparisons"]:
        for metric in ("direct_asr", "template_asr"):
            a, b = summary["after"][c["a"]][metric]["value"], summary["after"][c["b"]][metric]["value"]
            assert c["metrics"][metric]["diff"] == pytest.approx(a - b)  # one seed: the difference of the rates
    assert summary["methods"]["safedpo"].startswith("SafeDPO") and "safety_order" in summary["methods"]["safedpo"]
    trained = {m: yaml_config(run / "train" / m) for m in methods if m != "test-wrapped"}
    assert trained["derta"]["data"]["transforms"][-1]["name"] == "derta"
    assert {t["data"]["path"] for t in trained.values()} == {str(run / "pairs.jsonl")}  # the same pairs
    assert not (run / "train" / "test-wrapped").exists() and _Prefixing.calls > 0
    html = (run / "report.html").read_text()
    assert "Paired comparison: derta vs dpo" in html and "Paired comparison: e-dpo vs dpo" in html


def yaml_config(stage: Path) -> dict:
    import yaml

    return yaml.safe_load((stage / "config.yaml").read_text())


def test_the_default_demo_trains_dpo_beside_e_dpo_and_compares_them():
    """Issue 20: the demo shows DPO next to E-DPO with their paired difference without being asked."""
    config = load_demo_config([])
    assert config.variants == ["dpo", "e-dpo"]
    assert comparison_pairs(config.variants) == [("e-dpo", "dpo")]


def test_the_hidden_state_objectives_are_demo_methods_checked_like_train():
    config = DemoConfig()
    rr, refat = _train(config, "rr"), _train(config, "refat")
    assert (rr.objective.name, refat.objective.name) == ("circuit_breakers", "refat")
    assert _names(rr) == [("dpo", 1.0, {})] and rr.diagnostics.entanglement_every == 0  # the demo's rpo removed
    assert "e-rr" not in METHODS and "e-refat" not in METHODS
    assert describe(rr) == "objective circuit_breakers(); reference: identity"
    check_methods_on_layout(DemoConfig(variants=["dpo", "rr", "refat"]))
    rr.data.transforms = [{"name": "flags_from_harmful", "params": {}}]  # objectives do not apply row transforms
    from safealign.train.objectives.run import check_objective_config

    with pytest.raises(UserError, match="data.transforms applies to preference losses"):
        check_objective_config(rr)
