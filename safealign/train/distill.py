"""DCKD and ADPA as trainer objectives over a cached teacher top-k (docs/seed-methods.md).

The batch is a pair batch (chosen rows, then rejected rows) plus the teacher columns of
:class:`safealign.train.teacher.TeacherCollator`; the arithmetic is :mod:`safealign.losses.distill`.
Every term is a per-sequence mean over its response tokens (the official code averages over all tokens of a
batch; per sequence, a long response does not outweigh a short one), and the batch mean is over pairs.

- DCKD: ``chosen_weight · KL̄_chosen + rejected_weight · KL̄_rejected + sft_on_chosen · NLL̄_chosen``.
- ADPA: ``adpa_weight · Ā_rejected + sft_on_chosen · NLL̄_chosen``, where the rejected slot holds the
  student's own samples and ``Ā`` is the mean of ``−Σ_a p_S(a) A(a)`` over them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from safealign.losses.distill import advantage_loss, topk_forward_kl
from safealign.train.logps import response_log_softmax


def _student(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, int]:
    """(rows, student log-softmax (P, V), per-position NLL of the data token (P,), B)."""
    ids = batch["input_ids"]
    rows, cols, student = response_log_softmax(model, ids, batch["attention_mask"], batch["response_mask"])
    if student.shape[0] != batch["teacher_ids"].shape[0]:
        raise ValueError(f"the batch scores {student.shape[0]} response positions but carries teacher "
                         f"distributions for {batch['teacher_ids'].shape[0]}: the teacher cache is not for this data")
    nll = -student.gather(-1, ids[rows, cols + 1][:, None]).squeeze(-1)
    return rows, student, nll, ids.shape[0] // 2


def _per_sequence(values: Tensor, rows: Tensor, n: int) -> Tensor:
    counts = torch.bincount(rows, minlength=n).to(values.dtype).clamp(min=1)
    return values.new_zeros(n).index_add(0, rows, values) / counts


def dckd_terms(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-pair ``kl_chosen``, ``kl_rejected``, ``nll_chosen`` ``(B,)``."""
    rows, student, nll, b = _student(model, batch)
    kl = _per_sequence(topk_forward_kl(student, batch["teacher_ids"], batch["teacher_logps"]), rows, 2 * b)
    return {"kl_chosen": kl[:b], "kl_rejected": kl[b:], "nll_chosen": _per_sequence(nll, rows, 2 * b)[:b]}


def adpa_terms(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-pair ``advantage_rejected`` (ADPA's term on the student sample) and ``nll_chosen`` ``(B,)``."""
    if "teacher_ref_logps" not in batch:
        raise ValueError("ADPA needs the reference teacher's log-probs (teacher_ref_logps) in the batch")
    rows, student, nll, b = _student(model, batch)
    advantage = batch["teacher_logps"] - batch["teacher_ref_logps"]
    adv = _per_sequence(advantage_loss(student, batch["teacher_ids"], advantage), rows, 2 * b)
    return {"advantage_rejected": adv[b:], "nll_chosen": _per_sequence(nll, rows, 2 * b)[:b]}
