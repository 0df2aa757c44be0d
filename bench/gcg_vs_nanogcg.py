"""Benchmark: safealign's GCG vs nanoGCG (PyPI ``nanogcg``) on the same model, behaviors, steps, width.

Reports, per behavior, the best target loss after N steps and seconds per step for both, and the
ratios ours/nanogcg. Both best suffixes are also re-scored with one loss function (ours) so that a
difference in how the two tools tokenize the prompt cannot hide in the numbers.

nanogcg is a benchmark-only dependency (never a safealign requirement); on transformers 5 install it
with ``pip install --no-deps nanogcg==0.3.0 scipy`` and it needs ``use_prefix_cache=False``.

  python bench/gcg_vs_nanogcg.py --model smollm2-135m-instruct --steps 5 --search-width 64 --topk 64 -n 2
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
from pathlib import Path

import torch

from safealign.data.behaviors import behavior_prompt, load_behaviors
from safealign.eval.attacks import AttackContext
from safealign.eval.attacks.gcg import GCGAttack, GCGConfig
from safealign.eval.backends.hf import HFChatModel
from safealign.models.load import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_ours(attack: GCGAttack, behavior) -> tuple[float, list[int], float]:
    result = attack.optimize(behavior)
    return result.loss, result.suffix_ids, result.seconds / max(1, result.steps)


def run_nanogcg(model, tokenizer, behavior, args) -> tuple[float, str, float]:
    import nanogcg

    # nanogcg strips every occurrence of bos_token from the chat template; for ChatML models whose bos
    # is <|im_start|> that would break the prompt, so give it a copy without a bos token.
    tok = copy.deepcopy(tokenizer)
    tok.bos_token = None
    config = nanogcg.GCGConfig(num_steps=args.steps, search_width=args.search_width, topk=args.topk,
                               optim_str_init=init_string(args.suffix_length), seed=args.seed,
                               use_prefix_cache=False, verbosity="ERROR")  # fmt: skip
    messages = [{"role": "user", "content": behavior_prompt(behavior) + " {optim_str}"}]
    start = time.perf_counter()
    result = nanogcg.run(model, tok, messages, behavior.target, config)
    return result.best_loss, result.best_string, (time.perf_counter() - start) / args.steps


def init_string(length: int) -> str:
    return " ".join(["x"] * length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--search-width", type=int, default=64)
    parser.add_argument("--topk", type=int, default=64)
    parser.add_argument("--suffix-length", type=int, default=20)
    parser.add_argument("-n", "--behaviors", type=int, default=2, help="first N AdvBench behaviors")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model)
    behaviors = load_behaviors(args.data / "advbench_behaviors.csv", targets=args.data / "advbench_targets.json")
    config = GCGConfig(steps=args.steps, search_width=args.search_width, topk=args.topk,
                       suffix_init=init_string(args.suffix_length), early_stop_every=0, seed=args.seed)  # fmt: skip
    attack = GCGAttack(config, AttackContext(target=HFChatModel(model, tokenizer), model=model, tokenizer=tokenizer))

    rows = []
    for behavior in behaviors[: args.behaviors]:
        initial = attack.target_loss(behavior, attack._initial_ids().tolist())
        ours_loss, ours_ids, ours_s = run_ours(attack, behavior)
        nano_loss, nano_string, nano_s = run_nanogcg(model, tokenizer, behavior, args)
        nano_rescored = attack.target_loss(behavior, tokenizer(nano_string, add_special_tokens=False)["input_ids"])
        rows.append((behavior.id, initial, ours_loss, nano_loss, nano_rescored, ours_s, nano_s))
    print_table(rows, args)


def print_table(rows, args) -> None:
    print(f"model={args.model} steps={args.steps} search_width={args.search_width} topk={args.topk} "
          f"suffix_length={args.suffix_length} threads={args.threads} device=cpu")  # fmt: skip
    head = ("| behavior | initial loss | ours loss | nanogcg loss | nanogcg suffix, our loss fn | loss ratio ours/nano "
            "| ours s/step | nanogcg s/step | time ratio ours/nano |")  # fmt: skip
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for bid, init, ol, nl, nr, os_, ns in rows:
        print(f"| {bid} | {init:.3f} | {ol:.3f} | {nl:.3f} | {nr:.3f} | {ol / nl:.3f} "
              f"| {os_:.2f} | {ns:.2f} | {os_ / ns:.2f} |")
    mean = statistics.fmean
    print(f"| mean | {mean(r[1] for r in rows):.3f} | {mean(r[2] for r in rows):.3f} | {mean(r[3] for r in rows):.3f} "
          f"| {mean(r[4] for r in rows):.3f} | {mean(r[2] / r[3] for r in rows):.3f} | {mean(r[5] for r in rows):.2f} "
          f"| {mean(r[6] for r in rows):.2f} | {mean(r[5] / r[6] for r in rows):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
