"""``safealign diagnose entanglement --model M --data D [--params ...]``: gradient entanglement per pair.

One forward and two backward passes per pair over the selected parameters; on CPU, ``--params lm_head``
or ``last:N`` is much cheaper than ``all``.
"""

from __future__ import annotations

import argparse

from safealign.cli.diagnose import adder, add_common_arguments, load, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add = adder(parser)
    add("--params", help="parameters to differentiate: auto (lora if the model has LoRA weights, else all), all, "
                         "trainable, lora, lm_head, last:N (last N blocks)")
    add("--loss-weights", type=float, nargs=2, metavar=("A", "B"),
        help="weights a, b of the loss on log π(chosen) and log π(rejected) for the weighted condition")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.diagnose import EntanglementConfig, run_entanglement

    return report(args, run_entanglement(load(EntanglementConfig, args)))
