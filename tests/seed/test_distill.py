"""DCKD / ADPA (docs/seed-methods.md): the top-k terms by hand and against the full-vocabulary formulas, the
teacher cache's key and verification, and the batched terms against a per-pair brute force on tiny-random."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from safealign.data import PairEncoder, PreferenceCollator
from safealign.losses.distill import advantage_loss, topk_forward_kl
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.distill import adpa_terms, dckd_terms
from safealign.train.teacher import TeacherCollator, load_or_compute_teacher
from safealign.types import PreferencePair

PAIRS = [("Name a prime.", "7 is prime.", "9 is prime."), ("Say hi.", "Hi there!", "No."),
         ("Add 2 and 2.", "It is 4.", "It is 5, I think.")]


def test_topk_terms_by_hand_and_exact_with_the_whole_vocabulary():
    student = torch.tensor([[0.5, 0.3, 0.2]]).log()
    teacher = torch.tensor([[0.7, 0.2, 0.1]]).log()
    ids = torch.tensor([[0, 1]])  # the teacher's top-2
    kl = topk_forward_kl(student, ids, teacher.gather(-1, ids))
    # the top-k tokens and one bucket for the rest: the teacher's 0.1 against the student's 0.2
    expected = 0.7 * math.log(0.7 / 0.5) + 0.2 * math.log(0.2 / 0.3) + 0.1 * math.log(0.1 / 0.2)
    assert kl.item() == pytest.approx(expected, rel=1e-6)
    advantage = torch.tensor([[1.5, -2.0]])
    assert advantage_loss(student, ids, advantage).item() == pytest.approx(-(0.5 * 1.5 - 0.3 * 2.0), rel=1e-6)

    s, t = torch.randn(5, 11).log_softmax(-1), torch.randn(5, 11).log_softmax(-1)
    full = t.topk(11, dim=-1)
    exact = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    assert torch.allclose(topk_forward_kl(s, full.indices, full.values), exact, atol=1e-6)



def test_topk_kl_below_the_whole_vocabulary_is_minimised_at_the_teacher_and_never_negative():
    """With the teacher's tail dropped, the minimum sat at the teacher renormalised over its top-k, below 0: the
    student learnt a sharper teacher. With the tail as a (k+1)-th bucket the term is a KL of two distributions over
    k + 1 outcomes: >= 0, and 0 at the teacher."""
    torch.manual_seed(0)
    teacher = torch.randn(1, 50).log_softmax(-1)
    top = teacher.topk(16, dim=-1)
    assert 0.5 < top.values.exp().sum().item() < 0.95  # the tail weighs in
    assert topk_forward_kl(teacher, top.indices, top.values).item() == pytest.approx(0.0, abs=1e-6)
    others = torch.randn(200, 50).mul(3.0).log_softmax(-1)
    assert topk_forward_kl(others, top.indices.expand(200, -1), top.values.expand(200, -1)).min().item() >= -1e-6
    logits = torch.zeros(1, 50, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    for _ in range(400):
        optimizer.zero_grad()
        loss = topk_forward_kl(logits.log_softmax(-1), top.indices, top.values).sum()
        loss.backward()
        optimizer.step()
    student = logits.detach().log_softmax(-1)
    assert loss.item() >= -1e-6
    assert student.gather(-1, top.indices).exp().sum().item() == pytest.approx(top.values.exp().sum().item(), abs=1e-3)
    assert torch.allclose(student.gather(-1, top.indices), top.values, atol=1e-2)  # the teacher's own top-k


def test_teacher_ids_past_the_students_vocabulary_fold_into_the_tail():
    """A teacher with a padded output vocabulary (same tokenizer, more rows): its top-k ids the student has no row
    for count in the remaining bucket, as the official code does; ADPA leaves them out (no student probability)."""
    student = torch.tensor([[0.5, 0.3, 0.2]]).log()
    teacher = torch.tensor([[0.6, 0.1, 0.05, 0.2, 0.05]]).log()  # rows 3 and 4 are padding
    ids = torch.tensor([[0, 3, 1]])  # the teacher's top-3
    kl = topk_forward_kl(student, ids, teacher.gather(-1, ids))
    # in the student's vocabulary: tokens 0 and 1; the rest: teacher 0.05 + 0.2 + 0.05, student 0.2
    expected = 0.6 * math.log(0.6 / 0.5) + 0.1 * math.log(0.1 / 0.3) + 0.3 * math.log(0.3 / 0.2)
    assert kl.item() == pytest.approx(expected, rel=1e-6)
    advantage = torch.tensor([[1.5, 9.0, -2.0]])
    assert advantage_loss(student, ids, advantage).item() == pytest.approx(-(0.5 * 1.5 - 0.3 * 2.0), rel=1e-6)


def test_topk_kl_is_finite_when_a_tail_is_empty():
    """The teacher's tail may be 0 (all its mass on its top-k) and the student's may underflow: the loss and its
    gradient stay finite."""
    teacher = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).log()
    ids = torch.tensor([[0, 1]])
    for logits in ([0.0, 0.0, 0.0, 0.0], [30.0, 30.0, -30.0, -30.0], [0.0, 60.0, -60.0, -60.0]):
        z = torch.tensor([logits], requires_grad=True)
        kl = topk_forward_kl(z.log_softmax(-1), ids, teacher.gather(-1, ids))
        kl.sum().backward()
        assert torch.isfinite(kl).all() and torch.isfinite(z.grad).all() and kl.item() >= -1e-6
    spread = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()  # a teacher tail of 0.3 against a student tail of ~1e-26
    z = torch.tensor([[30.0, 30.0, -30.0, -30.0]], requires_grad=True)
    kl = topk_forward_kl(z.log_softmax(-1), ids, spread.gather(-1, ids))
    kl.sum().backward()
    assert torch.isfinite(kl).all() and kl.item() > 1.0 and torch.isfinite(z.grad).all()

def encoded_pairs():
    tok = tiny_tokenizer()
    pairs = [PreferencePair(({"role": "user", "content": p},), c, r) for p, c, r in PAIRS]
    encoded, _ = PairEncoder(tok).encode_all(pairs)
    return tok, encoded


@torch.no_grad()
def full_distributions(model, encoded, side):
    """Per pair, the full next-token log-softmax at each response position of one side, unbatched."""
    out = []
    for item in encoded:
        response = item.chosen_ids if side == 0 else item.rejected_ids
        ids = torch.tensor([item.prompt_ids + response])
        logits = model(input_ids=ids).logits[0].float()
        start = len(item.prompt_ids)
        out.append((logits[start - 1 : ids.shape[1] - 1].log_softmax(-1), ids[0, start:]))
    return out


def test_teacher_cache_is_reused_keyed_by_k_and_recomputed_when_damaged(tmp_path, caplog):
    tok, encoded = encoded_pairs()
    teacher = tiny_model(seed=1).eval()
    first = load_or_compute_teacher(teacher, encoded, tmp_path, 8)
    again = load_or_compute_teacher(teacher, encoded, tmp_path, 8)
    assert not first.reused and again.reused and again.path == first.path
    assert torch.equal(again.table.ids, first.table.ids)
    expected = full_distributions(teacher, encoded, side=1)[2][0].topk(8, dim=-1)
    rejected = first.table.segments([2], 1)[0]
    assert torch.equal(first.table.ids[rejected], expected.indices)
    assert torch.allclose(first.table.logps[rejected], expected.values, atol=1e-5)
    assert load_or_compute_teacher(teacher, encoded, tmp_path, 4).path != first.path  # k is part of the key
    data = bytearray(first.path.read_bytes())
    data[-8:] = b"\x00" * 8  # flip stored values: the checksum no longer matches
    first.path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        redone = load_or_compute_teacher(teacher, encoded, tmp_path, 8)
    assert not redone.reused and "recomputing" in caplog.text
    assert torch.equal(redone.table.logps, first.table.logps)


def batch_with_teacher(tmp_path, teacher, reference=None):
    tok, encoded = encoded_pairs()
    vocab = teacher.get_output_embeddings().weight.shape[0]
    cache = load_or_compute_teacher(teacher, encoded, tmp_path, vocab, reference=reference)  # k = V: exact
    return encoded, TeacherCollator(PreferenceCollator(tok.pad_token_id), cache.table)(encoded)


def test_dckd_terms_match_the_exact_forward_kl_per_pair_and_vanish_when_teacher_is_student(tmp_path):
    student, teacher = tiny_model().eval(), tiny_model(seed=1).eval()
    encoded, batch = batch_with_teacher(tmp_path, teacher)
    terms = dckd_terms(student, batch)
    for side, name in ((0, "kl_chosen"), (1, "kl_rejected")):
        s, t = full_distributions(student, encoded, side), full_distributions(teacher, encoded, side)
        expected = [F.kl_div(sp, tp, log_target=True, reduction="none").sum(-1).mean().item()
                    for (sp, _), (tp, _) in zip(s, t)]
        assert terms[name].tolist() == pytest.approx(expected, rel=1e-4)
    nll = [-sp.gather(-1, y[:, None]).mean().item() for sp, y in full_distributions(student, encoded, 0)]
    assert terms["nll_chosen"].tolist() == pytest.approx(nll, rel=1e-5)
    _, own = batch_with_teacher(tmp_path / "own", student)
    assert dckd_terms(student, own)["kl_chosen"].abs().max().item() < 1e-5


def test_adpa_term_matches_the_advantage_over_the_whole_vocabulary_on_the_student_samples(tmp_path):
    student, teacher, reference = tiny_model().eval(), tiny_model(seed=1).eval(), tiny_model(seed=2).eval()
    encoded, batch = batch_with_teacher(tmp_path, teacher, reference)
    terms = adpa_terms(student, batch)
    rows = zip(*(full_distributions(m, encoded, 1) for m in (student, teacher, reference)))
    expected = [-(sp.exp() * (tp - rp)).sum(-1).mean().item() for (sp, _), (tp, _), (rp, _) in rows]
    # a small difference of two float32 sums over the vocabulary (~3e-4): its relative error varies with the CPU's
    # summation order (7e-8 absolute, 2e-4 relative on one machine), hence the absolute tolerance
    assert terms["advantage_rejected"].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_an_adapted_teacher_does_not_share_its_bases_cache_entry(tmp_path):
    from safealign.models import LoraSettings, apply_lora

    _, encoded = encoded_pairs()
    base = tiny_model().eval()
    adapted = apply_lora(tiny_model(), LoraSettings(r=2, alpha=4)).eval()
    with torch.no_grad():  # a trained adapter: its B matrices are no longer zero
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    plain = load_or_compute_teacher(base, encoded, tmp_path, 4)
    tuned = load_or_compute_teacher(adapted, encoded, tmp_path, 4)
    assert tuned.path != plain.path and not tuned.reused
    assert not torch.equal(tuned.table.logps, plain.table.logps)


def test_a_teacher_whose_adapter_trains_a_head_copy_is_keyed_by_that_copy(tmp_path):
    """A teacher adapter with modules_to_save (a trained copy of the output head): changing only that copy gives
    another cache entry, not the stale table of the old head."""
    from safealign.models import LoraSettings, apply_lora

    _, encoded = encoded_pairs()
    teacher = apply_lora(tiny_model(), LoraSettings(r=2, alpha=4, train_output_head=True)).eval()
    first = load_or_compute_teacher(teacher, encoded, tmp_path, 4)
    with torch.no_grad():
        for name, param in teacher.named_parameters():
            if "modules_to_save" in name:
                param.mul_(30.0)
    second = load_or_compute_teacher(teacher, encoded, tmp_path, 4)
    assert second.path != first.path and not second.reused
    assert not torch.equal(second.table.logps, first.table.logps)


def objective_loss(objective, model, batch) -> float:
    from safealign.train.objectives.base import ObjectiveContext

    ctx = ObjectiveContext(reference=None, step=0, total_steps=1, rows={}, pad_token_id=0)
    return objective(model, batch, ctx).loss.item()


def sharp_teacher(seed: int = 1):
    """A teacher far from the (near-uniform) random student: its logits scaled up, so each KL and advantage term
    is of the size of the NLL and a mis-weighted term shows."""
    teacher = tiny_model(seed=seed).eval()
    with torch.no_grad():
        teacher.lm_head.weight.mul_(30.0)
    return teacher


def test_dckd_objective_weighs_each_term_by_its_own_weight(tmp_path):
    from safealign.train.objectives.distill import DckdObjective

    student, teacher = tiny_model().eval(), sharp_teacher()
    encoded, batch = batch_with_teacher(tmp_path, teacher)  # k = V: the KL is exact
    s_c, t_c = full_distributions(student, encoded, 0), full_distributions(teacher, encoded, 0)
    s_r, t_r = full_distributions(student, encoded, 1), full_distributions(teacher, encoded, 1)

    def kl(s, t):  # per pair: mean over its response tokens of Σ_a p_T(a) (log p_T(a) − log p_S(a))
        return [(tp.exp() * (tp - sp)).sum(-1).mean().item() for (sp, _), (tp, _) in zip(s, t)]

    kl_c, kl_r = kl(s_c, t_c), kl(s_r, t_r)
    nll_c = [-sp.gather(-1, y[:, None]).mean().item() for sp, y in s_c]
    weights = {"chosen_weight": 0.25, "rejected_weight": 2.0, "sft_on_chosen": 0.5}
    expected = sum(0.25 * c + 2.0 * r + 0.5 * n for c, r, n in zip(kl_c, kl_r, nll_c)) / len(encoded)
    swapped = sum(2.0 * c + 0.25 * r + 0.5 * n for c, r, n in zip(kl_c, kl_r, nll_c)) / len(encoded)
    assert abs(expected - swapped) > 1e-3 * abs(expected)  # the data tells the two weights apart
    assert min(kl_c + kl_r) > 1.0  # each KL term weighs in
    loss = objective_loss(DckdObjective(teacher="t", **weights), student, batch)
    assert loss == pytest.approx(expected, rel=1e-4)


def test_adpa_objective_weighs_the_advantage_and_the_chosen_nll(tmp_path):
    from safealign.train.objectives.distill import AdpaObjective

    student, teacher, reference = tiny_model().eval(), sharp_teacher(), tiny_model(seed=2).eval()
    encoded, batch = batch_with_teacher(tmp_path, teacher, reference)  # teacher ≠ its reference: A ≠ 0
    rows = zip(*(full_distributions(m, encoded, 1) for m in (student, teacher, reference)))
    advantage = [-(sp.exp() * (tp - rp)).sum(-1).mean().item() for (sp, _), (tp, _), (rp, _) in rows]
    nll_c = [-sp.gather(-1, y[:, None]).mean().item() for sp, y in full_distributions(student, encoded, 0)]
    assert min(abs(a) for a in advantage) > 0.1  # the advantage term weighs in
    assert abs(sum(advantage)) > 1e-2 * abs(sum(nll_c))
    expected = sum(0.4 * a + 1.5 * n for a, n in zip(advantage, nll_c)) / len(encoded)
    loss = objective_loss(AdpaObjective(teacher="t", teacher_reference="r", adpa_weight=0.4, sft_on_chosen=1.5),
                          student, batch)
    assert loss == pytest.approx(expected, rel=1e-4)
