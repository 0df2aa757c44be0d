"""Paired difference of two trained variants' held-out metrics over seeds (``safealign diagnose eval-difference``).

Input: the evaluation folders of two variants, one per training seed in the same seed order -- a demo stage's
``eval/<stage>`` or a sweep cell's ``eval`` -- answering the same held-out prompts. Per metric the demo records
(direct/template ASR, the extra harmful sets' direct ASR, ASR under judges added later, benign/borderline and
extra benign refusal rates, the held-out refusal margin): each variant's mean over seeds and the difference
``a − b`` with the sweep's hierarchical interval (seeds and prompts crossed: a two-way random-effects t interval;
safealign.eval.paired.hierarchical_difference). It compares what a sweep table cannot: two cells of different
settings, e.g. E-DPO under two safety prefixes (README, "Sweeping settings"). Outcomes are paired by prompt id, so
an id that names another prompt in the two folders (evaluations of different prompt files) is refused
(:func:`check_same_prompts`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

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
    from safealign.checks import at_least
    from safealign.eval.paired import metric_differences

    at_least("resamples", resamples, 1)
    if not a or len(a) != len(b):
        raise UserError(f"eval-difference needs one evaluation folder per seed for both variants, in the same "
                        f"order; got {len(a)} and {len(b)}")
    by_a = {i: folder_outcomes(x) for i, x in enumerate(a)}
    by_b = {i: folder_outcomes(y) for i, y in enumerate(b)}
    for x, y in zip(a, b):
        check_same_prompts(x, y, ["jailbreak", *(f"extra/{name}" for name in _extra_sets(x) & _extra_sets(y))])
        _check_same_benign_prompts(x, y)
    result = metric_differences(by_a, by_b, resamples=resamples, label="eval-difference")
    if metrics:
        unknown = [m for m in metrics if m not in result]
        if unknown:
            raise UserError(f"--metrics: {', '.join(unknown)} not compared; the folders have {', '.join(result)}")
        result = {m: result[m] for m in metrics}
    return result


def attack_prompts(records: str | Path) -> dict[str, str]:
    """behavior id -> what its direct request sent the model (the last message of its ``direct`` attempt): the
    prompt an id stands for in that evaluation. Attempts recorded without messages (by hand) give none."""
    from safealign.eval.records import current_records

    return {r.behavior_id: str(r.messages[-1].get("content")) for r in current_records(records)
            if r.attack == "direct" and r.messages}


def check_same_prompts(a: str | Path, b: str | Path, runs: Sequence[str] = ("jailbreak",)) -> None:
    """Two evaluation folders' outcomes and margins are paired by prompt id: under every run of ``runs`` (a folder
    of ``records.jsonl`` inside each) that both hold, an id the two evaluated must name the same prompt, or the
    comparison would pair unrelated prompts (evaluations of different prompt files with one id scheme). A
    UserError names both record files and the id (safealign.eval.helpfulness.retention.check_same_prompts, the
    check the win rate's answer pairs get)."""
    from safealign.eval.helpfulness.retention import check_same_prompts as check

    for run in runs:
        files = [Path(x) / run / "records.jsonl" for x in (a, b)]
        if all(f.is_file() for f in files):
            texts = [attack_prompts(f) for f in files]
            check(*texts, sorted(texts[0].keys() & texts[1].keys()), (str(files[0]), str(files[1])),
                  "prompt (its direct attempt's last message)")


def _check_same_benign_prompts(a: str | Path, b: str | Path) -> None:
    """The same for the over-refusal records (benign prompts, paired by their ``id``)."""
    from safealign.eval.helpfulness.records import latest_by
    from safealign.eval.helpfulness.retention import check_same_prompts as check
    from safealign.io import read_jsonl

    files = [Path(x) / "helpfulness" / "overrefusal" / "records.jsonl" for x in (a, b)]
    if not all(f.is_file() for f in files):
        return
    texts = [{i: r["prompt"] for i, r in latest_by(read_jsonl(f), "id").items() if r.get("prompt") is not None}
             for f in files]
    check(*texts, sorted(texts[0].keys() & texts[1].keys()), (str(files[0]), str(files[1])))


def _extra_sets(eval_dir: str | Path) -> set[str]:
    extra = Path(eval_dir) / "extra"
    return {p.name for p in extra.iterdir() if p.is_dir()} if extra.is_dir() else set()


def format_difference(result: dict[str, Any], names: tuple[str, str]) -> str:
    a, b = names
    rows = [("metric", a, b, f"{a} − {b} [95% hierarchical]", "seeds", "prompts")]
    for metric, d in result.items():
        lo, hi = d["ci95"]
        rows.append((metric, f"{d['mean_a']:.3f}", f"{d['mean_b']:.3f}", f"{d['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                     str(d["seeds"]), str(d["n_prompts"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
