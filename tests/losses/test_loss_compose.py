"""Weighted composition, lookup and up-front parameter validation."""

from __future__ import annotations

import json

import pytest
import torch
from loss_helpers import pair, unpaired

from safealign.errors import UserError
from safealign.losses import (
    ComposedLoss,
    LossSpec,
    build_loss,
    get_loss,
    loss_info,
    loss_params,
    register_loss,
    validate_params,
)
from safealign.losses.base import LOSSES

X = pair([-10.0, -3.0], [-12.0, -4.0], [-11.0, -3.5], [-11.0, -3.0], [4.0, 2.0], [2.0, 3.0])


def test_composition_is_weighted_sum_with_prefixed_metrics():
    objective = build_loss([LossSpec("dpo", 1.0, {"beta": 0.2}), LossSpec("cpo", 0.5, {"alpha": 0.0}), "dpo"])
    out = objective(X)
    expected = (
        get_loss("dpo")(X, beta=0.2).losses + 0.5 * get_loss("cpo")(X, alpha=0.0).losses + get_loss("dpo")(X).losses
    )
    torch.testing.assert_close(out.losses, expected)
    assert {"dpo/loss", "dpo/rewards/chosen", "cpo/rewards/margins", "dpo#2/rewards/accuracies"} <= set(out.metrics)
    torch.testing.assert_close(out.metrics["cpo/loss"], get_loss("cpo")(X, alpha=0.0).losses)
    assert objective.needs_reference and objective.input_kind == "pair"


def test_single_component_metrics_unprefixed_and_weighted():
    out = build_loss(LossSpec("simpo", 2.0))(X)
    torch.testing.assert_close(out.losses, 2.0 * get_loss("simpo")(X).losses)
    assert "rewards/chosen" in out.metrics and "simpo/loss" not in out.metrics


def test_config_mapping_form():
    objective = build_loss([{"name": "ipo", "weight": 1, "params": {"tau": 0.5}}])
    torch.testing.assert_close(objective(X).losses, get_loss("ipo")(X, tau=0.5).losses)
    with pytest.raises(ValueError, match="'name'"):
        build_loss([{"loss": "dpo"}])


def test_a_single_mapping_is_one_spec():
    # LossSpec.parse reads the mapping; iterating it would have read its keys ('name', 'params') as loss names
    objective = build_loss({"name": "rpo", "params": {"eta": 0.5}})
    assert [(c.label, c.params) for c in objective.components] == [("rpo", {"eta": 0.5})]


def test_reference_free_composition_accepts_no_reference():
    objective = build_loss(["simpo", "orpo"])
    assert not objective.needs_reference
    x = pair([-10.0], [-12.0], lw=[4.0], ll=[2.0])
    assert torch.isfinite(objective(x).losses).all()


def test_reference_based_composition_refuses_missing_reference():
    with pytest.raises(ValueError, match="needs reference log-probs"):
        build_loss(["simpo", "dpo"])(pair([-10.0], [-12.0]))


def test_unknown_loss_lists_registered_names():
    with pytest.raises(ValueError, match=r"unknown loss 'dpoo'.*dpo.*simpo"):
        build_loss("dpoo")


def test_unknown_param_lists_allowed():
    with pytest.raises(ValueError, match=r"^loss 'dpo': unknown parameter\(s\) betta; valid: beta \(default 0.1\)"):
        build_loss(LossSpec("dpo", params={"betta": 0.1}))
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) state; valid: beta"):
        build_loss(LossSpec("bco_pair", params={"state": None}))


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("dpo", {"beta": "0.1"}, r"^loss 'dpo': beta: expected a number, got '0.1' \(str\)$"),
        ("ipo", {"length_normalize": 1}, "length_normalize: expected true or false, got 1"),
        ("dil", {"variant": "kl"}, "one of 'lsif', 'ukl', 'bce'"),
        ("kto", {"kl": "auto"}, "kl: expected a number"),
    ],
)
def test_mistyped_param(name, params, match):
    with pytest.raises(ValueError, match=match):
        build_loss(LossSpec(name, params=params))


def test_ints_accepted_for_floats_and_none_for_optional():
    loss = build_loss([LossSpec("dpo", 1, {"beta": 1}), LossSpec("bco_pair", params={"delta": None})])
    assert [(c.label, c.weight) for c in loss.components] == [("dpo", 1.0), ("bco_pair", 1.0)]
    assert loss.components[0].params["beta"] == 1.0


def test_bad_weight():
    with pytest.raises(ValueError, match="weight"):
        build_loss(LossSpec("dpo", float("nan")))


def test_mixing_pair_and_unpaired_refused():
    with pytest.raises(ValueError, match="cannot combine pair and unpaired"):
        build_loss(["dpo", "kto"])


