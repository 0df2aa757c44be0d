"""``safealign diagnose ranking --model M --data D [--ref R] [--beta B]``: ranking accuracy (arXiv 2405.19534).

See :mod:`safealign.pipelines.diagnose_ranking` for where the reference comes from.
"""

from __future__ import annotations

import argparse

from safealign.cli.diagnose import adder, add_common_arguments, load, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, ref=True)
    add = adder(parser)
    add("--ref", help="reference model spec (default: the adapter's base, else the model)")
    add("--beta", type=float, help="DPO β for R*, difficulty threshold and loss (default 0.1)")
    add("--epsilon", type=float,
        help="rater noise: α = 1 − ε where no agreement column exists or raters were unanimous (α = 1; "
             "α = 0 becomes ε) (default 0.1)")
    add("--alpha-column", help="column with the share of raters preferring chosen (default 'alpha'; used when present)")
    add("--prefix", help="score the reference on safety-prefixed prompts of harmful pairs (E-DPO's reference): "
                         "a built-in prefix name or text")
    add("--heads", type=lambda text: [float(w) for w in text.split(",")], metavar="W0,W1,...",
        help="a multi-head (MAH-DPO) model: score with the weighted sum of its heads' logits, e.g. 0,1 for head 1 "
             "(against a LoRA adapter's base; a full model needs --ref)")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.diagnose_ranking import RankingConfig, run_ranking

    return report(args, run_ranking(load(RankingConfig, args)))
