"""``safealign compare-online``: online E-RLHF vs plain RLHF × seeds, held-out ASR and over-refusal before/after.

One command for the whole comparison (docs/online.md, "E vs plain"): the base model is evaluated once, then for
every variant (``plain``: identity reference view; ``e``: the safety prefix on harmful prompts) and seed the
online recipe trains a LoRA policy and the demo's own evaluation (``safealign.pipelines.demo.evaluate``:
direct and template jailbreaks on the built-in held-out harmful prompts, refusal on held-out benign and
borderline ones, refusal judge) measures it. Every stage resumes: a finished training run or evaluation
record is never recomputed (a run trained for fewer steps than ``max_steps`` is extended, and evaluated
afresh). Several workers may share one output directory (``--workers N``, or the plain command started
several times; docs/online.md): each claims the next unfinished stage with a lock file.
The table (``online_compare.json`` / ``.md``) gives each metric before training,
each variant's mean over seeds, and the paired E − plain difference, with hierarchical intervals (seeds and
prompts crossed: a two-way random-effects t interval; ``safealign.eval.paired``).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign import checks
from safealign.config import load_config, to_dict
from safealign.errors import UserError
from safealign.files import dump_yaml
from safealign.io import read_json, write_json
from safealign.io.jsonfile import write_atomic
from safealign.io.lockfile import ClaimedRun
from safealign.report import numbers

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
        for key in ("seeds", "variants"):  # a repeated seed counted twice in the table's mean, once in its interval
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise UserError(f"{key} must be distinct, got {values}: the table's mean would count a repeated one "
                                f"twice and its interval once; give {key}={list(dict.fromkeys(values))}")
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


STAGE_LOCK = "claim.lock"  # in a stage's training folder while a worker trains and evaluates it (lockfile.py)
STAGE_DONE = "stage.json"  # in a stage's training folder, written last: its figures under its fingerprint
BEFORE_DONE = "before.json"  # under output_dir: which worker last finished the base model's evaluation


def check_compare_dir(config: OnlineCompareConfig) -> list[tuple[str, int, Any]]:
    """Every stage's recipe, and the training run its folder holds (_check_stage), checked before anything loads,
    and the comparison's settings saved; returns the stages (variant, seed, online config)."""
    stages = [(variant, seed, stage_config(config, variant, seed)) for variant in config.variants
              for seed in config.seeds]
    for variant, seed, online in stages:  # a run that can never be this comparison's is refused before any work
        _check_stage(f"{variant}-seed{seed}", online)
    # atomic: workers started together rewrite it with the same content (the number of workers is no setting)
    write_atomic(Path(config.output_dir) / "online_compare.yaml",
                 dump_yaml(to_dict(config)).encode())
    return stages


def run_online_compare(config: OnlineCompareConfig) -> ClaimedRun:
    """Train and evaluate every unfinished (variant, seed) stage this worker can claim; with every stage
    finished, write the table. Any number of workers may run this on one output directory at once
    (docs/online.md, "Several workers"): a stage is claimed with ``claim.lock`` in its training folder, the
    base model's evaluation runs under ``shared.lock``; the worker that finds every stage finished writes the
    table, one that finds only stages other live workers hold returns them."""
    from safealign.io.lockfile import Job, claim_each, run_once
    from safealign.models import load_model
    from safealign.pipelines.demo import evaluate, prompt_sets

    start = time.time()
    stages = check_compare_dir(config)
    out = Path(config.output_dir)
    demo = _demo_config(config, stages[0][2].model)
    prompts = prompt_sets(demo)
    fingerprints = {(v, s): _stage_fingerprint(config, online) for v, s, online in stages}
    if not (out / "eval" / "before" / "figures.json").is_file() or \
            any(_stage_record(online, fingerprints[v, s]) is None for v, s, online in stages):
        def before() -> None:
            model, tokenizer = load_model(demo.model)
            write_json(out / "eval" / "before" / "figures.json",  # resumes its records
                       _figures(evaluate(demo, model, tokenizer, prompts, out / "eval" / "before")))

        run_once(out / "shared.lock", out / BEFORE_DONE, "compare-online: the base model's evaluation", before)
    jobs = [Job(Path(online.output_dir) / STAGE_LOCK,
                functools.partial(_is_finished, online, fingerprints[v, s]),
                functools.partial(_run_stage, config, demo, prompts, v, s, online, fingerprints[v, s]))
            for v, s, online in stages]
    computed, held = claim_each(jobs)
    run = ClaimedRun(computed, len(stages) - computed - len(held), held)
    if held:  # the worker that finishes the last of them writes the table
        logger.info("compare-online: no unclaimed stage left; %d still running elsewhere: %s", len(held),
                    run.describe_held())
        return run
    figures = {"before": read_json(out / "eval" / "before" / "figures.json")}
    for variant, seed, online in stages:
        record = _stage_record(online, fingerprints[variant, seed])
        figures[f"{variant}-seed{seed}"] = {**record["figures"], "train": record["train"]}
    run.table = _table(config, demo, figures)
    run.table["wall_seconds"] = round(time.time() - start, 1)
    write_json(out / "online_compare.json", run.table)
    write_atomic(out / "online_compare.md", (format_table(run.table) + "\n").encode())
    return run


