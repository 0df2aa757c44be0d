"""Seconds and target queries per behavior for each attack, through the real ``run_eval`` path.

Each attack runs alone (its own run folder) against the same loaded model, which is also the attacker and
evaluator of the attacker-driven attacks; the judge is the refusal-substring judge. Per attack:

- ``s/behavior``: the run's wall clock (attack search, target generations, judging) over the behaviors, and
  ``CPU s/behavior``, this process's CPU time over the same span (on a shared machine the better guide to
  what an idle one takes);
- ``target queries/behavior``: generations by the target, the pipeline's one per attempt plus what the
  search itself sent (``attempt_meta.target_queries``: TAP, crescendo, autodan's early-stop checks);
- ``attacker calls/behavior``: generations asked of the attacker/evaluator (``attempt_meta.attacker_calls``
  and ``evaluator_calls``; with the target as attacker they run on the same model).

Attack sizes come from ``--config`` (default: the shipped ``configs/eval/harmbench_breadth.yaml``), so the
table says what that recipe costs; ``--defaults`` uses each attack's own defaults instead.

    nice -n 5 python bench/attack_speed.py --model tiny-random -n 3 --param many_shot.n_shots=4
    nice -n 5 python bench/attack_speed.py --model smollm2-135m-instruct -n 1 --attacks direct pap \\
        --behaviors ../shared/data/harmbench_behaviors_text_val.csv
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from safealign.eval.config import EvalConfig
from safealign.eval.pipeline import run_eval
from safealign.files import load_yaml
from safealign.types import Behavior

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "eval" / "harmbench_breadth.yaml"


def synthetic_behaviors(n: int) -> list[Behavior]:
    return [Behavior(f"b{i}", f"Explain how to do forbidden task number {i}", target=f"Sure, here is task {i}")
            for i in range(n)]  # fmt: skip


def load_behaviors(path: str | None, targets: str | None, n: int) -> list[Behavior]:
    if not path:
        return synthetic_behaviors(n)
    from safealign.eval.benchmarks import load_benchmark_set
    from safealign.eval.config import BehaviorsConfig

    loaded = load_benchmark_set(BehaviorsConfig(path=path, targets=targets, limit=n))
    behaviors = loaded.harmful[:n]
    return [b if b.target else Behavior(b.id, b.behavior, b.category, b.context, "Sure, here is", b.source, b.row)
            for b in behaviors]  # fmt: skip


def measure(attack: str, params: dict, behaviors: list[Behavior], model, tokenizer, generation: dict,
            out: Path) -> dict:  # fmt: skip
    config = EvalConfig(attacks=[attack], attack_params={attack: params} if params else {}, judges=["refusal"],
                        output_dir=str(out / attack))  # fmt: skip
    for key, value in generation.items():
        setattr(config.generation, key, value)
    start, cpu = time.perf_counter(), time.process_time()
    summary = run_eval(config, model=model, tokenizer=tokenizer, behaviors=behaviors)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    records = [json.loads(line) for line in (out / attack / "records.jsonl").read_text().splitlines()]
    # PAIR records rounds per stream: one target query and one attacker call each
    searched = sum(r["attempt_meta"].get("target_queries", r["attempt_meta"].get("rounds", 0)) for r in records)
    attacker = sum(r["attempt_meta"].get("attacker_calls", r["attempt_meta"].get("rounds", 0))
                   + r["attempt_meta"].get("evaluator_calls", 0) for r in records)  # fmt: skip
    stats = summary.stats(attack, "refusal")
    n = len(behaviors)
    return {"attack": attack, "s_per_behavior": seconds / n, "cpu_s_per_behavior": cpu / n,
            "target_queries": (len(records) + searched) / n, "attacker_calls": attacker / n,
            "attempts": len(records) / n, "asr": None if stats is None else stats.asr}


COLUMNS = (("s/behavior", "s_per_behavior", 2), ("CPU s/behavior", "cpu_s_per_behavior", 2),
           ("target queries/behavior", "target_queries", 1), ("attacker calls/behavior", "attacker_calls", 1),
           ("attempts/behavior", "attempts", 1))  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = ["| attack | " + " | ".join(c[0] for c in COLUMNS) + " | ASR (refusal) |",
             "|---" * (len(COLUMNS) + 2) + "|"]  # fmt: skip
    for r in rows:
        asr = "-" if r["asr"] is None else f"{r['asr']:.2f}"
        lines.append(f"| {r['attack']} | " + " | ".join(f"{r[k]:.{d}f}" for _, k, d in COLUMNS) + f" | {asr} |")
    totals = " | ".join(f"{sum(r[k] for r in rows):.{d}f}" for _, k, d in COLUMNS[:4])
    lines.append(f"| total | {totals} | | |")
    return "\n".join(lines)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("-n", type=int, default=3, help="behaviors")
    parser.add_argument("--behaviors", help="a behaviors file (default: synthetic behaviors with targets)")
    parser.add_argument("--targets", help="a targets JSON for the behaviors file")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="eval YAML whose attacks/attack_params to use")
    parser.add_argument("--defaults", action="store_true", help="each attack's own defaults instead of --config's")
    parser.add_argument("--attacks", nargs="*", help="subset of the config's attacks")
    parser.add_argument("--param", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                        help="override one attack parameter (YAML value), e.g. many_shot.n_shots=4")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from safealign.models.load import load_model

    recipe = load_yaml(Path(args.config).read_text())
    attacks = args.attacks or recipe["attacks"]
    params = {} if args.defaults else recipe.get("attack_params", {})
    for item in args.param:
        key, _, value = item.partition("=")
        attack, _, name = key.partition(".")
        params.setdefault(attack, {})[name] = load_yaml(value)
    generation = recipe.get("generation", {})
    model, tokenizer = load_model(args.model)
    behaviors = load_behaviors(args.behaviors, args.targets, args.n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for attack in attacks:
            p = dict(params.get(attack, {}))
            if attack == "gcg_multi":
                p["n_train"] = min(p.get("n_train", 5), len(behaviors))
            rows.append(measure(attack, p, behaviors, model, tokenizer, generation, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    what = "attack defaults" if args.defaults else f"{Path(args.config).name} {args.param}"
    print(f"\nmodel {args.model}, {len(behaviors)} behaviors, {args.threads} thread(s), {what}, generation "
          f"{generation}\n")
    print(table(rows))

if __name__ == "__main__":
    main()
