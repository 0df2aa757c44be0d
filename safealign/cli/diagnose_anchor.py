"""``safealign diagnose anchor --model M --data D [--prefix NAME]``: the E-transform's anchor gap.

Reference log-probs of chosen and rejected on harmful pairs, with and without the safety prefix; see
:mod:`safealign.diagnostics.anchor`. Mark the data harmful with ``--harmful`` when it has no column.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from safealign.cli.diagnose import add_common_arguments, emit, header, load_inputs, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--prefix", default="community_guidelines",
                        help="safety prefix: responsible, wellbeing, safety_legality, community_guidelines "
                             "(default; the paper's headline prefix) or your own text")
    parser.add_argument("--beta", type=float, default=0.1, help="β for the E-DPO logit shift −β·gap (default 0.1)")


def run(args: argparse.Namespace) -> int:
    from safealign.data import build_transform
    from safealign.diagnostics import measure_anchor_gap

    started = time.perf_counter()
    transform = build_transform("safety_prefix", prefix=args.prefix)
    inputs = load_inputs(args, transform=transform)
    gap = measure_anchor_gap(inputs.model, inputs.encoded, batch_size=args.batch_size,
                             chunk_size=args.chunk_size)
    result = {"diagnostic": "anchor", **header(args, inputs, started, prefix=transform.prefix),
              "summary": gap.summary(beta=args.beta)}
    pairs = [{"row": inputs.pairs[row["index"]].row, **row} for row in gap.pairs()]
    emit(args, "anchor", result, pairs, _text(result, pairs, args.show))
    return 0


def _text(result: dict[str, Any], pairs: list[dict[str, Any]], show: int) -> str:
    s = result["summary"]
    figures = table(("figure", "value"), [
        ("harmful pairs (prompt changed by the prefix)", f"{s['harmful_pairs']} ({s['transformed_pairs']})"),
        ("Δchosen = log πref(y_w|x_s) − log πref(y_w|x), mean", s["chosen_shift_mean"]),
        ("Δrejected, mean", s["rejected_shift_mean"]),
        ("anchor gap Δchosen − Δrejected, mean", s["gap_mean"]),
        ("anchor gap, median", s["gap_median"]),
        ("share of pairs with a positive gap", s["gap_share_positive"]),
        (f"E-DPO − DPO starting logit, −β·gap (β={s['beta']:g})", s["edpo_logit_shift_mean"]),
    ])
    per_pair = table(("row", "Δchosen", "Δrejected", "gap"),
                     [(p["row"], p["chosen_shift"], p["rejected_shift"], p["gap"]) for p in pairs[:show]])
    head = (f"anchor gap: {result['pairs']} pairs of {result['data']} ({result['dropped']} rows dropped)\n"
            f"model: {result['model']}   prefix: {result['prefix']!r}\n")
    return (head + "\n" + figures + f"\n\nfirst {min(show, len(pairs))} harmful pairs:\n" + per_pair
            + f"\n\nwall time: {result['wall_seconds']:.1f} s")
