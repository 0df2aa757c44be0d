"""Golden values on a hand batch, with the arithmetic written out.

Hand pair: pc = −10, pr = −12, rc = −11, rr = −11, Lw = 4, Ll = 2
  ⇒ cl = pc − rc = 1, rl = pr − rr = −1, Δ = cl − rl = 2;  β = 0.1 ⇒ βΔ = 0.2, βcl = 0.1, βrl = −0.1.
softplus(u) = log(1 + e^u) and −logσ(z) = softplus(−z).
"""

from __future__ import annotations

import math

import pytest
import torch
from loss_helpers import pair, unpaired

from safealign.losses import build_loss, get_loss

HAND = dict(pc=[-10.0], pr=[-12.0], rc=[-11.0], rr=[-11.0], lw=[4.0], ll=[2.0])


def loss(name: str, x=None, **params) -> float:
    out = get_loss(name)(x if x is not None else pair(**HAND), **params)
    return out.losses.item()


@pytest.mark.parametrize(
    "name, params, expected",
    [
        # −logσ(0.2) = log(1 + e^−0.2) = log(1.818730753) = 0.598138869
        ("dpo", {}, 0.5981388693815918),
        ("jpo", {}, 0.5981388693815918),
        # 0.9·softplus(−0.2) + 0.1·softplus(0.2) = 0.9·0.598138869 + 0.1·0.798138869 = 0.618138869
        ("cdpo", {"epsilon": 0.1}, 0.6181388693815918),
        # (0.9·0.598138869 − 0.1·0.798138869) / 0.8 = (0.538324982 − 0.079813887) / 0.8 = 0.573138869
        ("robust", {"epsilon": 0.1}, 0.5731388693815918),
        # relu(1 − 0.2) = 0.8
        ("hinge", {}, 0.8),
        # averaged: cl/Lw − rl/Ll = 1/4 + 1/2 = 0.75; 1/(2τ) = 5; (0.75 − 5)² = 18.0625
        ("ipo", {"tau": 0.1}, 18.0625),
        # summed: (2 − 5)² = 9
        ("ipo", {"tau": 0.1, "length_normalize": False}, 9.0),
        # (cl − 5)² + (rl + 5)² = 16 + 16 = 32
        ("sppo_hard", {}, 32.0),
        # σ(0.2)(logσ(0.2) − log(0.999)) + σ(−0.2)(logσ(−0.2) − log(0.001))
        # = 0.549834·(−0.598139 + 0.001001) + 0.450166·(−0.798139 + 6.907755) = 2.422015
        ("exo_pair", {"epsilon": 1e-3}, 2.4220146206616486),
        # −logσ(0.1) − ½logσ(−0.1) − ½logσ(0.1) = softplus(−0.1) + ½softplus(0.1) + ½softplus(−0.1)
        # = 0.644397 + 0.372198 + 0.322198 = 1.338793
        ("nca_pair", {}, 1.3387933201471418),
        # (1 − σ(0.1)) + σ(−0.1) = 0.475021 + 0.475021 = 0.950042
        ("apo_zero", {}, 0.95004162504212),
        # σ(0.1) + (1 − σ(0.2)) = 0.524979 + 0.450166 = 0.975145
        ("apo_down", {}, 0.9751451901664621),
        # β = 0.05 ⇒ z = 0.1, m = σ(0.1/0.05) = σ(2) = 0.880797;
        # softplus(−0.1)(1 − m) + e^−0.1·m = 0.644397·0.119203 + 0.904837·0.880797 = 0.873792
        ("discopop", {"beta": 0.05, "tau": 0.05}, 0.8737921186731876),
        # p̄c = −10/4 = −2.5, p̄r = −12/2 = −6; β(p̄c − p̄r) − γ = 2·3.5 − 0.5 = 6.5; softplus(−6.5) = 0.001502
        ("simpo", {"beta": 2.0, "gamma": 0.5}, 0.0015023101597542838),
        # −logσ(0.1·(−10 + 12)) + 1·(10/4) = 0.598139 + 2.5
        ("cpo", {"beta": 0.1, "alpha": 1.0}, 3.0981388693815917),
        # dpo + η·NLL = 0.598139 + 1·2.5
        ("rpo", {"beta": 0.1, "eta": 1.0}, 3.0981388693815917),
        # log-odds(p) = p − log(1 − e^p): lo(−2.5) = −2.414350, lo(−6) = −5.997518; diff = 3.583169
        # NLL + λ·softplus(−3.583169) = 2.5 + 0.1·0.027408 = 2.502741
        ("orpo", {"lam": 0.1}, 2.5027408442938954),
        # c̄ = cl/Lw = 0.25, r̄ = rl/Ll = −0.5
        # lsif: −e^0.25 + ½e^−1 = −1.284025 + 0.183940 = −1.100086
        ("dil", {"variant": "lsif"}, -1.1000856961020202),
        # ukl: −0.25 + e^−0.5 = −0.25 + 0.606531 = 0.356531
        ("dil", {"variant": "ukl"}, 0.3565306597126334),
        # bce: −logσ(0.25) − logσ(0.5) = softplus(−0.25) + softplus(−0.5) = 0.575939 + 0.474077 = 1.050016
        ("dil", {"variant": "bce"}, 1.0500164040589501),
    ],
)
def test_golden_pair(name, params, expected):
    assert loss(name, **params) == pytest.approx(expected, abs=1e-9)


