"""Benchmark: the log-prob head alone — naive full log-softmax vs chunk checkpointing vs the fused function.

Given final hidden states ``(N, T, H)`` of which a share ``--response`` of positions are response tokens,
compute the summed response log-probs and their gradient w.r.t. states and head weight, three ways:

- ``naive``: ``lm_head`` over all ``N·T`` positions, float32 log-softmax, gather (``logps: naive``);
- ``checkpoint``: response positions only, chunks of ``--chunk`` recomputed through ``torch.utils.checkpoint``
  (what ``logps: fused`` does for heads that are not a plain ``nn.Linear``);
- ``fused``: response positions only, ``_FusedHeadLogps`` (``logps: fused`` for a plain linear head).

Prints forward+backward time (process CPU seconds on CPU) and peak memory above the start (CUDA allocator, or
RSS on CPU), medians over ``--reps``. Shapes default to SmolLM2-135M's head (H 576, V 49152).

  python bench/logps_head.py --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import PeakMemory, sync  # noqa: E402

from safealign.train.logps import _FusedHeadLogps  # noqa: E402


def naive(hidden, weight, ids, mask, chunk):
    logits = (hidden[:, :-1] @ weight.T).float()  # (N, T-1, V)
    picked = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (picked * mask[:, 1:]).sum()


def _chunk_logps(states, weight, targets):
    logits = (states @ weight.T).float()
    return (logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)).sum()


def checkpointed(hidden, weight, ids, mask, chunk):
    rows, cols = mask[:, 1:].bool().nonzero(as_tuple=True)
    states, targets = hidden[rows, cols], ids[rows, cols + 1]
    return sum(checkpoint(partial(_chunk_logps, states[s : s + chunk], weight, targets[s : s + chunk]),
                          use_reentrant=False) for s in range(0, targets.shape[0], chunk))


def fused(hidden, weight, ids, mask, chunk):
    rows, cols = mask[:, 1:].bool().nonzero(as_tuple=True)
    return _FusedHeadLogps.apply(hidden[rows, cols], weight, None, ids[rows, cols + 1], chunk).sum()


METHODS = {"naive": naive, "checkpoint": checkpointed, "fused": fused}


def measure(method, args, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.randn(args.rows, args.seq, args.hidden, generator=g).to(device, dtype).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden, generator=g) * 0.02).to(device, dtype).requires_grad_()
    ids = torch.randint(0, args.vocab, (args.rows, args.seq), generator=g).to(device)
    mask = torch.zeros(args.rows, args.seq, dtype=torch.long, device=device)
    mask[:, int(args.seq * (1 - args.response)) :] = 1  # the last share of each row is the response
    with PeakMemory(device) as memory:
        sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        METHODS[method](hidden, weight, ids, mask, args.chunk).backward()
        sync(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return (cpu if device.type == "cpu" else wall), memory.peak_bytes, hidden.grad, weight.grad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--seq", type=int, default=160)
    p.add_argument("--response", type=float, default=0.5, help="share of positions that are response tokens")
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    results, grads = {}, {}
    for rep in range(args.reps):
        for method in METHODS if rep % 2 == 0 else list(METHODS)[::-1]:
            seconds, peak, g_hidden, g_weight = measure(method, args, device, dtype)
            results.setdefault(method, []).append((seconds, peak))
            grads[method] = (g_hidden, g_weight)
    clock = "CPU-s" if device.type == "cpu" else "s"
    print(f"rows {args.rows} x seq {args.seq}, response share {args.response}, H {args.hidden}, V {args.vocab}, "
          f"chunk {args.chunk}, {dtype}, device {device}, threads {torch.get_num_threads()}, {args.reps} reps (median)")
    print()
    print(f"| method | fwd+bwd {clock} | peak mem MiB | time ÷ naive | mem ÷ naive | max abs Δgrad vs naive |")
    print("|---|---|---|---|---|---|")
    base_t = statistics.median(t for t, _ in results["naive"])
    base_m = statistics.median(m for _, m in results["naive"])
    for method, runs in results.items():
        t, m = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        diff = max((a - b).abs().max().item() for a, b in zip(grads[method], grads["naive"]))
        print(f"| {method} | {t:.3f} | {m / 2**20:.0f} | {t / base_t:.2f} | {m / max(base_m, 1):.2f} | {diff:.1e} |")
    print()
    print("command: python bench/logps_head.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
