"""Gradient entanglement against a brute-force computation (naive log-softmax, full flattening)."""

from __future__ import annotations

import math

import pytest
import torch

from safealign.train.grads import (
    PairEntanglement,
    measure_entanglement,
    select_parameters,
    summarize_entanglement,
)
from safealign.errors import UserError

from diag_helpers import naive_logps


def _flat_grad(value, params):
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1).double() for g, p in zip(grads, params)]
    )


def brute_force(model, item, names):
    """(dot, ‖g_w‖, ‖g_l‖) with every selected gradient flattened into one vector."""
    named = dict(model.named_parameters())
    params = [named[n] for n in names]
    for p in params:
        p.requires_grad_(True)
    g_w = _flat_grad(naive_logps(model, item.prompt_ids, item.chosen_ids), params)
    g_l = _flat_grad(naive_logps(model, item.prompt_ids, item.rejected_ids), params)
    return float(g_w @ g_l), float(g_w.norm()), float(g_l.norm())


def _check_against_brute_force(model, encoded, collate, spec, names):
    report = measure_entanglement(model, encoded, collate, params=spec, progress=False)
    frozen = {n: p.requires_grad for n, p in model.named_parameters()}
    assert report.parameter_count == sum(dict(model.named_parameters())[n].numel() for n in names)
    for item, got in zip(encoded, report.pairs):
        dot, nw, nl = brute_force(model, item, names)
        assert got.index == item.index
        assert got.chosen_norm == pytest.approx(nw, rel=1e-4)
        assert got.rejected_norm == pytest.approx(nl, rel=1e-4)
        assert got.dot == pytest.approx(dot, abs=1e-4 * nw * nl)
        assert got.cosine == pytest.approx(dot / (nw * nl), abs=1e-4)
        assert got.ratio == pytest.approx(dot / min(nw, nl) ** 2, abs=1e-4 * max(nw, nl) / min(nw, nl))
        assert got.chosen_rises == (dot <= nw**2) and got.rejected_falls == (dot <= nl**2)
    return report, frozen


@pytest.mark.parametrize("spec", ["all", "lm_head", "last:1"])
def test_entanglement_matches_brute_force(tiny_model, encode, collate, pairs, spec):
    encoded = encode(pairs)
    all_names = [n for n, _ in tiny_model.named_parameters()]
    names = {
        "all": all_names,
        "lm_head": ["lm_head.weight"],
        "last:1": [n for n in all_names if n.startswith("model.layers.1.")],
    }[spec]
    assert [n for n, _ in select_parameters(tiny_model, spec)] == names
    report, _ = _check_against_brute_force(tiny_model, encoded, collate, spec, names)
    assert report.params == spec


def test_lora_selection_matches_brute_force_and_restores_flags(encode, collate, pairs):
    from safealign.models import LoraSettings, apply_lora
    from safealign.models.tiny import tiny_model

    model = apply_lora(tiny_model(), LoraSettings(r=2, alpha=4, dropout=0.0))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # zero-initialised B would make every A-gradient zero
            torch.nn.init.normal_(p, std=0.05)
    model.train()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    names = [n for n, _ in model.named_parameters() if "lora_" in n]
    report = measure_entanglement(model, encode(pairs), collate, params="auto", progress=False)
    assert report.params == "lora" and model.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    model.eval()
    _check_against_brute_force(model, encode(pairs), collate, "lora", names)


def test_frozen_parameters_are_measured_and_left_frozen(tiny_model, encode, collate, pairs):
    tiny_model.requires_grad_(False)
    report = measure_entanglement(tiny_model, encode(pairs)[:1], collate, params="lm_head", progress=False)
    assert report.pairs[0].chosen_norm > 0
    assert not any(p.requires_grad for p in tiny_model.parameters())
    with pytest.raises(UserError, match="matches no parameters"):
        select_parameters(tiny_model, "trainable")


def test_selection_errors(tiny_model):
    with pytest.raises(UserError, match="valid choices: auto, all, trainable, lora, lm_head, last:N"):
        select_parameters(tiny_model, "head")
    with pytest.raises(UserError, match="more blocks than the model has \\(2\\)"):
        select_parameters(tiny_model, "last:3")
    with pytest.raises(UserError, match="positive integer"):
        select_parameters(tiny_model, "last:0")
    with pytest.raises(UserError, match="no parameters"):
        select_parameters(tiny_model, "lora")


