"""Alignment diagnostics: gradient entanglement, ranking accuracy, the E-transform anchor gap and its share of
E-DPO's update.

They read the same encoded pairs and models as training (``safealign.data`` / ``safealign.models``) and
score with ``safealign.train.logps`` — the one place logits become log-probs. The gradient-entanglement
measurement lives in ``safealign.train.grads`` (training uses it for its probe and the pairwise-normalised
update, and ``train`` never imports this package); it is re-exported here with the other diagnostics.
"""

from __future__ import annotations

from typing import Any

from safealign.diagnostics.anchor import AnchorGap, measure_anchor_gap
from safealign.diagnostics.e_share import EShare, measure_e_share
from safealign.train.grads import (
    EntanglementReport,
    PairEntanglement,
    measure_entanglement,
    pair_entanglement,
    select_parameters,
    summarize_entanglement,
)
from safealign.diagnostics.ranking import (
    RankingReport,
    difficulty,
    dpo_loss_threshold,
    fixed_by_model,
    idealized_correct,
    ranking_accuracy,
    ranking_report,
    rater_alpha,
)
from safealign.diagnostics.scoring import score_pairs

__all__ = [
    "AnchorGap", "EShare", "EntanglementCallback", "EntanglementReport", "PairEntanglement", "RankingReport",
    "choose_probe", "difficulty", "dpo_loss_threshold", "fixed_by_model", "idealized_correct", "measure_anchor_gap",
    "measure_e_share", "measure_entanglement", "pair_entanglement", "ranking_accuracy", "ranking_report",
    "rater_alpha", "score_pairs", "select_parameters", "summarize_entanglement",
]


def __getattr__(name: str) -> Any:
    # The callback pulls in transformers.Trainer machinery; import it only when asked for.
    if name in ("EntanglementCallback", "choose_probe"):
        from safealign.train import probe

        return getattr(probe, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
