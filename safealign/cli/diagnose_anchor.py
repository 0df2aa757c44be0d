"""``safealign diagnose anchor --model M --data D [--prefix NAME]``: the E-transform's anchor gap.

Reference log-probs of chosen and rejected on harmful pairs, with and without the safety prefix; see
:mod:`safealign.diagnostics.anchor`. Mark the data harmful with ``--harmful`` when it has no column.
"""

from __future__ import annotations

import argparse

from safealign.cli.diagnose import adder, add_common_arguments, load, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add = adder(parser)
    add("--prefix", help="safety prefix: responsible, wellbeing, safety_legality, community_guidelines "
                         "(default; the paper's headline prefix) or your own text")
    add("--beta", type=float, help="β for the E-DPO logit shift −β·gap (default 0.1)")
    add("--answer", type=int, help="also answer the first N harmful prompts (greedy) as asked and with the prefix "
                                   "and report the refusal rates: what the E-anchor pulls towards (default 0: off)")
    add("--samples", type=int, help="with --answer: also this many sampled answers (T=1) per prompt and view")
    add("--max-new-tokens", type=int, help="length of those answers (default 48)")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.diagnose import AnchorConfig, run_anchor

    return report(args, run_anchor(load(AnchorConfig, args)))
