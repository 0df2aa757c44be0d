"""``safealign diagnose entanglement --model M --data D [--params ...]``: gradient entanglement per pair.

One forward and two backward passes per pair over the selected parameters; on CPU, ``--params lm_head``
or ``last:N`` is much cheaper than ``all``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from safealign.cli.diagnose import add_common_arguments, emit, header, load_inputs, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--params", default="auto",
                        help="parameters to differentiate: auto (lora if the model has LoRA weights, else all), all, "
                             "trainable, lora, lm_head, last:N (last N blocks)")
    parser.add_argument("--loss-weights", type=float, nargs=2, default=(1.0, 1.0), metavar=("A", "B"),
                        help="weights a, b of the loss on log π(chosen) and log π(rejected) for the weighted condition")


def run(args: argparse.Namespace) -> int:
    from safealign.diagnostics import measure_entanglement

    started = time.perf_counter()
    inputs = load_inputs(args)
    report = measure_entanglement(inputs.model, inputs.encoded, inputs.collate, params=args.params,
                                  weights=tuple(args.loss_weights), chunk_size=args.chunk_size)
    summary = report.summary()
    result = {"diagnostic": "entanglement", **header(args, inputs, started), "summary": summary}
    pairs = [{"row": inputs.pairs[i].row, **row} for i, row in enumerate(report.rows())]
    emit(args, "entanglement", result, pairs, _text(result, pairs, args.show))
    return 0


def _text(result: dict[str, Any], pairs: list[dict[str, Any]], show: int) -> str:
    s = result["summary"]
    a, b = s["weights"]
    figures = table(("figure", "mean", "median"), [
        ("⟨g_w, g_l⟩", s["dot"]["mean"], s["dot"]["median"]),
        ("cos(g_w, g_l)", s["cosine"]["mean"], s["cosine"]["median"]),
        ("‖g_w‖ (chosen)", s["chosen_norm"]["mean"], s["chosen_norm"]["median"]),
        ("‖g_l‖ (rejected)", s["rejected_norm"]["mean"], s["rejected_norm"]["median"]),
        ("ratio ⟨g_w,g_l⟩ / min(‖g_w‖², ‖g_l‖²)", s["ratio"]["mean"], s["ratio"]["median"]),
    ])
    shares = table(("share of pairs", "value"), [
        ("chosen log-prob falls (⟨g_w,g_l⟩ > ‖g_w‖²)", s["share_chosen_falls"]),
        ("rejected log-prob rises (⟨g_w,g_l⟩ > ‖g_l‖²)", s["share_rejected_rises"]),
        ("ratio > 1 (one side moves the wrong way)", s["share_ratio_above_1"]),
        (f"chosen falls, weighted (⟨g_w,g_l⟩ ≥ (a/b)‖g_w‖², a={a:g}, b={b:g})", s["share_chosen_falls_weighted"]),
        ("rejected rises, weighted (⟨g_w,g_l⟩ ≥ (b/a)‖g_l‖²)", s["share_rejected_rises_weighted"]),
    ])
    per_pair = table(("row", "⟨g_w,g_l⟩", "cos", "‖g_w‖", "‖g_l‖", "ratio", "chosen rises", "rejected falls"),
                     [(p["row"], p["dot"], p["cosine"], p["chosen_norm"], p["rejected_norm"], p["ratio"],
                       p["chosen_rises"], p["rejected_falls"]) for p in pairs[:show]])
    head = (f"gradient entanglement: {result['pairs']} pairs of {result['data']} ({result['dropped']} rows dropped)\n"
            f"model: {result['model']}   parameters: {s['params']} ({s['parameter_count']:,} scalars)\n")
    return (head + "\n" + figures + "\n\n" + shares + f"\n\nfirst {min(show, len(pairs))} pairs:\n" + per_pair
            + f"\n\nwall time: {result['wall_seconds']:.1f} s")
