"""Weighted composition, lookup and up-front parameter validation."""

from __future__ import annotations

import pytest
import torch
from loss_helpers import pair, unpaired

from safealign.losses import ComposedLoss, LossSpec, build_loss, get_loss, loss_info, loss_params, register_loss
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
    with pytest.raises(ValueError, match=r"'dpo' has no parameter 'betta'; allowed: beta \(default 0.1\)"):
        build_loss(LossSpec("dpo", params={"betta": 0.1}))
    with pytest.raises(ValueError, match="no parameter 'state'"):
        build_loss(LossSpec("bco_pair", params={"state": None}))


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("dpo", {"beta": "0.1"}, "must be float"),
        ("ipo", {"length_normalize": 1}, "must be bool"),
        ("dil", {"variant": "kl"}, "one of 'lsif', 'ukl', 'bce'"),
        ("kto", {"kl": "auto"}, "must be"),
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


def test_out_of_range_param_fails_on_call():
    with pytest.raises(ValueError, match="epsilon must be in"):
        build_loss(LossSpec("robust", params={"epsilon": 0.5}))(X)


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
