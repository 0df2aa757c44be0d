"""Does the anchor gap predict E-DPO's margin gain prompt by prompt? (issue 20; README, "Sweeping settings")

For every held-out harmful prompt x of a finished prefix sweep (``configs/sweep/e_prefixes.yaml``) and every safety
prefix, this measures the anchor gap *on the very pair the held-out margin scores* -- chosen = the built-in refusal
the margin uses for x, rejected = the base model's own answer to x -- with ``safealign diagnose anchor`` (the base
model's log-probs of both, with and without the prefix), and sets it beside E-DPO's per-prompt margin gain over DPO
(mean over the training seeds of margin_E(x) − margin_DPO(x), the cells' ``refusal_margin/margins.json``).
It prints, per prefix and pooled, the mean gap and gain and Spearman's rank correlation between them over the
prompts, with a 95% bootstrap interval over prompts.

    python examples/anchor_gap/per_prompt.py results/sweep/e_effect [--seeds 0,1,2,3,4] [--out runs/anchor_gap]

Reads only finished cells; the anchor diagnostic loads the embedded model once per prefix (~1 min on one core).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

SETTING = "nll_weight=1,beta=0.1,learning_rate=0.002"  # the demo's default: the prefix grid's setting
PREFIXES = ("community_guidelines", "wellbeing", "responsible", "safety_legality")  # by anchor gap on training pairs
HEADLINE = "community_guidelines"  # its cells carry no prefix key: the default of the e_effect grid


def cell(sweep: Path, variant: str, prefix: str, seed: int) -> Path:
    setting = SETTING if prefix == HEADLINE or variant == "dpo" else f"{SETTING},prefix={prefix}"
    return sweep / "cells" / setting / f"{variant}-seed{seed}" / "eval" / "refusal_margin" / "margins.json"


def gains(sweep: Path, prefix: str, seeds: list[int]) -> dict[str, float]:
    """prompt id -> mean over seeds of E-DPO's margin minus DPO's (prompts scored in every seed for both)."""
    per_seed = []
    for seed in seeds:
        e = json.loads(cell(sweep, "e-dpo", prefix, seed).read_text())
        d = json.loads(cell(sweep, "dpo", prefix, seed).read_text())
        per_seed.append({k: e[k] - d[k] for k in e if k in d})
    shared = set.intersection(*(set(g) for g in per_seed))
    return {k: statistics.fmean(g[k] for g in per_seed) for k in sorted(shared)}


def heldout_pairs(sweep: Path, out: Path) -> Path:
    """The held-out margin's own pairs as preference rows: (x, built-in refusal for x, base model's answer)."""
    from safealign.data.builtin import load_prompts, load_refusals
    from safealign.pipelines.demo_margin import base_answers, refusal_for

    ids = list(json.loads((sweep / "before" / "refusal_margin" / "margins.json").read_text()))
    text = {p.id: p.prompt for p in load_prompts("harmful", split=None)}
    answers, _ = base_answers(sweep / "before", ids)
    refusals = load_refusals()
    path = out / "heldout_pairs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "prompt": text[i], "chosen": refusal_for(i, refusals),
                                        "rejected": answers[i], "harmful": True}) + "\n"
                            for i in ids if i in answers))
    return path


def anchor_gaps(pairs: Path, prefix: str, out: Path) -> dict[str, float]:
    """prompt id -> anchor gap of its held-out pair under ``prefix`` (safealign diagnose anchor)."""
    from safealign.config import load_config
    from safealign.pipelines.diagnose import AnchorConfig, run_anchor

    config = load_config(AnchorConfig, None, ["model=smollm2-135m-instruct", f"data={pairs}", f"prefix={prefix}",
                                              "max_length=512", "max_prompt_length=256", f"output_dir={out / prefix}"])
    diagnosis = run_anchor(config)
    ids = [json.loads(line)["id"] for line in pairs.read_text().splitlines()]  # "row": 0-based row in the file
    return {ids[row["row"]]: row["gap"] for row in diagnosis.pairs if row["gap"] is not None}


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx and syy else 0.0


def interval(x: list[float], y: list[float], resamples: int = 2000, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    n = len(x)
    boot = sorted(spearman(*zip(*[(x[i], y[i]) for i in (rng.randrange(n) for _ in range(n))]))
                  for _ in range(resamples))
    return [boot[int(0.025 * resamples)], boot[int(0.975 * resamples) - 1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", type=Path, default=Path("runs/anchor_gap"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    pairs = heldout_pairs(args.sweep, args.out)
    rows, pooled = [], ([], [])
    for prefix in PREFIXES:
        gap, gain = anchor_gaps(pairs, prefix, args.out), gains(args.sweep, prefix, seeds)
        ids = [i for i in gain if i in gap]
        x, y = [gap[i] for i in ids], [gain[i] for i in ids]
        pooled[0].extend(x)
        pooled[1].extend(y)
        rows.append((prefix, len(ids), statistics.fmean(x), statistics.fmean(y), spearman(x, y), interval(x, y)))
    rows.append(("pooled", len(pooled[0]), statistics.fmean(pooled[0]), statistics.fmean(pooled[1]),
                 spearman(*pooled), interval(*pooled)))
    print(f"held-out anchor gap vs E-DPO − DPO margin gain per prompt (seeds {args.seeds}; Spearman, 95% bootstrap "
          "over prompts)")
    print(f"{'prefix':22} {'prompts':>7} {'mean gap':>9} {'mean gain':>10} {'spearman':>9}  95% interval")
    for prefix, n, g, e, rho, (lo, hi) in rows:
        print(f"{prefix:22} {n:7d} {g:9.2f} {e:10.2f} {rho:9.2f}  [{lo:+.2f}, {hi:+.2f}]")
    (args.out / "per_prompt.json").write_text(json.dumps([dict(zip(
        ("prefix", "prompts", "mean_gap", "mean_gain", "spearman", "ci95"), r)) for r in rows], indent=2))


if __name__ == "__main__":
    main()
