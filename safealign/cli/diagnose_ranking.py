"""``safealign diagnose ranking --model M --data D [--ref R] [--beta B]``: ranking accuracy (arXiv 2405.19534).

The reference is ``--ref`` when given, else the model's base weights when ``--model`` is a LoRA adapter
(a trained run's ``final/``), else the model itself (then R* describes what a DPO run starting from it
could reach, and "fixed by the model" is not reported).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from safealign.cli.diagnose import Inputs, add_common_arguments, emit, header, load_inputs, load_model, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--ref", default=None, help="reference model spec (default: the adapter's base, else the model)"
    )
    parser.add_argument(
        "--beta", type=float, default=0.1, help="DPO β for R*, difficulty threshold and loss (default 0.1)"
    )
    parser.add_argument("--epsilon", type=float, default=0.1,
                        help="rater noise: α = 1 − ε where no agreement column exists; α clipped to [ε, 1 − ε] "
                        "(default 0.1)")
    parser.add_argument("--alpha-column", default="alpha",
                        help="column with the share of raters preferring chosen (default 'alpha'; used when present)")
    parser.add_argument("--prefix", default=None,
                        help="score the reference on safety-prefixed prompts of harmful pairs (E-DPO's reference): "
                             "a built-in prefix name or text")


def run(args: argparse.Namespace) -> int:
    from safealign.diagnostics import ranking_report, score_pairs
    from safealign.types import PairLogps

    started = time.perf_counter()
    transform = _transform(args.prefix)
    inputs = load_inputs(args, transform=transform)
    policy = score_pairs(inputs.model, inputs.encoded, inputs.collate, batch_size=args.batch_size,
                         chunk_size=args.chunk_size)
    ref_table, ref_desc = _reference(args, inputs, policy, transform)
    alpha, alpha_desc = _alpha(args, inputs)
    x = PairLogps(policy.chosen, policy.rejected, policy.chosen_tokens, policy.rejected_tokens,
                  ref_chosen=ref_table[:, 0], ref_rejected=ref_table[:, 1])
    report = ranking_report(x, beta=args.beta, alpha=alpha, epsilon=args.epsilon)
    summary = report.summary()
    if ref_desc.startswith("the model itself"):
        for key in ("reference_misranked", "fixed", "fixed_share", "reference_ranked", "broken", "broken_share"):
            summary.pop(key)
    result = {"diagnostic": "ranking", **header(args, inputs, started, reference=ref_desc, alpha=alpha_desc,
                                                 prefix=args.prefix), "summary": summary}
    pairs = [{"row": inputs.pairs[i].row, **row} for i, row in enumerate(report.pairs())]
    emit(args, "ranking", result, pairs, _text(result, pairs, args.show))
    return 0


def _transform(prefix: str | None):
    if prefix is None:
        return None
    from safealign.data import build_transform

    return build_transform("safety_prefix", prefix=prefix)


def _reference(args: argparse.Namespace, inputs: Inputs, policy: Any, transform: Any):
    """Reference table ``(N, 2)`` and a description of where it came from.

    A reference computed from a model goes through the training's on-disk reference cache (same key:
    base-weight fingerprint + reference-view token ids), so diagnosing several checkpoints against one
    reference, or a run against the reference it trained with, scores the reference once.
    """
    import torch

    from safealign.models.embedded import cache_root
    from safealign.train.reference import load_or_compute_reference

    def cached(model: Any, description: str):
        cache = load_or_compute_reference(model, inputs.encoded, cache_root() / "reference",
                                          batch_size=args.batch_size, chunk_size=args.chunk_size)
        return cache.table, f"{description}; {'reused' if cache.reused else 'cached'} at {cache.path}"

    if args.ref:
        ref_model, ref_tokenizer = load_model(args, args.ref)
        if ref_tokenizer.get_vocab() != inputs.tokenizer.get_vocab():
            raise ValueError(f"--ref {args.ref} uses a different tokenizer than --model {args.model}; "
                             "the two must score the same token ids")
        return cached(ref_model, f"--ref {args.ref}")
    if hasattr(inputs.model, "peft_config"):
        return cached(inputs.model, "base model (adapter disabled)")
    if transform is not None:
        return cached(inputs.model, "the model itself")
    return torch.stack([policy.chosen, policy.rejected], dim=1), "the model itself"


def _alpha(args: argparse.Namespace, inputs: Inputs):
    """Per-pair rater agreement from ``--alpha-column`` when the data has it, else None (α = 1 − ε)."""
    from safealign.data.sources import read_rows

    fallback = f"1 - epsilon = {1 - args.epsilon:g} (no '{args.alpha_column}' column)"
    if not args.alpha_column:
        return None, fallback
    values = {
        row: record.get(args.alpha_column) for row, record in read_rows(args.data, split=args.split, limit=args.limit)
    }
    if all(values.get(p.row) is None for p in inputs.pairs):
        return None, fallback
    alpha = []
    for p in inputs.pairs:
        value = values.get(p.row)
        try:
            alpha.append(1.0 if value is None else float(value))
        except (TypeError, ValueError):
            raise ValueError(
                f"{args.data} row {p.row}: column {args.alpha_column!r} = {value!r} is not a number"
            ) from None
    return (
        alpha,
        f"column '{args.alpha_column}' (missing values: 1), clipped to [{args.epsilon:g}, {1 - args.epsilon:g}]",
    )


def _text(result: dict[str, Any], pairs: list[dict[str, Any]], show: int) -> str:
    s = result["summary"]
    acc, ref_acc = s["ranking_accuracy"], s.get("reference_ranking_accuracy", {})
    rows: list[tuple[str, Any]] = [
        ("ranking accuracy, summed log-probs", acc["summed"]),
        ("ranking accuracy, per-token log-probs", acc["normalized"]),
        ("reference ranking accuracy, summed", ref_acc.get("summed")),
        ("reference ranking accuracy, per-token", ref_acc.get("normalized")),
        (f"idealized ranking accuracy R* (β={s['beta']:g}, mean α={s.get('alpha_mean', 0):.3g})",
         s.get("idealized_ranking_accuracy")),
        ("difficulty c = rr − rc: mean", s.get("difficulty", {}).get("mean")),
        ("difficulty c: median", s.get("difficulty", {}).get("median")),
        ("share of pairs the reference mis-ranks (c > 0)", s.get("difficulty", {}).get("share_positive")),
        ("mean DPO loss vs reference", s.get("dpo_loss_mean")),
    ]
    if "fixed" in s:
        rows.append(("reference mis-ranked pairs the model fixed", f"{s['fixed']} / {s['reference_misranked']}"
                     + (f" ({s['fixed_share']:.1%})" if s["fixed_share"] is not None else "")))
        rows.append(("reference-correct pairs the model broke", f"{s['broken']} / {s['reference_ranked']}"))
    head = (f"ranking: {result['pairs']} pairs of {result['data']} ({result['dropped']} rows dropped)\n"
            f"model: {result['model']}   reference: {result['reference']}   α: {result['alpha']}\n")
    per_pair = table(("row", "pc", "pr", "ok", "rc", "rr", "c", "dpo loss", "≤ softplus(−βc)", "R* ok"),
                     [(p["row"], p["chosen_logps"], p["rejected_logps"], p["correct"], p.get("ref_chosen_logps"),
                       p.get("ref_rejected_logps"), p.get("difficulty"), p.get("dpo_loss"), p.get("dpo_loss_threshold"),
                       p.get("idealized_correct")) for p in pairs[:show]])
    return (head + "\n" + table(("figure", "value"), rows) + f"\n\nfirst {min(show, len(pairs))} pairs:\n" + per_pair
            + f"\n\nwall time: {result['wall_seconds']:.1f} s")