def test_golden_bco_pair():
    # rewards 0.1 and −0.1; stateless δ = batch mean of [0.1, −0.1] = 0
    # −logσ(0.1 − 0) − logσ(−(−0.1 − 0)) = 2·softplus(−0.1) = 2·0.644397 = 1.288793
    assert loss("bco_pair") == pytest.approx(1.2887933201471418, abs=1e-12)
    # fixed δ = 0.05: −logσ(0.05) − logσ(0.15) = softplus(−0.05) + softplus(−0.15) = 0.668460 + 0.620957 = 1.289417
    assert loss("bco_pair", delta=0.05) == pytest.approx(1.2894166958028184, abs=1e-12)


def test_golden_poft():
    # p̄c = −10/4 = −2.5; mean aligned score = (−3 − 2.8)/2 = −2.9; gap 0.4; softplus(−0.4) = 0.513015
    x = pair(**HAND, scores=[[-3.0, -2.8]])
    assert loss("poft", x) == pytest.approx(0.5130152523999526, abs=1e-9)


def test_golden_kto():
    # r = logps − ref = [−5 + 6, −7 + 6] = [1, −1]; KL terms [−3 + 3.5, −3 + 3.3] = [0.5, 0.3] ⇒ z = 0.4
    x = unpaired([-5.0, -7.0], [-6.0, -6.0], [True, False], kl=[-3.0, -3.0], ref_kl=[-3.5, -3.3])
    out = get_loss("kto")(x, beta=0.1, desirable_weight=1.0, undesirable_weight=2.0)
    # desirable: 1 − σ(0.1·(1 − 0.4)) = 1 − σ(0.06) = 0.485005
    # undesirable: 2·(1 − σ(0.1·(0.4 − (−1)))) = 2·(1 − σ(0.14)) = 2·0.465057 = 0.930114
    assert out.losses.tolist() == pytest.approx([0.48500449838059, 0.930114109683571], abs=1e-9)
    assert out.metrics["kto/kl"].item() == pytest.approx(0.4)
    assert out.metrics["rewards/margins"].item() == pytest.approx(0.2)


def test_kto_kl_clamped_and_explicit():
    # mean KL term = −0.5 < 0 ⇒ z = 0: desirable 1 − σ(0.1) = 0.475021
    x = unpaired([-5.0], [-6.0], [True], kl=[-4.0], ref_kl=[-3.5])
    assert get_loss("kto")(x).losses.item() == pytest.approx(1 - 1 / (1 + math.exp(-0.1)))
    # explicit kl overrides the estimate: 1 − σ(0.1·(1 − 2)) = 1 − σ(−0.1) = 0.524979
    assert get_loss("kto")(x, kl=2.0).losses.item() == pytest.approx(0.52497918747894)
    with pytest.raises(ValueError, match="kl_logps"):
        get_loss("kto")(unpaired([-5.0], [-6.0], [True]))


def test_kto_pools_kl_columns_of_any_length_gathered_over_processes():
    """Under data parallelism the trainer passes the KL columns of every process: more than the batch's rows."""
    x = unpaired([-5.0], [-6.0], [True], kl=[-3.0, -3.0, -3.0, -3.0], ref_kl=[-3.5, -3.3, -3.5, -3.3])
    assert get_loss("kto")(x).metrics["kto/kl"].item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="must score the same mismatched sequences"):
        get_loss("kto")(unpaired([-5.0], [-6.0], [True], kl=[-3.0, -3.0], ref_kl=[-3.5]))


