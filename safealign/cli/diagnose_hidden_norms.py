"""``safealign diagnose hidden-norms --model M --data D [--layers 9,19]``: how concentrated the residual stream is.

Per layer, on each pair's prompt + response: the first token's norm, the other tokens' median norm, and the
share of the squared norm on the few largest dimensions — what a cosine between hidden states (circuit
breakers' rerouting loss) can and cannot see; see :mod:`safealign.diagnostics.hidden_norms`.
"""

from __future__ import annotations

import argparse

from safealign.cli.diagnose import adder, add_common_arguments, load, report


def _layers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add = adder(parser)
    add(
        "--layers",
        type=_layers,
        help="comma-separated layers l: the residual stream after l blocks, 0 = the embeddings (default: circuit "
        "breakers' target layers)",
    )
    add("--top-k", type=int, help="dimensions whose share of the squared norm is reported (default 3)")
    add("--response", help="chosen or rejected: the response appended to each prompt (default rejected)")


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.diagnose import HiddenNormsConfig, run_hidden_norms

    return report(args, run_hidden_norms(load(HiddenNormsConfig, args)))
