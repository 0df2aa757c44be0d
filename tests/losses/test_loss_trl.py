"""Cross-check against TRL 1.16 (test-only dependency) on identical log-prob tensors.

TRL 1.16 computes its DPO losses inline in ``DPOTrainer._compute_loss`` (no public or static loss
function). We call that method unbound on a minimal stand-in ``self`` and a fake model whose
``log_probs`` carry our summed log-probs (reference log-probs ride in as "precomputed"), so no trainer,
model or dataset is built. It returns the batch mean, so per-example values come from batches of one;
the batch-coupled ``aot``/``aot_unpaired`` are compared on the full-batch mean. Known semantic
differences are asserted explicitly (see docs/trl-differences.md).
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl")
if not trl.__version__.startswith("1.16."):
    pytest.skip(f"cross-check is written against TRL 1.16 internals, found {trl.__version__}", allow_module_level=True)

from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402

from safealign.losses import get_loss  # noqa: E402
from safealign.types import PairLogps, UnpairedLogps  # noqa: E402

B, TOL = 6, 1e-6


class _Accelerator:
    device = torch.device("cpu")

    def gather_for_metrics(self, t):
        return t

    gather = gather_for_metrics

    def unwrap_model(self, m):
        return m


class _FakeModel:
    """Returns per-token log-probs whose row sums are the given summed log-probs."""

    training = True

    def __init__(self, by_input: dict[int, torch.Tensor]):
        self.by_input = by_input  # id(input_ids) -> (N,) summed log-probs

    def __call__(self, input_ids, **_):
        summed = self.by_input[id(input_ids)]
        per_token = torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1, dtype=summed.dtype)
        per_token[:, 0] = summed  # masked positions contribute 0, as in TRL's fused head
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def _ids_and_mask(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One prompt token then ``tokens[i]`` completion tokens per row (right-padded)."""
    width = 1 + int(tokens.max())
    mask = (torch.arange(width).unsqueeze(0) >= 1) & (torch.arange(width).unsqueeze(0) <= tokens.unsqueeze(1))
    return torch.zeros(len(tokens), width, dtype=torch.long), mask.long()


def trl_dpo(x: PairLogps, loss_type: str | list[str], beta: float = 0.1, label_smoothing: float = 0.0,
            discopop_tau: float = 0.05, loss_weights: list[float] | None = None) -> float:
    types_ = [loss_type] if isinstance(loss_type, str) else loss_type
    ids, mask = _ids_and_mask(torch.cat([x.chosen_tokens, x.rejected_tokens]).long())
    model = _FakeModel({id(ids): torch.cat([x.chosen, x.rejected])})
    stub = SimpleNamespace(
        model=model, accelerator=_Accelerator(), ld_alpha=None, aux_loss_enabled=False, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=types_, loss_weights=loss_weights or [1.0] * len(types_),
        beta=beta, label_smoothing=label_smoothing, use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
        args=SimpleNamespace(discopop_tau=discopop_tau, gradient_checkpointing_kwargs=None),
    )
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": mask,
              "ref_chosen_logps": x.ref_chosen, "ref_rejected_logps": x.ref_rejected}
    return DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False).item()


def batch(seed: int = 0, b: int = B) -> PairLogps:
    g = torch.Generator().manual_seed(seed)
    ref_c, ref_r = (
        -torch.rand(b, generator=g, dtype=torch.float64) * 30 - 5,
        -torch.rand(b, generator=g, dtype=torch.float64) * 30 - 5,
    )
    return PairLogps(
        chosen=ref_c + torch.randn(b, generator=g, dtype=torch.float64) * 3,
        rejected=ref_r + torch.randn(b, generator=g, dtype=torch.float64) * 3,
        chosen_tokens=torch.randint(1, 20, (b,), generator=g).double(),
        rejected_tokens=torch.randint(1, 20, (b,), generator=g).double(),
        ref_chosen=ref_c, ref_rejected=ref_r,
    )


def row(x: PairLogps, i: int) -> PairLogps:
    return PairLogps(
        *(
            getattr(x, f)[i : i + 1]
            for f in ("chosen", "rejected", "chosen_tokens", "rejected_tokens", "ref_chosen", "ref_rejected")
        )
    )


