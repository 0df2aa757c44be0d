"""One contract over every registered loss: shape, finiteness, gradients, detached metrics, reference."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from safealign.losses import LOSSES, get_loss, loss_names
from safealign.types import PairLogps, TokenLogps, UnpairedLogps

B = 5


def make_input(name: str, *, with_ref: bool = True):
    """Fresh leaf tensors for the policy inputs; log-ratios small so no loss sits in a flat region."""
    g = torch.Generator().manual_seed(7)
    meta = LOSSES.meta(name)

    def logps() -> torch.Tensor:
        return -torch.rand(B, generator=g, dtype=torch.float64) * 10 - 2

    def near(ref: torch.Tensor) -> torch.Tensor:
        return (ref + torch.randn(B, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)

    tokens = torch.randint(1, 12, (B,), generator=g).double()
    if meta["input"] == "token":  # per-token log-probs of responses of 1..7 tokens
        ref = -torch.rand(B, 7, generator=g, dtype=torch.float64) * 3
        mask = torch.arange(7)[None, :] < torch.tensor([1, 3, 7, 5, 2])[:, None]
        policy = ((ref + torch.randn(B, 7, generator=g, dtype=torch.float64) * 0.5) * mask).requires_grad_(True)
        return TokenLogps(logps=policy, mask=mask, ref_logps=ref * mask if with_ref else None)
    if meta["input"] == "unpaired":
        ref, kl_ref = logps(), logps()
        return UnpairedLogps(
            logps=near(ref), tokens=tokens, label=torch.tensor([True, False, True, False, True]),
            ref_logps=ref if with_ref else None, kl_logps=kl_ref + 0.3, ref_kl_logps=kl_ref,
        )
    rc, rr = logps(), logps()
    return PairLogps(
        chosen=near(rc), rejected=near(rr), chosen_tokens=tokens, rejected_tokens=tokens.flip(0),
        ref_chosen=rc if with_ref else None, ref_rejected=rr if with_ref else None,
        chosen_scores=(rc / tokens).unsqueeze(1).repeat(1, 3) + torch.tensor([-0.1, 0.0, 0.1], dtype=torch.float64),
        chosen_safe=torch.ones(B, dtype=torch.float64), rejected_safe=torch.tensor([0.0, 1, 0, 1, 0]).double(),
    )


def test_readme_lists_exactly_the_registered_losses():
    """The README's loss listing is the user-facing copy of the registry: it may not drift from it."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    found = re.search(r"`safealign losses` lists (\d+):\s*([^)]*)\)", readme)
    assert found, "README: the '`safealign losses` lists N: a, b, ...)' sentence is missing"
    listed = [name.strip() for name in found.group(2).split(",")]
    assert sorted(listed) == loss_names() and int(found.group(1)) == len(listed)


@pytest.mark.parametrize("name", loss_names())
def test_contract(name):
    meta, fn = LOSSES.meta(name), get_loss(name)
    x = make_input(name)
    out = fn(x)
    assert out.losses.shape == (B,)
    assert torch.isfinite(out.losses).all()
    for key, value in out.metrics.items():
        assert not value.requires_grad, f"metric {key} is not detached"
        assert torch.isfinite(value).all(), key
    if meta["input"] == "pair":
        for key in ("rewards/chosen", "rewards/accuracies"):
            assert key in out.metrics
    fields = ("chosen", "rejected") if meta["input"] == "pair" else ("logps",)
    if meta["input"] == "token":
        fields = ("logps",)
    grads = torch.autograd.grad(out.losses.sum(), [getattr(x, f) for f in fields], allow_unused=True)
    for field, grad in zip(fields, grads):
        if field in meta["policy_inputs"]:
            assert grad is not None and grad.abs().sum() > 0, f"no gradient reaches {field}"
        else:
            assert grad is None or grad.abs().sum() == 0, f"{field} should not influence {name}"
    assert inspect_doc(fn), f"{name} has no docstring"


@pytest.mark.parametrize("name", loss_names())
def test_reference_contract(name):
    fn, needs_ref = get_loss(name), LOSSES.meta(name)["needs_reference"]
    x = make_input(name, with_ref=False)
    if needs_ref:
        with pytest.raises(ValueError, match="needs reference log-probs"):
            fn(x)
    else:
        out = fn(x)
        assert out.losses.shape == (B,) and torch.isfinite(out.losses).all()


@pytest.mark.parametrize("name", loss_names())
def test_wrong_input_kind_is_refused(name):
    other = "bco" if LOSSES.meta(name)["input"] in ("pair", "token") else "dpo"
    with pytest.raises(ValueError, match="input"):
        get_loss(name)(make_input(other))


def test_ragged_batch_is_refused():
    x = make_input("dpo")
    x = dataclasses.replace(x, ref_rejected=x.ref_rejected[:3])
    with pytest.raises(ValueError, match="ref_rejected"):
        get_loss("dpo")(x)


def inspect_doc(fn) -> str:
    return (fn.__doc__ or "").strip()
