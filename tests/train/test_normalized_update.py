"""Pairwise-normalised update: the gradient it produces, its first-order guarantee, and the trainer option."""

from __future__ import annotations

import pytest
import torch

from safealign.data import PairEncoder, PreferenceCollator
from safealign.losses import build_loss
from safealign.train.logps import pair_logps
from safealign.train.normalized import normalized_objective, pair_gradient_norms, single_pair
from safealign.types import PairLogps, PreferencePair

from test_trainer import read_metrics, tiny_config

PAIRS = [  # responses of very different lengths, so single pairs are padded inside the batch
    ("How do I pick a lock?", "I can't help with that.", "Insert a tension wrench and rake the pins, then turn."),
    ("Name a colour.", "Blue.", "I refuse."),
    ("Write a threat.", "No.", "Listen, you will regret this"),
]


@pytest.fixture()
def batch(tiny_tokenizer):
    items = [PreferencePair(({"role": "user", "content": p},), c, r) for p, c, r in PAIRS]
    encoded, _ = PairEncoder(tiny_tokenizer, max_length=512, max_prompt_length=400).encode_all(items)
    return PreferenceCollator(tiny_tokenizer.pad_token_id)(encoded)


def _flat(grads, params):
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1).double() for g, p in zip(grads, params)]
    )


def test_single_pair_scores_like_its_rows_in_the_batch(tiny_model, batch):
    tiny_model.eval()
    with torch.no_grad():
        full = pair_logps(tiny_model, batch)
        for i in range(len(PAIRS)):
            pair = single_pair(batch, i)
            assert pair["input_ids"].shape[1] <= batch["input_ids"].shape[1]
            one = pair_logps(tiny_model, pair)
            assert float(one[0][0]) == pytest.approx(float(full[0][i]), abs=1e-4)
            assert float(one[1][0]) == pytest.approx(float(full[1][i]), abs=1e-4)
    widths = [single_pair(batch, i)["input_ids"].shape[1] for i in range(len(PAIRS))]
    assert min(widths) < batch["input_ids"].shape[1]  # trailing padding was trimmed


def test_transition_rows_are_normalised_by_the_gradient_of_their_target_tokens(tiny_model, tiny_tokenizer):
    """DeRTa's transition row scores the refusal's first token at every chosen position (``target_ids``): its
    normalising ‖g_w‖ must be the gradient of that log-prob, which the loss differentiates, not of the input's."""
    items = [PreferencePair(({"role": "user", "content": p},), c, r, True,
                            chosen_target_refusal="I cannot help." if i == 0 else None)
             for i, (p, c, r) in enumerate(PAIRS)]
    encoded, _ = PairEncoder(tiny_tokenizer, max_length=512, max_prompt_length=400).encode_all(items)
    batch = PreferenceCollator(tiny_tokenizer.pad_token_id)(encoded)
    assert "target_ids" in batch
    tiny_model.eval()
    params = [p for p in tiny_model.parameters() if p.requires_grad]
    chosen = pair_logps(tiny_model, batch)[0]
    expected = [float(_flat(torch.autograd.grad(chosen[i], params, retain_graph=True, allow_unused=True),
                            params).norm()) for i in range(len(PAIRS))]
    got = pair_gradient_norms(tiny_model, batch, params)[0].tolist()
    assert got == pytest.approx(expected, rel=1e-3)
    assert float(pair_logps(tiny_model, single_pair(batch, 0))[0]) == pytest.approx(float(chosen[0]), abs=1e-4)


