"""``safealign data build-safety --model M --out FILE``: self-generated safety preference pairs."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="load_model spec (default: the embedded model)"
    )
    parser.add_argument("--out", required=True, help="output JSONL (appended; re-runs skip finished ids)")
    parser.add_argument("--split", default="train", choices=["train", "test", "all"],
                        help="which split of the built-in prompts to answer (default: %(default)s); test holds the "
                             "held-out prompts the demo and the sweep evaluate on, and all includes them; a file "
                             "holds one split")
    parser.add_argument("--harmful-limit", type=_count(0), default=None,
                        help="the first N harmful prompts of the split, in file order (with all: of both together)")
    parser.add_argument("--benign-limit", type=_count(0), default=None,
                        help="the first N benign prompts of the split, in file order (with all: of both together)")
    parser.add_argument("--max-new-tokens", type=_count(1), default=48,
                        help="longest answer generated per prompt, in tokens (default: %(default)s)")
    parser.add_argument("--batch-size", type=_count(1), default=16,
                        help="prompts answered at once (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed that picks each pair's refusal text, and the generation's (default: %(default)s)")
    parser.add_argument("--cut-answers", choices=["keep", "drop", "open"], default="keep",
                        help="a pair whose own answer was cut at --max-new-tokens: keep it as if finished (default, "
                             "as before), drop it, or open it (train that side without the end-of-turn token)")


def _count(low: int):
    """An argparse type: an integer >= ``low``, so a bad value fails at parse time, before the model loads."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    from safealign.pipelines.build_safety import build_from_builtin

    report = build_from_builtin(args.model, args.out, split=None if args.split == "all" else args.split,
                                harmful_limit=args.harmful_limit, benign_limit=args.benign_limit,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
                                cut_answers=args.cut_answers)
    print(report.describe())
    return 0
