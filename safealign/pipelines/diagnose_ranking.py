"""``safealign diagnose ranking``: ranking accuracy, its idealized value and pair difficulty (arXiv 2405.19534).

The reference is ``ref`` when given, else the model's base weights when ``model`` is a LoRA adapter (a
trained run's ``final/``), else the model itself (then R* describes what a DPO run starting from it could
reach, and "fixed by the model" is not reported). Scoring a multi-head model's heads (``heads``) needs a reference
apart from them: ``ref`` or an adapter's base; a full model without ``ref`` is refused (it holds no copy of its
starting model, and as its own reference every pair's DPO loss would be log 2).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Optional

from safealign.errors import UserError
from safealign.pipelines.diagnose import DiagnoseConfig, Diagnosis, Inputs, finish, header, load_inputs, load_model

SELF_REFERENCE_KEYS = ("reference_misranked", "fixed", "fixed_share", "reference_ranked", "broken", "broken_share")


@dataclass
class RankingConfig(DiagnoseConfig):
    ref: Optional[str] = None  # reference model spec (default: the adapter's base, else the model)
    beta: float = 0.1  # DPO β for R*, the difficulty threshold and the loss
    epsilon: float = 0.1  # rater noise: α = 1 − ε without an agreement column or for unanimous raters (0 → ε)
    alpha_column: str = "alpha"  # share of raters preferring chosen, used when the data has it
    prefix: Optional[str] = None  # score the reference on safety-prefixed harmful prompts (E-DPO's reference)
    # a multi-head (MAH-DPO) model scored with Σ_k w_k·logits_k (safealign/models/heads.py); the reference is --ref
    # or, for a LoRA adapter, its base (the starting model, starting head); a full model needs --ref. None: the
    # model's own head
    heads: Optional[list[float]] = None


def run_ranking(config: RankingConfig) -> Diagnosis:
    from safealign.diagnostics import ranking_report, score_pairs
    from safealign.pipelines.paired_margin import prompt_hash
    from safealign.types import PairLogps

    started = time.perf_counter()
    transform = _transform(config.prefix)
    inputs = load_inputs(config, transform=transform)
    if config.heads is not None and not config.ref and not hasattr(inputs.model, "peft_config"):
        raise UserError(f"--heads on {config.model}: a full model (not a LoRA adapter) holds no copy of the model it "
                        "started from, and scored as its own reference every pair's DPO loss would be log 2; pass "
                        "the starting model with --ref")
    with _heads(inputs.model, config.heads):
        policy = score_pairs(inputs.model, inputs.encoded, inputs.collate, batch_size=config.batch_size,
                             chunk_size=config.chunk_size)
    ref_table, ref_desc = _reference(config, inputs, policy, transform)
    alpha, alpha_desc = _alpha(config, inputs)
    x = PairLogps(policy.chosen, policy.rejected, policy.chosen_tokens, policy.rejected_tokens,
                  ref_chosen=ref_table[:, 0], ref_rejected=ref_table[:, 1])
    report = ranking_report(x, beta=config.beta, alpha=alpha, epsilon=config.epsilon)
    summary = report.summary()
    if ref_desc.startswith("the model itself"):
        for key in SELF_REFERENCE_KEYS:
            summary.pop(key)
    names = _head_names(inputs.model, config.heads)
    result = {"diagnostic": "ranking", **header(config, inputs, started, reference=ref_desc, alpha=alpha_desc,
                                                 prefix=config.prefix, heads=config.heads, **names), "summary": summary}
    # the flag and a prompt hash let paired-margin split and match rankings by the pairs they scored
    pairs = [{"row": inputs.pairs[i].row, "harmful": inputs.pairs[i].harmful,
              "prompt_hash": prompt_hash(inputs.pairs[i]), **row} for i, row in enumerate(report.pairs())]
    return finish(config, Diagnosis("ranking", result, pairs))


def _heads(model: Any, weights: Optional[list[float]]):
    if weights is None:
        return contextlib.nullcontext()
    from safealign.models.heads import mixed_heads

    return mixed_heads(model, weights)


def _head_names(model: Any, weights: Optional[list[float]]) -> dict[str, Any]:
    """``head_attributes``: the attribute each head was trained on, head 0 first, as its training saved them (None
    for heads saved without names); nothing when the model's own head scores alone."""
    if weights is None:
        return {}
    from safealign.models.heads import head_attributes

    return {"head_attributes": head_attributes(model)}


def _transform(prefix: str | None):
    if prefix is None:
        return None
    from safealign.data import build_transform

    return build_transform("safety_prefix", prefix=prefix)


def _reference(config: RankingConfig, inputs: Inputs, policy: Any, transform: Any):
    """Reference table ``(N, 2)`` and a description of where it came from.

    A reference computed from a model goes through the training's on-disk reference cache (same key:
    base-weight fingerprint + reference-view token ids), so diagnosing several checkpoints against one
    reference, or a run against the reference it trained with, scores the reference once.
    """
    import torch

    from safealign.models.embedded import cache_root
    from safealign.train.reference import load_or_compute_reference

    def cached(model: Any, description: str, *, with_adapter: bool = False):
        cache = load_or_compute_reference(model, inputs.encoded, cache_root() / "reference",
                                          batch_size=config.batch_size, chunk_size=config.chunk_size,
                                          with_adapter=with_adapter)
        return cache.table, f"{description}; {'reused' if cache.reused else 'cached'} at {cache.path}"

    if config.ref:
        ref_model, ref_tokenizer = load_model(config, config.ref)
        if ref_tokenizer.get_vocab() != inputs.tokenizer.get_vocab():
            raise UserError(f"--ref {config.ref} uses a different tokenizer than --model {config.model}; "
                            "the two must score the same token ids")
        return cached(ref_model, f"--ref {config.ref}", with_adapter=True)  # an adapter folder: scored with it
    if hasattr(inputs.model, "peft_config"):
        return cached(inputs.model, "base model (adapter disabled)")
    if transform is not None:
        return cached(inputs.model, "the model itself")
    return torch.stack([policy.chosen, policy.rejected], dim=1), "the model itself"


def _alpha(config: RankingConfig, inputs: Inputs):
    """Per-pair rater agreement from ``alpha_column`` when the data has it, else None (α = 1 − ε)."""
    from safealign.data.sources import read_rows

    column = config.alpha_column
    fallback = f"1 - epsilon = {1 - config.epsilon:g} (no '{column}' column)"
    if not column:
        return None, fallback
    values = {row: record.get(column) for row, record in read_rows(config.data, split=config.split,
                                                                      limit=config.limit)}
    if all(values.get(p.row) is None for p in inputs.pairs):
        return None, fallback
    alpha = []
    for p in inputs.pairs:
        value = values.get(p.row)
        try:
            alpha.append(1.0 if value is None else float(value))
        except (TypeError, ValueError):
            raise UserError(f"{config.data} row {p.row}: column {column!r} = {value!r} is not a number") from None
    return alpha, (f"column '{column}' (missing values: 1; unanimous 1 and 0 as {1 - config.epsilon:g} and "
                   f"{config.epsilon:g})")
