"""DCKD and ADPA objectives: distil a DPO teacher into a student through cached top-k distributions (Gao, Wan,
Guo, Quan, Wang, "Advantage-Guided Distillation for Preference Alignment in Small Language Models", ICLR 2025,
arXiv 2502.17927; docs/seed-methods.md).

Data: preference pairs. For ADPA the rejected slot holds the student's own samples (the demo's safety pairs do
on harmful rows, whose rejected side is the model's own answer; a benign row's is a canned refusal) and the
chosen slot the reference response of the ``sft_on_chosen`` term. The teacher's distributions are computed once
before training and cached (safealign/train/teacher.py); the teachers are then freed, so they never sit in memory
beside the training.
"""

from __future__ import annotations

import gc
from typing import Any, Optional

from torch import nn

from safealign.data import PreferenceCollator
from safealign.train.distill import adpa_terms, dckd_terms
from safealign.train.objectives.base import ObjectiveContext, ObjectiveOutput, register_objective, require
from safealign.train.objectives.seed_data import ObjectiveData, SeedObjective, encode_pairs, parse_pairs
from safealign.train.reference import check_same_tokenizer
from safealign.train.teacher import TeacherCollator, load_or_compute_teacher

PAPER = "Gao et al. 2025, Advantage-Guided Distillation for Preference Alignment in Small LMs, arXiv:2502.17927"


class _Distill(SeedObjective):
    data_layout = "preference pairs (prompt, chosen, rejected)"
    needs_reference_teacher = False
    reference_role = "the teacher (params.teacher, and params.teacher_reference for ADPA) plays that part"

    def _check_common(self, name: str, teacher: Optional[str], top_k: int, sft_on_chosen: float) -> None:
        require(bool(teacher), name, "params.teacher must name the teacher model (a DPO-trained model or adapter "
                                     "folder, or any load_model spec)")
        require(top_k >= 1, name, f"top_k must be >= 1, got {top_k}")
        require(sft_on_chosen >= 0, name, f"sft_on_chosen must be >= 0, got {sft_on_chosen}")

    def load_rows(self, config):
        return parse_pairs(config, self.name)

    def setup(self, config, model, tokenizer, rows: list[Any], device) -> ObjectiveData:
        from safealign.models import load_model
        from safealign.models.embedded import cache_root

        encoded, report = encode_pairs(config, tokenizer, rows)
        dtype = next(model.parameters()).dtype
        teacher, teacher_tokenizer = load_model(self.teacher, device=device, dtype=dtype,
                                                trust_remote_code=config.trust_remote_code)
        # distillation compares distributions over token ids: the teachers must share the student's tokenizer; more
        # output rows (a padded vocabulary) pass, their probability folds into the remaining bucket
        check_same_tokenizer(f"objective {self.name!r}: params.teacher {self.teacher!r}", teacher, teacher_tokenizer,
                             model, tokenizer, larger_output=True)
        reference = None
        if self.needs_reference_teacher:
            reference, reference_tokenizer = load_model(self.teacher_reference, device=device, dtype=dtype,
                                                        trust_remote_code=config.trust_remote_code)
            check_same_tokenizer(f"objective {self.name!r}: params.teacher_reference {self.teacher_reference!r}",
                                 reference, reference_tokenizer, model, tokenizer, larger_output=True)
        cache_dir = config.reference.cache_dir or str(cache_root() / "teacher")
        cache = load_or_compute_teacher(teacher, encoded, cache_dir, self.top_k, reference=reference,
                                        batch_size=config.reference.batch_size,
                                        describe={"teacher": self.teacher, "reference": self.teacher_reference})
        del teacher, reference
        gc.collect()
        return ObjectiveData(encoded, TeacherCollator(PreferenceCollator(tokenizer.pad_token_id), cache.table), report,
                             describe=cache.describe())


@register_objective("dckd")
class DckdObjective(_Distill):
    """DCKD: forward KL to the DPO teacher's top-k on chosen and rejected prefixes (+ optional SFT on chosen)."""

    paper = PAPER
    teacher_reference = None

    def __init__(self, *, teacher: Optional[str] = None, top_k: int = 16, chosen_weight: float = 1.0,
                 rejected_weight: float = 1.0, sft_on_chosen: float = 0.0) -> None:
        self.teacher, self.top_k, self.sft_on_chosen = teacher, top_k, sft_on_chosen
        self.chosen_weight, self.rejected_weight = chosen_weight, rejected_weight

    def load_rows(self, config):
        self._check_common("dckd", self.teacher, self.top_k, self.sft_on_chosen)
        require(self.chosen_weight >= 0 and self.rejected_weight >= 0, "dckd", "the KL weights must be >= 0")
        return super().load_rows(config)

    def __call__(self, model: nn.Module, batch, ctx: ObjectiveContext) -> ObjectiveOutput:
        t = dckd_terms(model, batch)
        losses = (self.chosen_weight * t["kl_chosen"] + self.rejected_weight * t["kl_rejected"]
                  + self.sft_on_chosen * t["nll_chosen"])
        return ObjectiveOutput(losses.mean(), {f"dckd/{k}": v.detach() for k, v in t.items()})


@register_objective("adpa")
class AdpaObjective(_Distill):
    """ADPA: raise the student's probability of tokens the DPO teacher prefers over its reference, on student
    samples (the rejected slot), + SFT on the chosen response."""

    paper = PAPER
    needs_reference_teacher = True

    def __init__(self, *, teacher: Optional[str] = None, teacher_reference: Optional[str] = None, top_k: int = 16,
                 adpa_weight: float = 1.0, sft_on_chosen: float = 1.0) -> None:
        self.teacher, self.teacher_reference, self.top_k = teacher, teacher_reference, top_k
        self.adpa_weight, self.sft_on_chosen = adpa_weight, sft_on_chosen

    def load_rows(self, config):
        self._check_common("adpa", self.teacher, self.top_k, self.sft_on_chosen)
        require(bool(self.teacher_reference), "adpa", "params.teacher_reference must name the teacher's reference "
                                                      "(the model the teacher was DPO-trained from)")
        require(self.adpa_weight >= 0, "adpa", f"adpa_weight must be >= 0, got {self.adpa_weight}")
        return super().load_rows(config)

    def __call__(self, model: nn.Module, batch, ctx: ObjectiveContext) -> ObjectiveOutput:
        t = adpa_terms(model, batch)
        losses = self.adpa_weight * t["advantage_rejected"] + self.sft_on_chosen * t["nll_chosen"]
        return ObjectiveOutput(losses.mean(), {f"adpa/{k}": v.detach() for k, v in t.items()})
