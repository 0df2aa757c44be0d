"""DCKD and ADPA token terms over a teacher's top-k distribution (Gao, Wan, Guo, Quan, Wang, "Advantage-Guided
Distillation for Preference Alignment in Small Language Models", ICLR 2025, arXiv 2502.17927;
docs/seed-methods.md).

Pure: the caller gives, per scored response position, the student's full log-softmax ``(P, V)`` and the
teacher's stored top-k token ids and log-probs ``(P, k)`` (safealign/train/teacher.py).

- **DCKD** (forward KL on a prefix): ``Σ_{a ∈ top-k} p_T(a) (log p_T(a) − log p_S(a))``. The teacher's tail
  outside its top-k is dropped (the official code stores compressed top-k probabilities too); with k = V it
  is the exact KL(p_T ‖ p_S).
- **ADPA** (advantage-weighted student distribution): ``−Σ_{a ∈ top-k} p_S(a) · A(a)`` with the token
  advantage ``A(a) = log π_dpo^T(a|s_t) − log π_ref^T(a|s_t)`` over the DPO teacher's top-k set.
"""

from __future__ import annotations

from torch import Tensor


def topk_forward_kl(student_logps: Tensor, teacher_ids: Tensor, teacher_logps: Tensor) -> Tensor:
    """``(P,)`` truncated forward KL(teacher ‖ student) at each position."""
    student = student_logps.gather(-1, teacher_ids)
    return (teacher_logps.exp() * (teacher_logps - student)).sum(-1)


def advantage_loss(student_logps: Tensor, teacher_ids: Tensor, advantage: Tensor) -> Tensor:
    """``(P,)`` ADPA's ``−Σ_a p_S(a) A(a)`` over the teacher's top-k tokens at each position."""
    return -(student_logps.gather(-1, teacher_ids).exp() * advantage).sum(-1)
