"""Benchmark: one online RLOO step with the sampling policy's log-probs taken from the update's own forward
(the trainer's default wherever exact: one update per batch, whole groups per micro-batch, no dropout) vs a
separate no-grad old-policy forward (the trainer before; what it still does elsewhere). Same random-init model,
prompts, seeds and sampled tokens for both; the first step is warm-up. Prints a table with the ratio.

  OMP_NUM_THREADS=1 python bench/online_step.py --shape smollm2 --steps 3   # the embedded model's shape, CPU
  python bench/online_step.py --shape tiny                                   # seconds, a smoke run
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from online_memory import online, parse_args  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(__doc__.splitlines()[0], argv)
    results = {}
    for name, separate in (("separate old-policy forward", True), ("from the update forward", False)):
        with tempfile.TemporaryDirectory() as tmp:
            peak, times = online(args, Path(tmp), separate_old_forward=separate)
        results[name] = {**times, "peak_mb": peak / 2**20}
    base = results["separate old-policy forward"]
    k = max(2, 2 * args.batch // args.prompts)
    print(f"online RLOO step, {args.shape} shape, {args.device}, {args.prompts} prompts x {k} samples of "
          f"{args.response_len} tokens, mean of steps 2..{args.steps}")
    print("| sampling-policy log-probs | s/step | × separate | generate s | score s | update s | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['time/step']:.2f} | {r['time/step'] / base['time/step']:.2f} | {r['time/generate']:.2f} "
              f"| {r['time/score']:.2f} | {r['time/update']:.2f} | {r['peak_mb']:.0f} |")
    return results


if __name__ == "__main__":
    main()