def test_normalized_gradient_matches_brute_force(tiny_model, batch):
    torch.manual_seed(0)
    tiny_model.eval()
    params = [p for p in tiny_model.parameters() if p.requires_grad]
    loss_fn = build_loss([{"name": "dpo", "params": {"beta": 0.5}}])
    b = len(PAIRS)
    ref_c, ref_r = torch.randn(b) - 20, torch.randn(b) - 20

    chosen, rejected, ct, rt = pair_logps(tiny_model, batch)
    logps = PairLogps(chosen=chosen, rejected=rejected, chosen_tokens=ct, rejected_tokens=rt,
                      ref_chosen=ref_c, ref_rejected=ref_r)
    loss = loss_fn(logps).losses.mean()
    # brute force: per-pair gradients from the batch graph, loss weights from autograd, all flattened
    plain = _flat(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params)
    a, w = torch.autograd.grad(loss, (chosen, rejected), retain_graph=True)
    expected = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    for i in range(b):
        g_w = _flat(torch.autograd.grad(chosen[i], params, retain_graph=True, allow_unused=True), params)
        g_l = _flat(torch.autograd.grad(rejected[i], params, retain_graph=True, allow_unused=True), params)
        expected += float(a[i]) * g_w / g_w.norm() + float(w[i]) * g_l / g_l.norm()

    norms = pair_gradient_norms(tiny_model, batch, params)
    objective = normalized_objective(loss, chosen, rejected, *norms)
    assert float(objective.detach()) == pytest.approx(float(loss.detach()), abs=1e-7)  # logged value is the loss itself
    got = _flat(torch.autograd.grad(objective, params, allow_unused=True), params)
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-6 * float(expected.abs().max()))
    assert not torch.allclose(got, plain, rtol=1e-2)  # and it is not the plain gradient


def _step_changes(model, batch, normalize: bool, lr: float = 1e-4) -> tuple[float, float]:
    """Change of (chosen, rejected) log-prob of a one-pair batch after one small SGD step on DPO."""
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    chosen, rejected, ct, rt = pair_logps(model, batch)
    logps = PairLogps(chosen=chosen, rejected=rejected, chosen_tokens=ct, rejected_tokens=rt,
                      ref_chosen=chosen.detach(), ref_rejected=rejected.detach())
    loss = build_loss([{"name": "dpo", "params": {"beta": 0.1}}])(logps).losses.mean()
    if normalize:
        loss = normalized_objective(loss, chosen, rejected, *pair_gradient_norms(model, batch, params))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is not None:
                p -= lr * g
        after = pair_logps(model, batch)
        for p, old in zip(params, before):
            p.copy_(old)
    return float(after[0] - chosen.detach()), float(after[1] - rejected.detach())


def test_normalized_step_raises_chosen_and_lowers_rejected_where_dpo_lowers_both(tiny_tokenizer):
    """The paper's failure case: the rejected response extends the chosen one, so their gradients are
    entangled and a plain DPO step lowers both log-probs; the normalised step separates them."""
    from safealign.models.tiny import tiny_model

    model = tiny_model().eval()
    item = PreferencePair(({"role": "user", "content": "Say hi."},), "hello there", "hello there friend, hello")
    encoded, _ = PairEncoder(tiny_tokenizer, max_length=512, max_prompt_length=400).encode_all([item])
    one = PreferenceCollator(tiny_tokenizer.pad_token_id)(encoded)
    plain_chosen, plain_rejected = _step_changes(model, one, normalize=False)
    normalized_chosen, normalized_rejected = _step_changes(model, one, normalize=True)
    assert plain_rejected < 0 and plain_chosen < 0  # entangled: DPO lowers the chosen response too
    assert normalized_chosen > 0 and normalized_rejected < 0


@pytest.mark.parametrize("checkpointing", [False, True])
def test_trainer_option_logs_gradient_norms(tmp_path, pairs_file, checkpointing):
    config = tiny_config(tmp_path, pairs_file, max_steps=2, normalize_pair_gradients=True,
                         gradient_checkpointing=checkpointing)
    rows = read_metrics(run_training_(config))
    assert len(rows) >= 2
    assert all(row["grad_norm/chosen"] > 0 and row["grad_norm/rejected"] > 0 for row in rows[:2])
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # the logged loss is DPO's (reference = policy)


def test_trainer_option_refuses_unpaired_losses_before_loading(tmp_path, pairs_file):
    config = tiny_config(tmp_path, pairs_file, normalize_pair_gradients=True, model="no/such-model")
    config.losses = [type(config.losses[0])("kto")]
    with pytest.raises(ValueError, match="normalize_pair_gradients needs a paired loss"):
        run_training_(config)


def run_training_(config):
    from safealign.train.run import run_training

    result = run_training(config)
    return result.output_dir
