"""``safealign compare-online``: online E-RLHF vs plain RLHF × seeds, held-out ASR and over-refusal before/after.

One command for the whole comparison (docs/online.md, "E vs plain"): the base model is evaluated once, then for
every variant (``plain``: identity reference view; ``e``: the safety prefix on harmful prompts) and seed the
online recipe trains a LoRA policy and the demo's own evaluation (``safealign.pipelines.demo.evaluate``:
direct and template jailbreaks on the built-in held-out harmful prompts, refusal on held-out benign and
borderline ones, refusal judge) measures it. Every stage resumes: a finished training run or evaluation
record is never recomputed. The table (``online_compare.json`` / ``.md``) gives each metric before training,
each variant's mean over seeds, and the paired E − plain difference with a bootstrap interval over prompts
(``safealign.eval.paired``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign import checks
from safealign.config import load_config, save_config
from safealign.errors import UserError
from safealign.io import read_json, write_json

logger = logging.getLogger(__name__)

VARIANTS = {"plain": ("identity", {}),
            "e": ("safety_prefix", {"prefix": "community_guidelines", "apply_to": "harmful"})}
METRICS = ("direct_asr", "template_asr", "benign_refusal_rate", "borderline_refusal_rate")


@dataclass
class OnlineCompareConfig:
    recipe: str = "configs/train/rlhf_rloo.yaml"  # an online recipe; its reference view is set per variant
    train_overrides: list[str] = field(default_factory=list)  # key=value for the recipe, e.g. [max_steps=10]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    variants: list[str] = field(default_factory=lambda: ["plain", "e"])
    output_dir: str = "runs/online_compare"
    harmful_test: int = 40
    benign_test: int = 24
    borderline_test: int = 24
    eval_max_new_tokens: int = 48
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        if not self.seeds:
            raise UserError("seeds is empty")
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown or not self.variants:
            raise UserError(f"variants must be among {', '.join(VARIANTS)}, got {self.variants}")
        for key in ("harmful_test", "benign_test", "borderline_test"):
            checks.at_least(key, getattr(self, key), 1)
        checks.at_least("eval_max_new_tokens", self.eval_max_new_tokens, 1)
        checks.at_least("eval_batch_size", self.eval_batch_size, 1)


def stage_config(config: OnlineCompareConfig, variant: str, seed: int):
    """The online recipe of one stage: the recipe + train_overrides, then the variant's view, seed and folder."""
    from safealign.online.config import OnlineConfig

    transform, params = VARIANTS[variant]
    online = load_config(OnlineConfig, config.recipe, list(config.train_overrides))
    online.reference.transform = transform
    online.reference.transform_params = dict(params)
    online.seed = seed
    online.output_dir = str(Path(config.output_dir) / "train" / f"{variant}-seed{seed}")
    online.validate()
    return online


def _demo_config(config: OnlineCompareConfig, model: str):
    from safealign.pipelines.demo_config import DemoConfig

    # extra_benign=[]: the table shows METRICS only, so the demo's default untuned set would cost generations unseen
    demo = DemoConfig(model=model, output_dir=config.output_dir, harmful_test=config.harmful_test,
                      benign_test=config.benign_test, borderline_test=config.borderline_test, extra_benign=[])
    demo.eval.generation.max_new_tokens = config.eval_max_new_tokens
    demo.eval.generation.batch_size = config.eval_batch_size
    return demo


def run_online_compare(config: OnlineCompareConfig) -> dict[str, Any]:
    from safealign.models import load_model
    from safealign.online.run import run_online
    from safealign.online.trainer import checkpoints
    from safealign.pipelines.demo import evaluate, prompt_sets

    start = time.time()
    stages = [(variant, seed, stage_config(config, variant, seed)) for variant in config.variants
              for seed in config.seeds]  # every recipe is checked before anything loads
    out = Path(config.output_dir)
    save_config(config, out / "online_compare.yaml")
    base_model = stages[0][2].model
    demo = _demo_config(config, base_model)
    prompts = prompt_sets(demo)
    figures: dict[str, dict[str, Any]] = {}
    model, tokenizer = load_model(base_model)
    figures["before"] = _figures(evaluate(demo, model, tokenizer, prompts, out / "eval" / "before"))
    for variant, seed, online in stages:
        name = f"{variant}-seed{seed}"
        train_dir = Path(online.output_dir)
        if not (train_dir / "train_summary.json").is_file():
            run_online(online, resume=bool(checkpoints(train_dir)))
        model, tokenizer = load_model(str(train_dir / "final"))
        figures[name] = _figures(evaluate(demo, model, tokenizer, prompts, out / "eval" / name))
        figures[name]["train"] = _train_summary(train_dir)
    table = _table(config, demo, figures)
    table["wall_seconds"] = round(time.time() - start, 1)
    write_json(out / "online_compare.json", table)
    (out / "online_compare.md").write_text(format_table(table) + "\n")
    return table


def _figures(figures: Any) -> dict[str, Any]:
    return {name: fig.to_json() for name, fig in figures.items()}


def _train_summary(train_dir: Path) -> dict[str, Any]:
    from safealign.io import read_jsonl

    rows = read_jsonl(train_dir / "metrics.jsonl")
    last = rows[-1] if rows else {}
    shares = {k: sum(r.get(k) or 0 for r in rows) / max(len(rows), 1) for k in
              ("share/generate", "share/score", "share/update")}
    return {"steps": last.get("step"), "final_reward": last.get("reward"), "wall_seconds":
            read_json(train_dir / "train_summary.json").get("wall_seconds"), **shares}


def _table(config: OnlineCompareConfig, demo: Any, figures: dict[str, Any]) -> dict[str, Any]:
    from safealign.eval.paired import paired_difference
    from safealign.pipelines.demo import stage_outcomes

    out = Path(config.output_dir)
    rows = {}
    for metric in METRICS:
        row: dict[str, Any] = {"before": figures["before"][metric]["value"]}
        for variant in config.variants:
            values = [figures[f"{variant}-seed{s}"][metric]["value"] for s in config.seeds]
            row[variant] = sum(values) / len(values) if None not in values else None
        if set(config.variants) == {"plain", "e"}:
            outcomes = {v: {s: stage_outcomes(demo, out / "eval" / f"{v}-seed{s}")[metric] for s in config.seeds}
                        for v in ("e", "plain")}
            try:
                row["e_minus_plain"] = paired_difference(outcomes["e"], outcomes["plain"]).to_json()
            except UserError as err:
                logger.warning("no paired comparison of %s: %s", metric, err)
        rows[metric] = row
    return {"metrics": rows, "stages": figures, "seeds": list(config.seeds), "recipe": config.recipe,
            "train_overrides": list(config.train_overrides)}


def format_table(table: dict[str, Any]) -> str:
    lines = ["| held-out metric | before | plain RLHF (mean) | E-RLHF (mean) | E − plain, 95% paired bootstrap |",
             "|---|---|---|---|---|"]
    for metric, row in table["metrics"].items():
        diff = row.get("e_minus_plain")
        shown = f"{diff['diff']:+.3f} [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}]" if diff else "—"
        lines.append(f"| {metric} | {_num(row['before'])} | {_num(row.get('plain'))} | {_num(row.get('e'))} | "
                     f"{shown} |")
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def load_compare_config(path: str | None, overrides: list[str]) -> OnlineCompareConfig:
    return load_config(OnlineCompareConfig, path, overrides)


