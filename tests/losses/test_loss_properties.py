"""Properties the formulas must satisfy, checked on random batches and with autograd."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from safealign.losses import get_loss
from safealign.types import PairLogps


def random_pair(seed: int = 0, b: int = 6, **overrides) -> PairLogps:
    g = torch.Generator().manual_seed(seed)
    fields = dict(
        chosen=-torch.rand(b, generator=g, dtype=torch.float64) * 20 - 1,
        rejected=-torch.rand(b, generator=g, dtype=torch.float64) * 20 - 1,
        chosen_tokens=torch.randint(1, 30, (b,), generator=g).double(),
        rejected_tokens=torch.randint(1, 30, (b,), generator=g).double(),
        ref_chosen=-torch.rand(b, generator=g, dtype=torch.float64) * 20 - 1,
        ref_rejected=-torch.rand(b, generator=g, dtype=torch.float64) * 20 - 1,
    )
    fields.update(overrides)
    return PairLogps(**fields)


def with_log_ratios(cl: torch.Tensor, rl: torch.Tensor, **kw) -> PairLogps:
    """A pair whose log-ratios are exactly cl and rl (reference fixed at −5)."""
    ref = torch.full_like(cl, -5.0)
    ones = torch.ones_like(cl)
    kw.setdefault("chosen_tokens", ones)
    kw.setdefault("rejected_tokens", ones)
    return PairLogps(chosen=ref + cl, rejected=ref + rl, ref_chosen=ref, ref_rejected=ref, **kw)


def test_dpo_at_zero_margin_is_log2():
    x = random_pair()
    # same log-ratio on both sides: Δ = 0
    x = PairLogps(x.chosen, x.chosen - 3, x.chosen_tokens, x.rejected_tokens, x.ref_chosen, x.ref_chosen - 3)
    torch.testing.assert_close(get_loss("dpo")(x, beta=0.37).losses, torch.full((6,), math.log(2), dtype=torch.float64))


@pytest.mark.parametrize("name", ["cdpo", "robust"])
def test_smoothing_zero_is_dpo(name):
    x = random_pair(1)
    torch.testing.assert_close(get_loss(name)(x, beta=0.2, epsilon=0.0).losses, get_loss("dpo")(x, beta=0.2).losses)


def test_cdpo_and_robust_differ_for_positive_epsilon():
    # cdpo adds ε·logσ(−βΔ) penalties (bounded below); robust subtracts them and rescales (unbiased)
    x = random_pair(2)
    assert not torch.allclose(get_loss("cdpo")(x, epsilon=0.2).losses, get_loss("robust")(x, epsilon=0.2).losses)


def test_jpo_is_dpo_arithmetic():
    x = random_pair(3)
    torch.testing.assert_close(get_loss("jpo")(x, beta=0.3).losses, get_loss("dpo")(x, beta=0.3).losses)


def test_ipo_minimised_at_half_inverse_tau():
    tau = 0.25  # target averaged margin 1/(2τ) = 2
    lw, ll = torch.tensor([4.0, 3.0], dtype=torch.float64), torch.tensor([2.0, 5.0], dtype=torch.float64)
    rl = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    cl = (rl / ll + 2.0) * lw  # cl/Lw − rl/Ll = 2 exactly
    cl.requires_grad_(True)
    out = get_loss("ipo")(with_log_ratios(cl, rl, chosen_tokens=lw, rejected_tokens=ll), tau=tau)
    torch.testing.assert_close(out.losses, torch.zeros(2, dtype=torch.float64))
    (grad,) = torch.autograd.grad(out.losses.sum(), cl)
    torch.testing.assert_close(grad, torch.zeros(2, dtype=torch.float64))
    for shift in (-0.1, 0.1):  # moving the margin either way raises the loss
        moved = get_loss("ipo")(with_log_ratios(cl.detach() + shift, rl, chosen_tokens=lw, rejected_tokens=ll), tau=tau)
        assert (moved.losses > 0).all()


def test_hinge_zero_beyond_margin_inverse_beta():
    beta = 0.5  # margin 1/β = 2
    delta = torch.tensor([2.0, 2.5, 10.0, 1.9], dtype=torch.float64, requires_grad=True)
    out = get_loss("hinge")(with_log_ratios(delta, torch.zeros(4, dtype=torch.float64)), beta=beta)
    # relu(1 − 0.5·Δ) = [0, 0, 0, 0.05]
    torch.testing.assert_close(out.losses, torch.tensor([0.0, 0.0, 0.0, 0.05], dtype=torch.float64))
    (grad,) = torch.autograd.grad(out.losses.sum(), delta)
    assert grad[1:3].abs().max() == 0 and grad[3] == pytest.approx(-0.5)


def test_sppo_hard_minimum():
    beta = 0.2  # targets cl = 1/(2β) = 2.5, rl = −2.5
    cl = torch.tensor([2.5], dtype=torch.float64, requires_grad=True)
    rl = torch.tensor([-2.5], dtype=torch.float64, requires_grad=True)
    out = get_loss("sppo_hard")(with_log_ratios(cl, rl), beta=beta)
    assert out.losses.item() == 0.0
    grads = torch.autograd.grad(out.losses.sum(), (cl, rl))
    assert all(g.item() == 0.0 for g in grads)
    # (2.6 − 2.5)² + (−2.3 + 2.5)² = 0.01 + 0.04
    assert get_loss("sppo_hard")(with_log_ratios(cl + 0.1, rl + 0.2), beta=beta).losses.item() == pytest.approx(0.05)


def test_simpo_gamma_zero_symmetric():
    x = random_pair(4)
    swapped = PairLogps(x.rejected, x.chosen, x.rejected_tokens, x.chosen_tokens)
    p = torch.exp(-get_loss("simpo")(x, gamma=0.0).losses)  # P(chosen ≻ rejected)
    q = torch.exp(-get_loss("simpo")(swapped, gamma=0.0).losses)  # P(rejected ≻ chosen)
    torch.testing.assert_close(p + q, torch.ones(6, dtype=torch.float64))
    # a positive margin γ breaks the symmetry: both directions are penalised
    p = torch.exp(-get_loss("simpo")(x, gamma=1.0).losses)
    q = torch.exp(-get_loss("simpo")(swapped, gamma=1.0).losses)
    assert ((p + q) < 1).all()


def test_simpo_equal_averages_log2():
    x = PairLogps(*(torch.tensor([-8.0, -3.0]),) * 2, torch.tensor([4.0, 3.0]), torch.tensor([4.0, 3.0]))
    torch.testing.assert_close(get_loss("simpo")(x, gamma=0.0).losses, torch.full((2,), math.log(2)))


def test_apo_zero_raises_chosen_lowers_rejected_apo_down_lowers_both():
    cl = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    rl = torch.tensor([-0.2], dtype=torch.float64, requires_grad=True)
    gz = torch.autograd.grad(get_loss("apo_zero")(with_log_ratios(cl, rl)).losses.sum(), (cl, rl))
    assert gz[0].item() < 0 < gz[1].item()  # descent raises cl, lowers rl
    gd = torch.autograd.grad(get_loss("apo_down")(with_log_ratios(cl, rl)).losses.sum(), (cl, rl))
    assert gd[0].item() > 0 and gd[1].item() > 0  # descent lowers both


def test_nca_depends_on_absolute_ratios_not_only_margin():
    a = get_loss("nca_pair")(with_log_ratios(torch.tensor([1.0]), torch.tensor([0.0]))).losses
    b = get_loss("nca_pair")(with_log_ratios(torch.tensor([3.0]), torch.tensor([2.0]))).losses
    d = get_loss("dpo")(with_log_ratios(torch.tensor([1.0]), torch.tensor([0.0]))).losses
    e = get_loss("dpo")(with_log_ratios(torch.tensor([3.0]), torch.tensor([2.0]))).losses
    torch.testing.assert_close(d, e)
    assert not torch.allclose(a, b)


def test_discopop_limits():
    # τ → small: m ≈ 1 for z > 0 (exponential loss e^{−z}), m ≈ 0 for z < 0 (logistic loss)
    x = with_log_ratios(torch.tensor([20.0, -20.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    out = get_loss("discopop")(x, beta=0.05, tau=1e-3).losses
    torch.testing.assert_close(out, torch.tensor([math.exp(-1.0), math.log1p(math.e)], dtype=torch.float64))


def test_discopop_is_finite_for_a_very_negative_margin():
    # βΔ = −100: e^{−z}·σ(z/τ) was inf·0 = NaN in float32; the loss is ≈ −logσ(−100) = 100
    x = with_log_ratios(torch.tensor([-2000.0]), torch.zeros(1))
    out = get_loss("discopop")(x, beta=0.05, tau=0.05).losses
    torch.testing.assert_close(out, torch.tensor([100.0]))


def test_orpo_log_odds_stable_near_zero():
    x = PairLogps(torch.tensor([-1e-7]), torch.tensor([-1.0]), torch.ones(1), torch.ones(1))
    assert torch.isfinite(get_loss("orpo")(x).losses).all()


def test_orpo_gradient_is_finite_when_a_response_is_certain():
    # p̄c = 0 (p = 1) made the log-odds infinite: a finite loss (−0.0) with a NaN gradient
    chosen = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    x = PairLogps(chosen, torch.tensor([-1.0], dtype=torch.float64), torch.ones(1), torch.ones(1))
    out = get_loss("orpo")(x)
    (grad,) = torch.autograd.grad(out.losses.sum(), chosen)
    assert torch.isfinite(out.losses).all() and torch.isfinite(grad).all()
    assert all(torch.isfinite(v).all() for v in out.metrics.values())


def test_orpo_values_on_ordinary_inputs_are_the_formulas():
    x = random_pair(7, b=8)
    pc, pr = x.chosen / x.chosen_tokens, x.rejected / x.rejected_tokens
    log_odds = lambda a: a - torch.log1p(-torch.exp(a))  # noqa: E731
    expected = -pc - 0.3 * torch.nn.functional.logsigmoid(log_odds(pc) - log_odds(pr))
    torch.testing.assert_close(get_loss("orpo")(x, lam=0.3).losses, expected)


def test_training_ranking_accuracy_counts_ties_as_correct():
    from safealign.diagnostics.ranking import ranked_correctly
    from safealign.train.metrics import pair_stats

    # row 0 ties on both the summed and the per-token log-probs; the paper (and ranked_correctly) counts it correct
    x = PairLogps(torch.tensor([-4.0, -3.0, -5.0]), torch.tensor([-4.0, -6.0, -2.0]), torch.tensor([2.0, 1.0, 1.0]),
                  torch.tensor([2.0, 3.0, 1.0]))
    stats = pair_stats(x, {})
    total, count = stats["ranking_accuracy"]
    assert ranked_correctly(x.chosen, x.rejected).tolist() == [True, True, False]
    assert total.item() / count.item() == pytest.approx(2 / 3)
    total, count = stats["ranking_accuracy/normalized"]  # per token: -2 ≥ -2, -3 < -2, -5 < -2
    assert total.item() / count.item() == pytest.approx(1 / 3)


def test_aot_mean_invariant_to_row_permutation():
    x = random_pair(5, b=8)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    y = PairLogps(
        *(
            getattr(x, f)[perm]
            for f in ("chosen", "rejected", "chosen_tokens", "rejected_tokens", "ref_chosen", "ref_rejected")
        )
    )
    for name in ("aot", "aot_unpaired"):
        torch.testing.assert_close(get_loss(name)(x).losses, get_loss(name)(y).losses)


def test_dil_variants_reward_chosen_ratio_up():
    cl = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    rl = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
    for variant in ("lsif", "ukl", "bce"):
        g = torch.autograd.grad(get_loss("dil")(with_log_ratios(cl, rl), variant=variant).losses.sum(), (cl, rl))
        assert g[0].item() < 0 < g[1].item(), variant


def test_poft_ignores_rejected_and_needs_scores():
    x = random_pair(6)
    scores = torch.full((6, 3), -1.0, dtype=torch.float64)
    a = get_loss("poft")(PairLogps(x.chosen, x.rejected, x.chosen_tokens, x.rejected_tokens, chosen_scores=scores))
    b = get_loss("poft")(PairLogps(x.chosen, x.rejected * 2, x.chosen_tokens, x.rejected_tokens, chosen_scores=scores))
    torch.testing.assert_close(a.losses, b.losses)
    with pytest.raises(ValueError, match="chosen_scores"):
        get_loss("poft")(x)


def test_exo_target_smoothing_of_one_half_or_more_drops_or_reverses_the_preference():
    """EXO's target is (1 − ε, ε) over (chosen, rejected): at ε = ½ it is uniform (the loss pulls the margin to 0,
    no preference) and above ½ it prefers the rejected response, so ε ≥ ½ is refused like cdpo's flip rate > ½."""
    from safealign.errors import UserError

    exo = inspect.unwrap(get_loss("exo_pair"))  # the formula itself, without the range check
    slopes = {}
    for eps in (1e-3, 0.5, 0.9):
        x = with_log_ratios(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
        chosen = x.chosen.clone().requires_grad_(True)
        x = PairLogps(chosen, x.rejected, x.chosen_tokens, x.rejected_tokens, x.ref_chosen, x.ref_rejected)
        (slopes[eps],) = torch.autograd.grad(exo(x, beta=1.0, epsilon=eps).losses.sum(), chosen)
    assert float(slopes[1e-3]) < 0  # descent raises the chosen log-prob
    assert float(slopes[0.5]) == pytest.approx(0.0, abs=1e-12)  # uniform target: no signal at margin 0
    assert float(slopes[0.9]) > 0  # descent lowers the chosen one: the labels are reversed
    for eps in (0.5, 0.9):
        with pytest.raises(UserError, match=r"loss 'exo_pair' parameter 'epsilon' must be in \(0, 0.5\)"):
            get_loss("exo_pair")(x, epsilon=eps)
