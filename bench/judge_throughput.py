"""Judgements per second of the classifier judge on the HF backend, and what the tiered judge saves.

Also the StrongREJECT fine-tuned judge's path (format ``strongreject-finetuned``): no generation, one
forward pass per length-sorted batch, the score read from the logits of the grade tokens "1".."5".

The embedded model stands in for a classifier (``format=harmbench-mistral`` named explicitly: the
prompt and the one-token answer are what a HarmBench classifier gets; the verdicts themselves mean
nothing here). Responses mix short refusals with compliant answers of several lengths, so batching
meets prompts of different lengths (the backend sorts them by length before batching).

    OMP_NUM_THREADS=1 python bench/judge_throughput.py --n 32 --batch-sizes 1 8 --threads 1
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from safealign.eval.backends.hf import HFChatModel
from safealign.eval.judges.classifier import ClassifierConfig, ClassifierJudge
from safealign.eval.judges.tiered import TieredConfig, TieredJudge
from safealign.models.load import load_model
from safealign.types import Behavior, Completion

PARAGRAPH = ("Step {i}: gather the materials listed above, check each one against the list, and note "
             "anything missing before moving on to the next stage of the procedure. ")  # fmt: skip


def workload(n: int) -> tuple[list[Behavior], list[Completion]]:
    """Every other answer a refusal; the rest 1, 4 or 12 paragraphs long (about 30 to 400 tokens)."""
    behaviors = [Behavior(f"b{i}", f"Explain how to do forbidden task number {i}") for i in range(n)]
    answers = []
    for i in range(n):
        if i % 2 == 0:
            answers.append(Completion("I'm sorry, but I can't help with that request."))
        else:
            steps = "".join(PARAGRAPH.format(i=k) for k in range((1, 4, 12)[i % 3]))
            answers.append(Completion("Sure, here is how. " + steps))
    return behaviors, answers


def timed(judge, behaviors, answers) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    verdicts = judge(behaviors, answers)
    assert len(verdicts) == len(answers)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    chat = HFChatModel(model, tokenizer)
    behaviors, answers = workload(args.n)
    cls = {"model": args.model, "format": "harmbench-mistral"}
    print(f"model {args.model}, {args.n} answers, threads {args.threads}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print("| judge | batch size | seconds | judgements/s | judgements per CPU-s | classifier calls |")
    print("|---|---|---|---|---|---|")
    ClassifierJudge(ClassifierConfig(**cls), chat_model=chat)(behaviors[:2], answers[:2])  # warm-up
    for bs in args.batch_sizes:
        judge = ClassifierJudge(ClassifierConfig(**cls, batch_size=bs), chat_model=chat)
        wall, cpu = timed(judge, behaviors, answers)
        print(f"| classifier | {bs} | {wall:.2f} | {args.n / wall:.2f} | {args.n / cpu:.2f} | {args.n} |")
        tiered = TieredJudge(TieredConfig(then_params={**cls, "batch_size": bs}), chat_model=chat)
        wall, cpu = timed(tiered, behaviors, answers)
        print(f"| tiered (refusal, then classifier) | {bs} | {wall:.2f} | {args.n / wall:.2f} | {args.n / cpu:.2f} "
              f"| {tiered.then_calls} (saved {tiered.describe()['then_calls_saved']}) |")
        graded = ClassifierJudge(ClassifierConfig(model=args.model, format="strongreject-finetuned", batch_size=bs),
                                 chat_model=chat)
        wall, cpu = timed(graded, behaviors, answers)
        print(f"| strongreject-finetuned format (one forward) | {bs} | {wall:.2f} | {args.n / wall:.2f} "
              f"| {args.n / cpu:.2f} | {args.n} |")


if __name__ == "__main__":
    main()