# (TRL loss_type, TRL settings, our loss, our params) — same semantics, compared per example
SHARED = [
    ("sigmoid", {"beta": 0.1}, "dpo", {"beta": 0.1}),
    ("hinge", {"beta": 0.3}, "hinge", {"beta": 0.3}),
    ("ipo", {"beta": 0.2}, "ipo", {"tau": 0.2}),
    ("robust", {"beta": 0.1, "label_smoothing": 0.2}, "robust", {"beta": 0.1, "epsilon": 0.2}),
    ("exo_pair", {"beta": 0.1, "label_smoothing": 1e-3}, "exo_pair", {"beta": 0.1, "epsilon": 1e-3}),
    ("nca_pair", {"beta": 0.1}, "nca_pair", {"beta": 0.1}),
    ("bco_pair", {"beta": 0.1}, "bco_pair", {"beta": 0.1, "delta": 0.0}),
    ("sppo_hard", {"beta": 0.5}, "sppo_hard", {"beta": 0.5}),
    ("apo_zero", {"beta": 0.1}, "apo_zero", {"beta": 0.1}),
    ("apo_down", {"beta": 0.1}, "apo_down", {"beta": 0.1}),
    ("discopop", {"beta": 0.05, "discopop_tau": 0.05}, "discopop", {"beta": 0.05, "tau": 0.05}),
    ("aot", {"beta": 0.1, "label_smoothing": 0.1}, "aot", {"beta": 0.1, "epsilon": 0.1}),
    ("aot_unpaired", {"beta": 0.1, "label_smoothing": 0.1}, "aot_unpaired", {"beta": 0.1, "epsilon": 0.1}),
]
BATCH_COUPLED = {"aot", "aot_unpaired"}


@pytest.mark.parametrize("trl_type, trl_kw, name, params", SHARED, ids=[s[0] for s in SHARED])
def test_matches_trl(trl_type, trl_kw, name, params):
    x = batch()
    ours = get_loss(name)(x, **params).losses
    assert trl_dpo(x, trl_type, **trl_kw) == pytest.approx(ours.mean().item(), abs=TOL)
    if name not in BATCH_COUPLED:
        per_example = [trl_dpo(row(x, i), trl_type, **trl_kw) for i in range(B)]
        assert per_example == pytest.approx(ours.tolist(), abs=TOL)


def test_weighted_combination_matches_trl_loss_weights():
    from safealign.losses import LossSpec, build_loss

    x = batch(1)
    ours = build_loss([LossSpec("dpo", 0.7), LossSpec("hinge", 0.3)])(x).losses.mean().item()
    assert trl_dpo(x, ["sigmoid", "hinge"], loss_weights=[0.7, 0.3]) == pytest.approx(ours, abs=TOL)


# ------------------------------------------------------------------ documented differences
def test_difference_sigmoid_ignores_label_smoothing():
    x = batch(2)
    # cdpo − dpo = ε·βΔ per example; raise every margin by 10 so the batch means must differ by ≥ 0.2
    x = PairLogps(x.chosen + 10, x.rejected, x.chosen_tokens, x.rejected_tokens, x.ref_chosen, x.ref_rejected)
    trl_value = trl_dpo(x, "sigmoid", label_smoothing=0.2)
    assert trl_value == pytest.approx(get_loss("dpo")(x).losses.mean().item(), abs=TOL)
    assert abs(trl_value - get_loss("cdpo")(x, epsilon=0.2).losses.mean().item()) > 1e-3


def test_difference_bco_pair_has_no_reward_shift():
    x = batch(3)
    ours_default = get_loss("bco_pair")(x).losses.mean().item()  # δ = batch mean of rewards
    assert get_loss("bco_pair")(x).metrics["bco/delta"].abs().item() > 1e-2  # a real shift on this batch
    assert abs(trl_dpo(x, "bco_pair") - ours_default) > 1e-4


def test_difference_ipo_length_normalisation():
    x = batch(4)
    assert trl_dpo(x, "ipo", beta=0.2) == pytest.approx(get_loss("ipo")(x, tau=0.2).losses.mean().item(), abs=TOL)
    paper = get_loss("ipo")(x, tau=0.2, length_normalize=False).losses.mean().item()
    assert abs(trl_dpo(x, "ipo", beta=0.2) - paper) > 1.0


def test_difference_sft_term_is_token_weighted_batch_mean():
    # TRL "sigmoid"+"sft" ≈ rpo, but TRL's sft is Σ_tokens NLL / Σ_tokens over the batch, ours the mean
    # of per-example averages. Equal lengths: identical; unequal: different.
    x = batch(5)
    # per-token log-probs in the fake model sit on one position, so TRL's mean over chosen tokens is
    # Σ_i pc_i / Σ_i Lw_i
    expected_trl = get_loss("dpo")(x).losses.mean() - x.chosen.sum() / x.chosen_tokens.sum()
    assert trl_dpo(x, ["sigmoid", "sft"]) == pytest.approx(expected_trl.item(), abs=TOL)
    assert abs(trl_dpo(x, ["sigmoid", "sft"]) - get_loss("rpo")(x, eta=1.0).losses.mean().item()) > 1e-3
    same = PairLogps(x.chosen, x.rejected, torch.full((B,), 7.0, dtype=torch.float64), x.rejected_tokens,
                     x.ref_chosen, x.ref_rejected)
    assert trl_dpo(same, ["sigmoid", "sft"]) == pytest.approx(
        get_loss("rpo")(same, eta=1.0).losses.mean().item(), abs=TOL
    )