def test_conditions_and_weighted_form_hand_computed():
    # ‖g_w‖ = 2, ‖g_l‖ = 1, ⟨g_w,g_l⟩ = 1.5: cos = 0.75, ratio = 1.5 / min(4, 1) = 1.5
    p = PairEntanglement(index=0, dot=1.5, chosen_norm=2.0, rejected_norm=1.0, chosen_logps=-3.0, rejected_logps=-4.0)
    assert (p.cosine, p.ratio, p.chosen_rises, p.rejected_falls) == (0.75, 1.5, True, False)
    # a = b: chosen change 4 − 1.5 = 2.5 > 0; rejected change 1.5 − 1 = 0.5 > 0 (rises: the wrong way)
    assert p.weighted(1.0, 1.0) == {
        "chosen_change": 2.5,
        "rejected_change": 0.5,
        "chosen_rises": True,
        "rejected_falls": False,
    }
    # a=1, b=4: chosen 4 − 6 = −2 (falls, 1.5 ≥ (1/4)·4); rejected 1.5 − 4 = −2.5 (falls, 1.5 < 4·1)
    assert p.weighted(1.0, 4.0) == {
        "chosen_change": -2.0,
        "rejected_change": -2.5,
        "chosen_rises": False,
        "rejected_falls": True,
    }


def test_summary_hand_computed():
    pairs = [
        PairEntanglement(
            0, dot=1.5, chosen_norm=2.0, rejected_norm=1.0, chosen_logps=0.0, rejected_logps=0.0
        ),  # ratio 1.5
        PairEntanglement(
            1, dot=-1.0, chosen_norm=1.0, rejected_norm=1.0, chosen_logps=0.0, rejected_logps=0.0
        ),  # ratio −1
        PairEntanglement(
            2, dot=0.0, chosen_norm=0.0, rejected_norm=3.0, chosen_logps=0.0, rejected_logps=0.0
        ),  # ratio NaN
    ]
    s = summarize_entanglement(pairs)
    assert s["pairs"] == 3
    assert s["dot"] == {"mean": pytest.approx(1 / 6), "median": 0.0}
    assert s["ratio"] == {"mean": 0.25, "median": 0.25}  # NaN skipped
    assert s["cosine"] == {"mean": pytest.approx((0.75 - 1.0) / 2), "median": pytest.approx(-0.125)}
    # chosen falls when dot > ‖g_w‖²: none (1.5 ≤ 4, −1 ≤ 1, 0 ≤ 0); rejected rises: pair 0 only
    assert (s["share_chosen_falls"], s["share_rejected_rises"], s["share_ratio_above_1"]) == (0.0, 1 / 3, 1 / 3)
    assert math.isnan(pairs[2].ratio) and pairs[2].as_dict()["ratio"] is None


def test_no_change_counts_the_same_way_weighted_and_unweighted():
    """Ties (an empty chosen response: g_w = 0; g_w = g_l) move nothing to first order: neither rule counts them as
    moving the wrong way (the weighted form counted them as falling: 0.0 vs 1.0), and the summary counts them."""
    empty = PairEntanglement(0, dot=0.0, chosen_norm=0.0, rejected_norm=3.0, chosen_logps=0.0, rejected_logps=0.0)
    same = PairEntanglement(1, dot=4.0, chosen_norm=2.0, rejected_norm=2.0, chosen_logps=0.0, rejected_logps=0.0)
    for p in (empty, same):
        w = p.weighted(1.0, 1.0)
        assert (w["chosen_rises"], w["rejected_falls"]) == (p.chosen_rises, p.rejected_falls)
        row = p.as_dict()
        assert (row["chosen_rises"], row["rejected_falls"]) == (row["weighted_chosen_rises"],
                                                                row["weighted_rejected_falls"])
    s = summarize_entanglement([empty, same])
    assert s["share_chosen_falls"] == s["share_chosen_falls_weighted"] == 0.0
    assert s["share_rejected_rises"] == s["share_rejected_rises_weighted"] == 0.0
    assert (s["chosen_unchanged"], s["rejected_unchanged"]) == (2, 1)
    assert (s["chosen_unchanged_weighted"], s["rejected_unchanged_weighted"]) == (2, 1)
    # a ≠ b: g_w = g_l now moves both (chosen (1 − 2)·4 < 0: falls; rejected (1 − 2)·4 < 0: falls), g_w = 0 not chosen
    s = summarize_entanglement([empty, same], weights=(1.0, 2.0))
    assert (s["chosen_unchanged_weighted"], s["rejected_unchanged_weighted"]) == (1, 0)
    assert s["share_chosen_falls_weighted"] == 0.5 and s["share_rejected_rises_weighted"] == 0.0
