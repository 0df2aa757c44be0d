"""Paired difference of two trained variants' held-out metrics over seeds (``safealign diagnose eval-difference``).

Input: the evaluation folders of two variants, one per training seed in the same seed order -- a demo stage's
``eval/<stage>`` or a sweep cell's ``eval`` -- answering the same held-out prompts. Per metric the demo records
(direct/template ASR, the extra harmful sets' direct ASR, ASR under judges added later, benign/borderline and
extra benign refusal rates, the held-out refusal margin): each variant's mean over seeds and the difference
``a − b`` with the sweep's hierarchical interval (seeds and prompts crossed: a two-way random-effects t interval;
safealign.eval.paired.hierarchical_difference). It compares what a sweep table cannot: two cells of different
settings, e.g. E-DPO under two safety prefixes (README, "Sweeping settings").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safealign.errors import UserError


def folder_outcomes(eval_dir: str | Path) -> dict[str, dict[str, Any]]:
    """metric -> prompt id -> outcome of one evaluation folder (safealign.pipelines.demo.stage_outcomes), for
    the extra sets the folder itself holds: harmful ones under ``extra/``, benign ones as over-refusal kinds."""
    from safealign.io import read_jsonl
    from safealign.pipelines.demo import stage_outcomes
    from safealign.pipelines.demo_config import DemoConfig

    eval_dir = Path(eval_dir)
    if not (eval_dir / "jailbreak" / "records.jsonl").is_file():
        raise UserError(f"{eval_dir}: no jailbreak/records.jsonl (an evaluation folder of the demo or a sweep cell)")
    extra = eval_dir / "extra"
    harmful = sorted(p.name for p in extra.iterdir() if p.is_dir()) if extra.is_dir() else []
    benign_file = eval_dir / "helpfulness" / "overrefusal" / "records.jsonl"
    kinds = {row.get("kind") for row in read_jsonl(benign_file)} if benign_file.is_file() else set()
    benign = sorted(k for k in kinds if isinstance(k, str) and k not in ("ordinary", "borderline"))
    return stage_outcomes(DemoConfig(extra_harmful=harmful, extra_benign=benign), eval_dir)


def eval_difference(a: list[str | Path], b: list[str | Path], *, metrics: list[str] | None = None,
                    resamples: int = 2000) -> dict[str, Any]:
    """Per metric, :func:`~safealign.eval.paired.hierarchical_difference` of ``a − b`` (seed i of ``a`` paired
    with seed i of ``b``); ``metrics``: only these, in this order."""
    from safealign.eval.paired import metric_differences

    if not a or len(a) != len(b):
        raise UserError(f"eval-difference needs one evaluation folder per seed for both variants, in the same "
                        f"order; got {len(a)} and {len(b)}")
    by_a = {i: folder_outcomes(x) for i, x in enumerate(a)}
    by_b = {i: folder_outcomes(y) for i, y in enumerate(b)}
    result = metric_differences(by_a, by_b, resamples=resamples, label="eval-difference")
    if metrics:
        unknown = [m for m in metrics if m not in result]
        if unknown:
            raise UserError(f"--metrics: {', '.join(unknown)} not compared; the folders have {', '.join(result)}")
        result = {m: result[m] for m in metrics}
    return result


def format_difference(result: dict[str, Any], names: tuple[str, str]) -> str:
    a, b = names
    rows = [("metric", a, b, f"{a} − {b} [95% hierarchical]", "seeds", "prompts")]
    for metric, d in result.items():
        lo, hi = d["ci95"]
        rows.append((metric, f"{d['mean_a']:.3f}", f"{d['mean_b']:.3f}", f"{d['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                     str(d["seeds"]), str(d["n_prompts"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
