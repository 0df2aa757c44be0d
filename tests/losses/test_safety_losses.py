"""safedpo, sft and constrained_sft against values derived by hand (docs/safety-training.md)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from safealign.errors import UserError
from safealign.losses import get_loss
from safealign.losses.safety import beta_schedule
from safealign.types import TokenLogps
from tests.losses.loss_helpers import pair, t


def _logsig(z: float) -> float:
    return -math.log1p(math.exp(-z))


def test_safedpo_adds_the_offset_only_on_safe_versus_unsafe_pairs():
    # row 0: safe vs unsafe; row 1: both safe. Log-ratio margins: (−1 − −2) − (−3 − −2) = 2; (−2 − −1) − 0 = −1.
    x = dataclasses.replace(pair([-1.0, -2.0], [-3.0, -5.0], [-2.0, -1.0], [-2.0, -5.0]),
                            chosen_safe=t(1, 1), rejected_safe=t(0, 1))
    out = get_loss("safedpo")(x, beta=0.5, delta=3.0)
    assert out.losses.tolist() == pytest.approx([-_logsig(0.5 * 2 - 3.0), -_logsig(0.5 * -1)])
    assert out.metrics["safedpo/safety_pairs"].tolist() == [1.0, 0.0]
    # delta = 0 is DPO
    assert get_loss("safedpo")(x, beta=0.5).losses.tolist() == pytest.approx(
        get_loss("dpo")(x, beta=0.5).losses.tolist())


def test_safedpo_refuses_unordered_rows_and_missing_labels():
    x = pair([-1.0], [-3.0], [-2.0], [-2.0])
    with pytest.raises(ValueError, match="safety labels"):
        get_loss("safedpo")(x)
    with pytest.raises(ValueError, match="safety_order"):
        get_loss("safedpo")(dataclasses.replace(x, chosen_safe=t(0), rejected_safe=t(1)))
    with pytest.raises(UserError, match="delta"):
        get_loss("safedpo")(dataclasses.replace(x, chosen_safe=t(1), rejected_safe=t(0)), delta=-1.0)


def test_safedpo_refuses_rows_of_two_unsafe_responses_which_safety_order_drops():
    """SafeDPO's T(D) drops a pair of two unsafe responses; the loss would otherwise train it as plain DPO."""
    x = dataclasses.replace(
        pair([-1.0, -2.0], [-3.0, -5.0], [-2.0, -1.0], [-2.0, -5.0]), chosen_safe=t(1, 0), rejected_safe=t(0, 0)
    )
    with pytest.raises(ValueError, match="two unsafe responses.*safety_order"):
        get_loss("safedpo")(x)


def test_sft_is_the_per_token_nll_of_the_chosen_response():
    x = pair([-6.0, -2.0], [-1.0, -1.0], lw=[3, 4], ll=[1, 1])
    assert get_loss("sft")(x).losses.tolist() == pytest.approx([2.0, 0.5])


def test_beta_schedule_is_the_papers():
    betas = beta_schedule(8, 0.1, 5.0, 20.0, 5, torch.zeros(1))
    assert betas.tolist() == pytest.approx([0.5, 2.0, 2.0, 2.0, 2.0, 0.1, 0.1, 0.1])


def test_constrained_sft_normalises_over_the_tokens_of_each_micro_batch_as_the_authors_trainer():
    """A call sees one device's micro-batch and takes the mean over its tokens; data parallelism then averages the
    devices' means and gradient accumulation the micro-batches' (Qi et al.'s trainer does the same). With unequal
    token counts that is not the mean over the step's tokens, so the value depends on the batch layout
    (docs/safety-training.md): a loss normalised by the step's global token count would fail here."""
    torch.manual_seed(0)
    policy = -torch.rand(4, 12, dtype=torch.float64) * 3
    ref = policy + torch.randn(4, 12, dtype=torch.float64) * 0.5
    mask = torch.arange(12)[None, :] < torch.tensor([12, 10, 2, 3])[:, None]  # long rows first, short rows last
    betas = beta_schedule(12, 0.1, 5.0, 20.0, 5, policy)[None, :]
    per_token = -(2 / betas) * torch.nn.functional.logsigmoid(betas * (policy - ref))

    def mean(rows: slice) -> float:
        out = get_loss("constrained_sft")(TokenLogps(policy[rows], mask[rows], ref[rows]), beta=0.1)
        return out.losses.mean().item()

    assert mean(slice(0, 4)) == pytest.approx(per_token[mask].mean().item())  # 4 rows on one device: 27 tokens
    two_devices = (mean(slice(0, 2)) + mean(slice(2, 4))) / 2  # 2 rows each: 22 and 5 tokens
    halves = (per_token[:2][mask[:2]].mean() + per_token[2:][mask[2:]].mean()).item() / 2
    assert two_devices == pytest.approx(halves)
    assert two_devices != pytest.approx(per_token[mask].mean().item(), rel=1e-3)

def test_constrained_sft_value_and_gradient_by_hand():
    # two rows: 2 tokens and 1 token; gaps ℓ − ℓref = (0, 1) and (−1)
    ref = torch.tensor([[-1.0, -2.0], [-1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False]])
    policy = torch.tensor([[-1.0, -1.0], [-2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    out = get_loss("constrained_sft")(TokenLogps(policy, mask, ref), beta=0.1)
    b1, b2 = 0.5, 2.0  # β_1 = 0.1·5, β_2 = 0.1·20
    tokens = [-(2 / b1) * _logsig(0.0), -(2 / b2) * _logsig(b2 * 1.0), -(2 / b1) * _logsig(b1 * -1.0)]
    assert out.losses.mean().item() == pytest.approx(sum(tokens) / 3)  # mean over all 3 tokens of the batch
    assert out.losses.tolist() == pytest.approx([(tokens[0] + tokens[1]) * 2 / 3, tokens[2] * 2 / 3])
    out.losses.mean().backward()
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = [[-2 * (1 - sig(0.0)) / 3, -2 * (1 - sig(2.0)) / 3], [-2 * (1 - sig(-0.5)) / 3, 0.0]]
    assert policy.grad.tolist()[0] == pytest.approx(expected[0])
    assert policy.grad.tolist()[1] == pytest.approx(expected[1])
