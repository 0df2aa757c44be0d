"""DCKD and ADPA token terms over a teacher's top-k distribution (Gao, Wan, Guo, Quan, Wang, "Advantage-Guided
Distillation for Preference Alignment in Small Language Models", ICLR 2025, arXiv 2502.17927;
docs/seed-methods.md).

Pure: the caller gives, per scored response position, the student's full log-softmax ``(P, V)`` and the
teacher's stored top-k token ids and log-probs ``(P, k)`` (safealign/train/teacher.py).

- **DCKD** (forward KL on a prefix): the KL of two distributions over k + 1 outcomes, the teacher's top-k tokens
  and one bucket for the rest: ``Σ_{a ∈ top-k} p_T(a) (log p_T(a) − log p_S(a)) + t (log t − log s)`` with
  ``t = 1 − Σ_{top-k} p_T`` and ``s = 1 − Σ_{top-k} p_S``, as the official code (it stores each position's remaining
  probability). Without the bucket the minimum sits at the student putting all its mass on the top-k (the teacher
  renormalised over them, a sharper teacher) and the term goes below 0; with it the term is ≥ 0 and 0 at the
  teacher. With k = V it is the exact KL(p_T ‖ p_S).
- **ADPA** (advantage-weighted student distribution): ``−Σ_{a ∈ top-k} p_S(a) · A(a)`` with the token
  advantage ``A(a) = log π_dpo^T(a|s_t) − log π_ref^T(a|s_t)`` over the DPO teacher's top-k set.

A teacher with a padded output vocabulary (the student's tokenizer, more rows) may put top-k ids past the
student's rows: they count in the remaining bucket (the official code folds them there too) and ADPA leaves them
out (the student has no probability for them).
"""

from __future__ import annotations

import torch
from torch import Tensor

# the student's remaining mass is read as 1 − Σ_{top-k} p_S, which float32 log-probs resolve to about 1e-7: it is
# floored here (as the official code clamps probabilities at 1e-8) so its log stays finite when the sum rounds to 1
_REST_FLOOR = 1e-8


def _student_at(student_logps: Tensor, teacher_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(which of the teacher's ids the student has a row for ``(P, k)``, the student's log-probs there, 0 elsewhere)."""
    inside = teacher_ids < student_logps.shape[-1]
    student = student_logps.gather(-1, torch.where(inside, teacher_ids, 0))
    return inside, torch.where(inside, student, 0.0)


def topk_forward_kl(student_logps: Tensor, teacher_ids: Tensor, teacher_logps: Tensor) -> Tensor:
    """``(P,)`` forward KL(teacher ‖ student) at each position over the teacher's top-k and the remaining bucket."""
    inside, student = _student_at(student_logps, teacher_ids)
    head = torch.where(inside, teacher_logps.exp() * (teacher_logps - student), 0.0).sum(-1)
    # the remaining masses in float64 (cheap at (P, k)); the teacher's may round a hair below 0 or be exactly 0
    teacher_rest = (1 - torch.where(inside, teacher_logps.double().exp(), 0.0).sum(-1)).clamp(min=0.0)
    student_rest = (1 - torch.where(inside, student.double().exp(), 0.0).sum(-1)).clamp(min=_REST_FLOOR)
    rest = torch.xlogy(teacher_rest, teacher_rest) - teacher_rest * student_rest.log()
    # the top-k covers every row of the student (k = V): no bucket, so the KL is exact rather than off by rounding
    has_rest = inside.sum(-1) < student_logps.shape[-1]
    return head + torch.where(has_rest, rest, 0.0).to(head.dtype)


def advantage_loss(student_logps: Tensor, teacher_ids: Tensor, advantage: Tensor) -> Tensor:
    """``(P,)`` ADPA's ``−Σ_a p_S(a) A(a)`` over the teacher's top-k tokens at each position."""
    inside, student = _student_at(student_logps, teacher_ids)
    return -torch.where(inside, student.exp() * advantage, 0.0).sum(-1)
