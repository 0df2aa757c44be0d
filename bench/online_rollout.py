"""Benchmark: online rollouts with and without prompt-KV reuse (``generation.reuse_prompt_cache``).

One call of ``safealign.online.rollout.sample`` per case and path: ``prompts`` prompts of random token ids with
lengths uniform in ``[min_len, max_len]`` (left-padded), K samples each, ``max_new_tokens`` new tokens. The
plain path is ``generate(num_return_sequences=K)`` (each prompt pre-filled K times); the reused path pre-fills
each prompt once and repeats its cache K times (safealign/online/prefix_cache.py). Models are random-init
Llamas of a real model's shape with eos disabled, so every completion has exactly ``max_new_tokens`` tokens and
both paths do the same decode work. Both paths draw from the same seed; "same tokens" says whether they
sampled identical completions (expected: float rounding can flip a rare draw, the distribution is the same).

Measured per run: process CPU time (the main measure: the machine may be shared) and wall time of the call,
and peak RSS above the level before it (bench/_measure.py). Paths alternate (plain first, then reused first,
...) over ``--reps``; the table shows medians and ratios plain / reused (> 1: reuse is faster / smaller).

  OMP_NUM_THREADS=1 python bench/online_rollout.py --shapes tiny --cases 2x2 --min-len 8 --max-len 16   # smoke
  OMP_NUM_THREADS=1 nice -n 10 python bench/online_rollout.py --shapes smollm2 --cases 4x4,4x8,8x4,8x8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import PeakMemory  # noqa: E402

# decoder shapes of real models (vocabulary included: the LM head runs on every decode step)
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),  # SmolLM2-135M
    "smollm2-360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                         num_key_value_heads=5, vocab_size=49152, tie_word_embeddings=True),
}
PAD = 0


@dataclass(frozen=True)
class Run:
    cpu_s: float
    wall_s: float
    peak_bytes: int
    completions: tuple


def make_model(shape: str, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(max_position_embeddings=4096, pad_token_id=PAD, bos_token_id=None, eos_token_id=None,
                         **SHAPES[shape])
    model = LlamaForCausalLM(config).to(device).eval()
    model.generation_config.eos_token_id = None  # fixed-length completions: equal decode work on both paths
    model.generation_config.bos_token_id = None
    return model


def make_prompts(n: int, low: int, high: int, vocab: int, seed: int) -> list[tuple[int, ...]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (n,), generator=generator).tolist()
    return [tuple(torch.randint(1, vocab, (length,), generator=generator).tolist()) for length in lengths]


def one_run(model, prompts, k: int, new_tokens: int, reuse: bool, device: str) -> Run:
    from safealign.online.rollout import sample

    tokenizer = SimpleNamespace(pad_token_id=PAD, eos_token_id=None)
    torch.manual_seed(1234)
    with PeakMemory(torch.device(device), interval_s=0.02) as peak:
        wall, cpu = time.perf_counter(), time.process_time()
        out = sample(model, tokenizer, prompts, k, max_new_tokens=new_tokens, temperature=1.0, top_p=1.0, top_k=0,
                     reuse_prompt_cache=reuse)
        if device == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Run(cpu, wall, peak.peak_bytes, tuple(out))


def run_case(model, shape: str, n: int, k: int, args) -> dict:
    prompts = make_prompts(n, args.min_len, args.max_len, SHAPES[shape]["vocab_size"], seed=n * 1000 + k)
    runs: dict[bool, list[Run]] = {False: [], True: []}
    for rep in range(args.reps):
        for reuse in ((False, True) if rep % 2 == 0 else (True, False)):
            runs[reuse].append(one_run(model, prompts, k, args.new_tokens, reuse, args.device))
    med = {reuse: {key: statistics.median(getattr(r, key) for r in rs) for key in ("cpu_s", "wall_s", "peak_bytes")}
           for reuse, rs in runs.items()}
    plain, reused = med[False], med[True]
    return {"shape": shape, "prompts": n, "k": k, "prompt_tokens": sum(map(len, prompts)),
            "mean_len": sum(map(len, prompts)) / n,
            "plain_cpu": plain["cpu_s"], "reuse_cpu": reused["cpu_s"], "cpu_ratio": plain["cpu_s"] / reused["cpu_s"],
            "plain_wall": plain["wall_s"], "reuse_wall": reused["wall_s"],
            "wall_ratio": plain["wall_s"] / reused["wall_s"],
            "plain_mb": plain["peak_bytes"] / 2**20, "reuse_mb": reused["peak_bytes"] / 2**20,
            "same_tokens": runs[False][0].completions == runs[True][0].completions}


def table(rows: list[dict]) -> str:
    head = ("| shape | prompts × K | prompt tokens (mean) | plain CPU-s | reused CPU-s | CPU ratio plain/reused | "
            "plain wall s | reused wall s | wall ratio | plain peak MiB | reused peak MiB | same tokens |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['prompts']} × {r['k']} | {r['prompt_tokens']} ({r['mean_len']:.0f}) | "
                     f"{r['plain_cpu']:.1f} | {r['reuse_cpu']:.1f} | **{r['cpu_ratio']:.2f}** | "
                     f"{r['plain_wall']:.1f} | {r['reuse_wall']:.1f} | {r['wall_ratio']:.2f} | "
                     f"{r['plain_mb']:.0f} | {r['reuse_mb']:.0f} | {'yes' if r['same_tokens'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="smollm2", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--cases", default="4x4,4x8,8x4,8x8", help="comma-separated PROMPTSxK")
    parser.add_argument("--min-len", type=int, default=100)
    parser.add_argument("--max-len", type=int, default=400)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    started, load_before = time.perf_counter(), os.getloadavg()
    rows = []
    for shape in args.shapes.split(","):
        model = make_model(shape, args.device)
        warm = make_prompts(2, 4, 8, SHAPES[shape]["vocab_size"], seed=0)
        for reuse in (False, True):  # first-call costs (allocator, kernels) are paid before timing
            one_run(model, warm, 2, 2, reuse, args.device)
        for case in args.cases.split(","):
            n, k = (int(v) for v in case.lower().split("x"))
            rows.append(run_case(model, shape, n, k, args))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        del model
    load_after = os.getloadavg()
    import transformers

    print(f"\nrandom-init Llama shapes ({args.shapes}), device {args.device}, fp32, prompt lengths uniform in "
          f"[{args.min_len}, {args.max_len}], {args.new_tokens} new tokens (eos off), temperature 1, "
          f"{args.reps} rep(s), medians; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"threads {torch.get_num_threads()}, "
          f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, "
          f"total wall {time.perf_counter() - started:.0f} s\n")
    print(table(rows))
    print("\ncommand: python bench/online_rollout.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return rows


if __name__ == "__main__":
    main()