def _stage_fingerprint(config: OnlineCompareConfig, online: Any):
    """What a stage's figures depend on: its training run's settings (as the online trainer fingerprints them)
    and the evaluation's sizes; not where it writes, nor how many workers run the comparison."""
    from safealign.io.rundir import make_fingerprint
    from safealign.online.run import online_settings_fingerprint

    # the settings only, the digest finished stages were recorded under (the legacy one: an inf setting keeps the
    # digest its stage was recorded under); under the constant schedule that leaves out max_steps, which
    # _stage_record compares with the steps recorded, and the training run's own fingerprint (with its prompts'
    # content and weights) is checked by _check_stage for every stage, finished or not
    training = online_settings_fingerprint(online).legacy_digest
    evaluation = {k: getattr(config, k) for k in ("harmful_test", "benign_test", "borderline_test",
                                                  "eval_max_new_tokens")}
    return make_fingerprint("online-compare-stage", evaluation, extra={"training": training})


def _stage_record(online: Any, fingerprint: Any) -> dict[str, Any] | None:
    """The stage's record when it finished under these settings and trained ``max_steps`` steps; None otherwise
    (one with fewer steps is extended by _run_stage, one with more refused by _check_stage)."""
    try:
        record = json.loads((Path(online.output_dir) / STAGE_DONE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("fingerprint") != fingerprint.digest:
        return None
    steps = (record.get("train") or {}).get("steps")
    return record if steps is None or steps == online.max_steps else None


def _is_finished(online: Any, fingerprint: Any) -> bool:
    return _stage_record(online, fingerprint) is not None


def _check_stage(name: str, online: Any) -> None:
    """A stage's training run, finished or not, must be one the stage's settings may continue or keep: its figures
    (stage.json) are reused on the settings' digest, which holds neither the prompts file's content nor the models'
    weights, and under the constant schedule not max_steps. So its folder's whole training fingerprint is
    compared (_check_finished_training; a run recorded before some of its keys were compares the rest, so stages
    recorded before this check stay usable), and a run trained past ``max_steps`` is refused: it cannot be
    shortened, and resuming it would keep and label it as the shorter run."""
    from safealign.online.run import check_not_shortened

    train_dir = Path(online.output_dir)
    check_not_shortened(train_dir, online.max_steps, f"compare-online: stage {name} ({train_dir})",
                        "use another output_dir, or delete that folder to train it again")
    if (train_dir / "train_summary.json").is_file():
        _check_finished_training(train_dir, online)


def _check_finished_training(train_dir: Path, online: Any) -> None:
    """A finished training run is kept, not retrained, so it must be this stage's: under changed
    ``train_overrides`` its model would otherwise be evaluated and recorded as the new settings' run."""
    from safealign.io.rundir import differing_keys, read_fingerprint, same_settings
    from safealign.online.run import online_fingerprint

    recorded, current = read_fingerprint(train_dir), online_fingerprint(online)
    if recorded is not None and not same_settings(recorded, current):
        raise UserError(f"{train_dir} holds a finished training run with other settings "
                        f"({', '.join(differing_keys(recorded, current)[:8])}); use another output_dir, or delete "
                        "that folder to train it again")


def _run_stage(config: OnlineCompareConfig, demo: Any, prompts: dict[str, Any], variant: str, seed: int,
               online: Any, fingerprint: Any) -> None:  # fmt: skip
    """Train one stage (resuming its checkpoint; a finished training run is kept, or extended to a longer
    ``max_steps``, as ``--resume`` extends a constant-schedule run) and evaluate it (resuming its records), then
    record its figures."""
    from safealign.models import load_model
    from safealign.online.run import run_online
    from safealign.online.trainer import checkpoints
    from safealign.pipelines.demo import evaluate

    name = f"{variant}-seed{seed}"
    train_dir = Path(online.output_dir)
    logger.info("compare-online: stage %s", name)
    _check_stage(name, online)
    if (train_dir / "train_summary.json").is_file():
        # the summary's steps, not a later checkpoint's: an extension killed before it wrote the summary resumes
        trained = int(read_json(train_dir / "train_summary.json").get("steps") or 0)
        if trained < online.max_steps:  # its figures and evaluation records are the shorter run's: dropped first
            logger.info("compare-online: stage %s trained %d steps; extending it to %d", name, trained,
                        online.max_steps)
            (train_dir / STAGE_DONE).unlink(missing_ok=True)
            shutil.rmtree(Path(config.output_dir) / "eval" / name, ignore_errors=True)
            run_online(online, resume=True)
    else:
        run_online(online, resume=bool(checkpoints(train_dir)))
    model, tokenizer = load_model(str(train_dir / "final"))
    figures = _figures(evaluate(demo, model, tokenizer, prompts, Path(config.output_dir) / "eval" / name))
    del model
    write_json(train_dir / STAGE_DONE, {"fingerprint": fingerprint.digest, "variant": variant, "seed": seed,
                                        "figures": figures, "train": _train_summary(train_dir)})


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
    """Per metric: the base model's value, each variant's mean over seeds with a hierarchical interval and the
    paired E − plain difference with the sweep's hierarchical interval (seeds and prompts crossed:
    online runs of different seeds differ far more than offline ones, so seeds are not held fixed)."""
    from safealign.eval.paired import metric_differences, metric_intervals
    from safealign.pipelines.demo import stage_outcomes

    out = Path(config.output_dir)

    def table_outcomes(variant: str, seed: int) -> dict[str, Any]:
        """The table's metrics only, so no bootstrap runs for a metric the table would drop."""
        stage = stage_outcomes(demo, out / "eval" / f"{variant}-seed{seed}")
        return {m: stage[m] for m in METRICS if m in stage}

    outcomes = {v: {s: table_outcomes(v, s) for s in config.seeds} for v in config.variants}
    intervals = {v: metric_intervals(outcomes[v]) for v in config.variants}
    differences = (metric_differences(outcomes["e"], outcomes["plain"], label="compare-online: e − plain")
                   if set(config.variants) == {"plain", "e"} else {})
    rows = {}
    for metric in METRICS:
        row: dict[str, Any] = {"before": figures["before"][metric]["value"]}
        for variant in config.variants:
            values = [figures[f"{variant}-seed{s}"][metric]["value"] for s in config.seeds]
            row[variant] = sum(values) / len(values) if None not in values else None
            if metric in intervals[variant]:
                row[f"{variant}_ci95"] = intervals[variant][metric]
        if metric in differences:
            row["e_minus_plain"] = differences[metric]
        rows[metric] = row
    return {"metrics": rows, "stages": figures, "seeds": list(config.seeds), "recipe": config.recipe,
            "train_overrides": list(config.train_overrides)}


def format_table(table: dict[str, Any]) -> str:
    rows = [["held-out metric", "before", "plain RLHF (mean [95%])", "E-RLHF (mean [95%])", "E − plain [95%]"]]
    rows += [[metric, numbers.value(row["before"]),
              *(numbers.with_interval(row.get(v), row.get(f"{v}_ci95")) for v in ("plain", "e")),
              numbers.difference(row.get("e_minus_plain"))] for metric, row in table["metrics"].items()]
    return "\n".join([*numbers.render(rows, markdown=True),
                      f"\nmeans over seeds {table['seeds']}; 95% intervals: seeds and prompts crossed, "
                      "random-effects t (Satterthwaite df)"])


def load_compare_config(path: str | None, overrides: list[str]) -> OnlineCompareConfig:
    return load_config(OnlineCompareConfig, path, overrides)


