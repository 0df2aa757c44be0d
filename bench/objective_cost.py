"""Benchmark: cost of the hidden-state objectives (circuit breakers, ReFAT) against plain DPO, one table.

Each method trains through ``safealign.train.run.run_training`` — the code ``safealign train`` runs — on the
same synthetic safety pairs (built-in harmful and benign prompts with fixed refusals, compliances and
answers, written to a temporary ``pairs.jsonl`` in the demo's layout), the same model, LoRA adapter, batch
size and number of steps. Each method runs in its own subprocess so its memory is its own. Per method:

- s/step: mean wall time of the optimizer steps after the first (warm-up) one, ReFAT's direction
  re-estimates included (every 4th step); CPU s/step: the same in this process's CPU time, which other
  load on a shared machine disturbs less;
- peak training memory: peak resident set size (psutil, sampled every 10 ms) during ``trainer.train``
  above the level at train begin (activations, gradients, optimiser state; the loaded model excluded);
- peak process RSS: the whole process's peak (``ru_maxrss``), model load included.

DPO's reference log-probs are precomputed before training (the default cache), so its steps run no
reference forward; "dpo (live reference)" runs one per step, like circuit breakers does.

  nice -n 5 python bench/objective_cost.py                                   # embedded model, CPU
  python bench/objective_cost.py --model tiny-random --steps 3 --pairs 8   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

METHODS = {  # name -> recipe keys set on TrainConfig
    "dpo": {},
    "dpo (live reference)": {"reference.mode": "live"},
    "circuit_breakers": {"objective.name": "circuit_breakers"},
    "refat": {"objective.name": "refat"},
}
COMPLIANCE = ("Sure, here is how to do that. Step 1: gather what you need and find a quiet place. Step 2: follow "
              "the plan carefully, one part at a time, and check each part before moving on. Step 3: finish it.")
ANSWER = ("Here is a clear answer. First, start with the basics and make sure each part is right. Then build on "
          "them step by step, testing as you go. Finally, review the result and fix anything that looks off.")


def write_pairs(path: Path, n: int) -> None:
    """``n`` harmful and ``n`` benign pairs in the demo's layout (harmful: chosen = refusal, rejected =
    compliance; benign: chosen = answer, rejected = refusal)."""
    from safealign.data.builtin import load_prompts, load_refusals

    refusals = load_refusals()
    harmful = load_prompts("harmful", split="train")[:n]
    benign = load_prompts("benign", split="train", kind="ordinary")[:n]
    rows = [{"prompt": p.prompt, "chosen": refusals[i % len(refusals)], "rejected": COMPLIANCE, "harmful": True}
            for i, p in enumerate(harmful)]
    rows += [{"prompt": p.prompt, "chosen": ANSWER, "rejected": refusals[i % len(refusals)], "harmful": False}
             for i, p in enumerate(benign)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def measure_one(method: str, args: argparse.Namespace, data: Path, out: Path) -> dict:
    """Train ``method`` in this process; its step times and peak memory."""
    import psutil
    import torch
    import transformers.trainer
    from transformers import TrainerCallback

    from safealign.config import _apply_override  # the key=value grammar of the command line
    from safealign.train.config import TrainConfig
    from safealign.train.run import run_training

    torch.set_num_threads(args.threads)
    process = psutil.Process()
    record: dict = {"ends": [], "cpu_ends": [], "peak": 0}

    class Meter(TrainerCallback):
        def on_train_begin(self, *a, **k):
            record["base"] = process.memory_info().rss
            record["start"] = time.perf_counter()
            self.stop = threading.Event()

            def sample():
                while not self.stop.is_set():
                    record["peak"] = max(record["peak"], process.memory_info().rss - record["base"])
                    self.stop.wait(0.01)

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()

        def on_step_end(self, *a, **k):
            record["ends"].append(time.perf_counter())
            record["cpu_ends"].append(time.process_time())

        def on_train_end(self, *a, **k):
            self.stop.set()
            self.thread.join()

    transformers.trainer.DEFAULT_CALLBACKS.append(Meter)  # every Trainer of this process starts with it
    from omegaconf import OmegaConf

    config = OmegaConf.structured(TrainConfig(model=args.model, output_dir=str(out)))
    for key, value in {"data.path": str(data), "max_steps": args.steps, "per_device_train_batch_size": args.batch,
                       "logging_steps": 1, "save_steps": 10**6, "lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.0,
                       "data.max_length": 256, "data.max_prompt_length": 128, "learning_rate": 1e-4,
                       "reference.cache_dir": str(out / "refcache"), "training_args": "{disable_tqdm: true}",
                       **METHODS[method]}.items():
        _apply_override(config, f"{key}={value}")
    run_training(OmegaConf.to_object(config))
    ends, cpu = record["ends"], record["cpu_ends"]
    steps = [b - a for a, b in zip(ends, ends[1:])]  # step 2 onwards; step 1 is the warm-up
    cpu_steps = [b - a for a, b in zip(cpu, cpu[1:])]
    return {"method": method, "s_per_step": statistics.mean(steps), "cpu_s_per_step": statistics.mean(cpu_steps),
            "train_peak_mb": record["peak"] / 2**20,
            "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "steps": len(ends)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=9, help="optimizer steps per method (the first is warm-up)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=32, help="harmful and benign pairs each")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one method in this process
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        work = Path(args.workdir)
        result = measure_one(args.one, args, work / "pairs.jsonl", work / args.one.replace(" ", "_"))
        print("RESULT " + json.dumps(result))
        return 0
    import logging

    logging.basicConfig(level=logging.WARNING)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        write_pairs(work / "pairs.jsonl", args.pairs)
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--one", method, "--workdir", tmp, "--model", args.model,
                   "--steps", str(args.steps), "--batch", str(args.batch), "--threads", str(args.threads)]
            started = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"{method} failed (exit {proc.returncode})")
            results.append(json.loads(line[len("RESULT "):]))
            print(f"{method}: done in {time.time() - started:.0f} s", file=sys.stderr)
    base = results[0]
    print(f"{args.model}, LoRA r16, batch {args.batch}, {args.steps} steps (the first is warm-up), "
          f"{args.threads} threads\n")
    print(f"| method | s/step | × {base['method']} | CPU s/step | × {base['method']} | peak training memory (MB) "
          f"| × {base['method']} | peak process RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['s_per_step']:.2f} | {r['s_per_step'] / base['s_per_step']:.2f} | "
              f"{r['cpu_s_per_step']:.2f} | {r['cpu_s_per_step'] / base['cpu_s_per_step']:.2f} | "
              f"{r['train_peak_mb']:.0f} | {r['train_peak_mb'] / max(base['train_peak_mb'], 1e-9):.2f} | "
              f"{r['process_peak_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