def test_unpaired_data_to_paired_loss_refused():
    data = unpaired([-5.0], [-6.0], [True], kl=[-3.0], ref_kl=[-3.0])
    with pytest.raises(ValueError, match="unpaired data given to a pair loss"):
        build_loss("dpo")(data)
    assert build_loss("kto")(data).losses.shape == (1,)


def test_empty_refused():
    with pytest.raises(ValueError, match="no loss given"):
        build_loss([])


# each loss's own parameter ranges, declared at its registration (docs/design.md, "Losses")
OUT_OF_RANGE = [
    ("cdpo", "epsilon", 0.7), ("robust", "epsilon", 0.5), ("exo_pair", "epsilon", 0.0), ("exo_pair", "epsilon", 1.0),
    ("exo_pair", "epsilon", 0.5), ("exo_pair", "epsilon", 0.9),
    ("aot", "epsilon", 0.9), ("aot_unpaired", "epsilon", -0.1), ("cpo", "alpha", -1.0), ("rpo", "eta", -1.0),
    ("orpo", "lam", -0.1), ("kto", "desirable_weight", -1.0), ("kto", "undesirable_weight", -1.0),
    ("kto", "kl", -0.5), ("safedpo", "delta", -2.0), ("constrained_sft", "bias_length", 0),
    ("constrained_sft", "first_token_factor", 0.0), ("constrained_sft", "bias_factor", -1.0),
    ("ipo", "tau", 0.0), ("sppo_hard", "beta", 0.0),
]


@pytest.mark.parametrize("name, key, value", OUT_OF_RANGE)
def test_out_of_range_param_is_refused_before_the_loss_runs(name, key, value):
    with pytest.raises(UserError, match=rf"loss '{name}' parameter '{key}' must be .*got {value}"):
        validate_params(name, {key: value})


@pytest.mark.parametrize("name, params", [
    ("cdpo", {"epsilon": 0.5}), ("robust", {"epsilon": 0.0}), ("exo_pair", {"epsilon": 0.4}), ("aot", {"epsilon": 0.5}),
    ("cpo", {"alpha": 0.0}), ("rpo", {"eta": 0.0}), ("orpo", {"lam": 0.0}), ("kto", {"kl": None}), ("kto", {"kl": 0.0}),
    ("safedpo", {"delta": 0.0}), ("constrained_sft", {"bias_length": 1}),
])
def test_in_range_boundaries_are_accepted(name, params):
    assert validate_params(name, params) == params


def test_out_of_range_param_fails_on_a_direct_call_too():
    with pytest.raises(UserError, match="loss 'robust' parameter 'epsilon' must be in \\[0, 0.5\\)"):
        get_loss("robust")(X, epsilon=0.5)


def test_train_run_refuses_an_out_of_range_param_before_the_model_loads(tmp_path, no_model_load):
    from safealign.train.config import DataConfig, LossConfig, TrainConfig
    from safealign.train.run import run_training

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": "Yes.", "rejected": "No."}) + "\n"
                            for i in range(4)))
    config = TrainConfig(model="tiny-random", output_dir=str(tmp_path / "run"), data=DataConfig(path=str(data)),
                         losses=[LossConfig("cdpo", params={"epsilon": 0.7})])
    with pytest.raises(UserError, match="loss 'cdpo' parameter 'epsilon'"):
        run_training(config)


def test_demo_refuses_an_out_of_range_param_before_the_model_loads(tmp_path, no_model_load):
    from safealign.pipelines.demo import run_demo
    from safealign.pipelines.demo_config import load_demo_config

    config = load_demo_config([f"output_dir={tmp_path / 'demo'}", "model=tiny-random", "nll_weight=-1"])
    with pytest.raises(UserError, match="loss 'rpo' parameter 'eta'"):
        run_demo(config)


def test_info_and_params():
    info = loss_info("dpo")
    assert info.needs_reference and info.input == "pair" and "2305.18290" in info.paper
    assert loss_params("bco_pair") == {"beta": 0.1, "delta": None}  # `state` is not user-facing
    assert loss_info("kto").input == "unpaired"


def test_register_loss_rejects_bad_signatures():
    with pytest.raises(TypeError, match="keyword-only"):
        register_loss("_bad", needs_reference=False, paper="-")(lambda x, beta=0.1: None)
    assert "_bad" not in LOSSES


def test_repr_names_components():
    assert repr(build_loss([LossSpec("dpo", 0.5, {"beta": 0.2})])) == "ComposedLoss(0.5*dpo(beta=0.2))"
    assert isinstance(build_loss("dpo"), ComposedLoss)
