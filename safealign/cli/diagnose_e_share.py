"""``safealign diagnose e-share --model M --data D [--adapter DIR] [--beta B] [--nll-weight W]``: how much of
E-DPO's update the E-anchor changes.

Gradients of DPO's and E-DPO's preference terms and of the NLL term on one batch, at step 0 (a fresh LoRA
like the demo's) or at a trained adapter; see :mod:`safealign.diagnostics.e_share`. Mark the data harmful
with ``--harmful`` when it has no column.
"""

from __future__ import annotations

import argparse

from safealign.cli.diagnose import adder, add_common_arguments, load, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add = adder(parser)
    add("--prefix", help="safety prefix: responsible, wellbeing, safety_legality, community_guidelines "
                         "(default; the paper's headline prefix) or your own text")
    add("--beta", type=float, help="β of both preference terms (default 0.1)")
    add("--nll-weight", type=float,
        help="weight W of the NLL term: rpo = DPO + W·NLL(chosen) (default 1; 0 = pure DPO)")
    add("--adapter", metavar="DIR", help="a trained LoRA adapter folder (a run's train/final) on --model: measure "
                                         "at that point of training instead of step 0")
    add("--lora-r", type=int, help="without --adapter: a fresh LoRA of rank r, alpha 2r (default 16, the demo's); "
                                   "0 = no LoRA")
    add("--seed", type=int, help="seed of the fresh LoRA's random A matrices (default 0)")
    add("--params", help="parameters to differentiate: auto (lora if the model has LoRA weights, else all), all, "
                         "trainable, lora, lm_head, last:N")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.diagnose import EShareConfig, run_e_share

    return report(args, run_e_share(load(EShareConfig, args)))
