"""Ranking accuracy, idealized ranking accuracy and difficulty against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from safealign.diagnostics.ranking import (
    difficulty,
    dpo_loss_threshold,
    fixed_by_model,
    idealized_correct,
    ranking_accuracy,
    ranking_report,
    rater_alpha,
)
from safealign.errors import UserError
from safealign.types import PairLogps


def _logps() -> PairLogps:
    # pair:          0      1      2      3
    # pc vs pr:    -10≥-12  -5<-4  -7=-7  -20<-8    → correct 1,0,1,0 → R = 0.5
    # per token:   -10/5=-2 ≥ -12/2=-6 ✓ ; -5/1=-5 < -4/4=-1 ✗ ; -7/7=-1 ≥ -7/1=-7 ✓ ; -20/10=-2 ≥ -8/2=-4 ✓ → 0.75
    # rc vs rr:    -11,-11  -6,-3   -9,-8   -30,-10
    return PairLogps(
        chosen=torch.tensor([-10.0, -5.0, -7.0, -20.0]),
        rejected=torch.tensor([-12.0, -4.0, -7.0, -8.0]),
        chosen_tokens=torch.tensor([5.0, 1.0, 7.0, 10.0]),
        rejected_tokens=torch.tensor([2.0, 4.0, 1.0, 2.0]),
        ref_chosen=torch.tensor([-11.0, -6.0, -9.0, -30.0]),
        ref_rejected=torch.tensor([-11.0, -3.0, -8.0, -10.0]),
    )


def test_ranking_accuracy_summed_and_normalized():
    assert ranking_accuracy(_logps()) == {"summed": 0.5, "normalized": 0.75}


def test_difficulty_and_threshold():
    x = _logps()
    # c = rr − rc = [-11+11, -3+6, -8+9, -10+30] = [0, 3, 1, 20]
    c = difficulty(x.ref_chosen, x.ref_rejected)
    assert c.tolist() == [0.0, 3.0, 1.0, 20.0]
    # softplus(−βc) with β = 0.5: softplus(0) = log 2, softplus(−1.5) = log(1 + e^−1.5), ...
    expected = [math.log(2), math.log1p(math.exp(-1.5)), math.log1p(math.exp(-0.5)), math.log1p(math.exp(-10))]
    assert dpo_loss_threshold(c, beta=0.5).tolist() == pytest.approx(expected, rel=1e-12)


def test_idealized_ranking_accuracy_hand_computed():
    x = _logps()
    # rc − rr = [0, −3, −1, −20]; β = 0.5, α = 0.9: shift = log(9)/0.5 = 4.394
    # → [4.39 > 0 ✓, 1.39 ✓, 3.39 ✓, −15.6 ✗] → R* = 0.75
    alpha = rater_alpha(4, 0.9, epsilon=0.01)
    assert idealized_correct(x.ref_chosen, x.ref_rejected, beta=0.5, alpha=alpha).tolist() == [True, True, True, False]
    # α = 0.6: shift = log(1.5)/0.5 = 0.811 → [✓, ✗, ✗, ✗] → 0.25
    alpha = rater_alpha(4, torch.tensor([0.6, 0.6, 0.6, 0.6]), epsilon=0.01)
    correct = idealized_correct(x.ref_chosen, x.ref_rejected, beta=0.5, alpha=alpha)
    assert correct.tolist() == [True, False, False, False]
    # α = 0.5: no shift; the strict ">" leaves the tie (pair 0) incorrect → all ✗
    alpha = rater_alpha(4, 0.5, epsilon=0.01)
    assert not idealized_correct(x.ref_chosen, x.ref_rejected, beta=0.5, alpha=alpha).any()


def test_rater_alpha_default_is_one_minus_epsilon_and_only_unanimity_is_replaced():
    assert rater_alpha(3, None, epsilon=0.1).tolist() == pytest.approx([0.9, 0.9, 0.9])
    assert rater_alpha(2, torch.tensor([0.0, 1.0]), epsilon=0.05).tolist() == pytest.approx([0.05, 0.95])
    # docs/algorithms.md (ranking accuracy): only α = 1 becomes 1 − ε; an agreement of 0.95 with ε 0.1 stays 0.95
    # (it was clipped to 0.9)
    assert rater_alpha(3, torch.tensor([0.95, 0.03, 0.5]), epsilon=0.1).tolist() == pytest.approx([0.95, 0.03, 0.5])
    with pytest.raises(UserError, match="rows \\[1\\]"):
        rater_alpha(2, torch.tensor([0.5, 1.5]))
    with pytest.raises(UserError, match="epsilon"):
        rater_alpha(2, None, epsilon=0.0)


def test_fixed_and_broken_counts():
    # reference correct (rc ≥ rr): [✓ (tie), ✗, ✗, ✗]; model correct: [✓, ✗, ✓, ✗]
    # misranked by reference: pairs 1, 2, 3 → fixed: pair 2 → 1/3; ranked: pair 0 → broken 0/1
    assert fixed_by_model(_logps()) == {
        "reference_misranked": 3, "fixed": 1, "fixed_share": pytest.approx(1 / 3),
        "reference_ranked": 1, "broken": 0, "broken_share": 0.0,
    }


def test_report_summary_and_pairs():
    x = _logps()
    report = ranking_report(x, beta=0.5, alpha=0.9, epsilon=0.01)
    summary = report.summary()
    assert summary["ranking_accuracy"] == {"summed": 0.5, "normalized": 0.75}
    # reference: rc ≥ rr on pair 0 only; per token rc/5 … : -2.2≥-5.5 ✓, -6<-0.75 ✗, -9/7≥-8 ✓, -3≥-5 ✓
    assert summary["reference_ranking_accuracy"] == {"summed": 0.25, "normalized": 0.75}
    assert summary["idealized_ranking_accuracy"] == 0.75
    assert summary["difficulty"]["mean"] == 6.0 and summary["difficulty"]["share_positive"] == 0.75
    assert summary["difficulty"]["median"] == 2.0  # c = [0, 3, 1, 20]: the mean of the middle two, not the lower
    # DPO loss = softplus(−β[(pc − rc) − (pr − rr)]); margins: [1+1, 1−(−1), 2−1, 10−2] = [2, 2, 1, 8]
    losses = [math.log1p(math.exp(-0.5 * m)) for m in (2, 2, 1, 8)]
    assert summary["dpo_loss_mean"] == pytest.approx(sum(losses) / 4, rel=1e-6)
    rows = report.pairs()
    assert [r["correct"] for r in rows] == [True, False, True, False]
    # correct iff DPO loss ≤ softplus(−βc) (the paper's identity), pair by pair
    assert [r["dpo_loss"] <= r["dpo_loss_threshold"] + 1e-7 for r in rows] == [r["correct"] for r in rows]


def test_report_without_reference_has_only_accuracy():
    x = _logps()
    plain = PairLogps(x.chosen, x.rejected, x.chosen_tokens, x.rejected_tokens)
    summary = ranking_report(plain).summary()
    assert set(summary) == {"pairs", "beta", "epsilon", "ranking_accuracy"}
    assert "difficulty" not in ranking_report(plain).pairs()[0]