def test_golden_bco_unpaired():
    # r = [1, 2, −1] ⇒ rewards 0.1·r = [0.1, 0.2, −0.1]; δ = 0.2/3 = 0.066667
    x = unpaired([-5.0, -4.0, -7.0], [-6.0, -6.0, -6.0], [True, True, False])
    out = get_loss("bco")(x)
    d = 0.2 / 3
    sp = lambda u: math.log1p(math.exp(u))  # noqa: E731
    # desirable −logσ(r − δ) = softplus(δ − r); undesirable −logσ(−(r − δ)) = softplus(r − δ)
    # = [softplus(−0.033333), softplus(−0.133333), softplus(−0.166667)] = [0.676619, 0.628701, 0.613282]
    assert out.losses.tolist() == pytest.approx([sp(d - 0.1), sp(d - 0.2), sp(-0.1 - d)], abs=1e-12)
    assert out.losses.tolist() == pytest.approx([0.6766194, 0.6287011, 0.6132821], abs=1e-6)
    assert out.metrics["bco/delta"].item() == pytest.approx(d)


def test_bco_running_mean_state_in_composition():
    # The composition owns a RunningMean: δ after batch 1 = mean[0.1, −0.1] = 0;
    # after batch 2 (rewards [0.3, 0.1]) = (0.1 − 0.1 + 0.3 + 0.1)/4 = 0.1.
    objective = build_loss("bco_pair")
    objective(pair([-10.0], [-12.0], [-11.0], [-11.0]))
    out = objective(pair([-8.0], [-10.0], [-11.0], [-11.0]))
    assert out.metrics["bco/delta"].item() == pytest.approx(0.1)
    # −logσ(0.3 − 0.1) − logσ(−(0.1 − 0.1)) = softplus(−0.2) + log 2
    assert out.losses.item() == pytest.approx(0.5981388693815918 + math.log(2))
    saved = objective.state_dict()
    assert saved == {"bco_pair": {"total": pytest.approx(0.4), "count": 4}}
    resumed = build_loss("bco_pair")
    resumed.load_state_dict(saved)
    assert resumed.states["bco_pair"].mean == pytest.approx(0.1)


def test_aot_is_cdpo_on_sorted_margins():
    # policy margins pc − pr = [1, 3, −2] → sorted [−2, 1, 3]; reference margins [0, 2, 1] → sorted [0, 1, 2]
    # δ = [−2, 0, 1]; with ε = 0: softplus(−βδ) = [softplus(0.2), log 2, softplus(−0.1)]
    x = pair([-1.0, -1.0, -4.0], [-2.0, -4.0, -2.0], [-3.0, -3.0, -3.0], [-3.0, -5.0, -4.0])
    sp = lambda u: math.log1p(math.exp(u))  # noqa: E731
    assert get_loss("aot")(x).losses.tolist() == pytest.approx([sp(0.2), math.log(2), sp(-0.1)], abs=1e-12)
    # aot_unpaired: cl = [2, 2, −1] → [−1, 2, 2]; rl = [1, 1, 2] → [1, 1, 2]; δ = [−2, 1, 0]
    assert get_loss("aot_unpaired")(x).losses.tolist() == pytest.approx([sp(0.2), sp(-0.1), math.log(2)], abs=1e-12)


def test_aot_batch_of_one_is_cdpo():
    x = pair(**HAND)
    assert loss("aot", x, epsilon=0.2) == pytest.approx(loss("cdpo", x, epsilon=0.2), abs=1e-12)


def test_metrics_are_rewards():
    out = get_loss("dpo")(pair(**HAND))
    assert out.metrics["rewards/chosen"].item() == pytest.approx(0.1)
    assert out.metrics["rewards/rejected"].item() == pytest.approx(-0.1)
    assert out.metrics["rewards/margins"].item() == pytest.approx(0.2)
    assert out.metrics["rewards/accuracies"].item() == 1.0
    assert torch.equal(
        get_loss("simpo")(pair(**HAND)).metrics["rewards/chosen"], torch.tensor([-5.0], dtype=torch.float64)
    )


def test_ipo_logs_tau_times_the_log_ratio_it_uses():
    """docs/trl-differences.md item 8: length-normalised IPO logs τ·cl/Lw = 0.1·1/4 (TRL logs β·cl = 0.1 at β = τ);
    the sequence-level form logs τ·cl, TRL's number."""
    metrics = get_loss("ipo")(pair(**HAND), tau=0.1).metrics
    assert metrics["rewards/chosen"].item() == pytest.approx(0.025)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.05)
    summed = get_loss("ipo")(pair(**HAND), tau=0.1, length_normalize=False).metrics
    assert summed["rewards/chosen"].item() == pytest.approx(0.1)
