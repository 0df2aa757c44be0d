"""CUT: contrastive unlikelihood training from natural-language judgments (Xu, Cai, Zhang, Lam, Shi, "Reasons to
Reject? Aligning Language Models with Judgments", ACL 2024, arXiv 2312.14591; docs/seed-methods.md).

Data: the ``judgment`` format (prompt, completion, judgment, score; safealign/data/formats.py). Each row is
scored after the plain prompt, each negative also after its judgment view (safealign/data/judgment.py; a
positive needs no judgment); the arithmetic is
:func:`safealign.losses.cut.cut_losses`. No reference model: the judgment view is the contrast.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from safealign.data import PairEncoder
from safealign.data.judgment import JudgmentCollator, encode_judgments, require_judgments
from safealign.errors import UserError
from safealign.train.cut import cut_objective
from safealign.train.objectives.base import ObjectiveContext, ObjectiveOutput, register_objective, require
from safealign.train.objectives.seed_data import ObjectiveData, SeedObjective, parse
from safealign.types import JudgmentExample


@register_objective("cut")
class CutObjective(SeedObjective):
    """CUT: Align-P NLL on positives; Align-N NLL after the judgment and unlikelihood on judged-bad tokens."""

    paper = "Xu et al. 2024, Reasons to Reject? Aligning LMs with Judgments (CUT), arXiv:2312.14591"
    data_layout = "judgment rows: prompt, completion, judgment (negatives), score"
    reference_role = "it has no reference model (the judgment view is the contrast)"

    def __init__(self, *, positive_score: float = 7.0, threshold: float = 1.1, alpha: float = 1.0) -> None:
        require(threshold > 0, "cut", f"threshold is a probability ratio and must be > 0, got {threshold}")
        require(alpha >= 0, "cut", f"alpha weighs the unlikelihood term and must be >= 0, got {alpha}")
        self.positive_score, self.threshold, self.alpha = positive_score, threshold, alpha

    def load_rows(self, config):
        parsed, rows = parse(config, "cut", JudgmentExample, self.data_layout)
        negatives = sum(r.score < self.positive_score for r in rows)
        if negatives == 0:
            raise UserError(f"objective 'cut': every row of {config.data.path} scores >= positive_score="
                            f"{self.positive_score}, so there is no judged-bad response to learn from (that is SFT)")
        try:  # a positive may have no judgment; a negative may not (before any model loads)
            require_judgments(rows, self.positive_score)
        except UserError as e:
            raise UserError(f"objective 'cut': {e}") from None
        return parsed, rows

    def setup(self, config, model, tokenizer, rows: list[Any], device) -> ObjectiveData:
        encoder = PairEncoder(tokenizer, max_length=config.data.max_length,
                              max_prompt_length=config.data.max_prompt_length)
        encoded, report = encode_judgments(encoder, rows, positive_score=self.positive_score)
        if not encoded:
            raise UserError(f"{config.data.path}: every row is too long for data.max_length={config.data.max_length}")
        return ObjectiveData(encoded, JudgmentCollator(tokenizer.pad_token_id), report, describe="none (CUT)")

    def __call__(self, model: nn.Module, batch, ctx: ObjectiveContext) -> ObjectiveOutput:
        out = cut_objective(model, batch, positive_score=self.positive_score, threshold=self.threshold,
                            alpha=self.alpha, chunk_size=ctx.chunk_size)
        return ObjectiveOutput(out.losses.mean(), {"loss/cut": out.losses.detach(), **out.metrics})