# ------------------------------------------------------------------ KTO (KTOTrainer._compute_loss)
def trl_kto(x: UnpairedLogps, beta: float, wd: float, wu: float) -> float:
    ids, mask = _ids_and_mask(x.tokens.long())
    kl_ids, kl_mask = _ids_and_mask(x.tokens.long())
    model = _FakeModel({id(ids): x.logps, id(kl_ids): x.kl_logps})
    stub = SimpleNamespace(
        model=model, accelerator=_Accelerator(), aux_loss_enabled=False, precompute_ref_logps=True, calculate_KL=True,
        loss_type="kto", beta=beta, desirable_weight=wd, undesirable_weight=wu,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
        args=SimpleNamespace(gradient_checkpointing_kwargs=None),
    )
    stub._compute_kl_logps = lambda m, b: KTOTrainer._compute_kl_logps(stub, m, b)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": mask, "label": x.label,
              "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones_like(kl_ids), "KL_completion_mask": kl_mask,
              "ref_logps": x.ref_logps, "ref_KL_logps": x.ref_kl_logps}
    return KTOTrainer._compute_loss(stub, model, inputs, return_outputs=False).item()


@pytest.mark.parametrize("kl_shift", [0.4, -0.4], ids=["kl_positive", "kl_clamped"])
def test_kto_matches_trl(kl_shift):
    g = torch.Generator().manual_seed(9)
    ref = -torch.rand(B, generator=g, dtype=torch.float64) * 20 - 2
    kl_ref = -torch.rand(B, generator=g, dtype=torch.float64) * 20 - 2
    x = UnpairedLogps(
        logps=ref + torch.randn(B, generator=g, dtype=torch.float64),
        tokens=torch.randint(1, 9, (B,), generator=g).double(),
        label=torch.tensor([True, False, True, True, False, False]),
        ref_logps=ref,
        kl_logps=kl_ref + kl_shift + torch.randn(B, generator=g, dtype=torch.float64) * 0.1,
        ref_kl_logps=kl_ref,
    )
    ours = get_loss("kto")(x, beta=0.2, desirable_weight=1.0, undesirable_weight=1.3).losses
    assert trl_kto(x, 0.2, 1.0, 1.3) == pytest.approx(ours.mean().item(), abs=TOL)


# ------------------------------------------------------------------ reference-free (experimental trainers)
def test_orpo_cpo_simpo_match_trl_loss_methods():
    from trl.experimental.cpo.cpo_trainer import CPOTrainer
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    x = batch(6)
    avg_c, avg_r = x.chosen / x.chosen_tokens, x.rejected / x.rejected_tokens
    acc = SimpleNamespace(device=torch.device("cpu"))
    # ORPO: TRL returns λ·logσ(log-odds ratio) and subtracts it from the NLL
    ratio = ORPOTrainer.odds_ratio_loss(SimpleNamespace(beta=0.1, accelerator=acc), avg_c, avg_r)[0]
    ours = get_loss("orpo")(x, lam=0.1).losses + avg_c  # our loss minus its NLL term (−p̄c)
    torch.testing.assert_close(-ratio.double(), ours, atol=TOL, rtol=0)
    cpo_self = SimpleNamespace(
        beta=0.1, alpha=0.0, label_smoothing=0.0, loss_type="sigmoid", simpo_gamma=0.5, accelerator=acc
    )
    torch.testing.assert_close(
        CPOTrainer.cpo_loss(cpo_self, x.chosen, x.rejected)[0], get_loss("cpo")(x, alpha=0.0).losses, atol=TOL, rtol=0
    )
    simpo_self = SimpleNamespace(
        beta=2.0, alpha=0.0, label_smoothing=0.0, loss_type="simpo", simpo_gamma=0.5, accelerator=acc
    )
    torch.testing.assert_close(CPOTrainer.cpo_loss(simpo_self, avg_c, avg_r)[0],
                               get_loss("simpo")(x, beta=2.0, gamma=0.5).losses, atol=TOL, rtol=0)
