"""``safealign demo``: the whole loop on the embedded model, sized for a 2-core CPU.

fetch model → build self-generated safety pairs → evaluate the base model (jailbreak ASR on held-out
harmful prompts, over-refusal on held-out benign ones) → train E-DPO with LoRA → evaluate again →
HTML report. Every stage writes into one run directory and is resumable: re-running the same
command skips finished generations, training that finished, evaluations already recorded, and the refusal
margins and answer retention recorded from the same inputs.

Objective: docs/findings.md records that DPO alone barely makes this model refuse, while DPO plus a
per-token NLL term on the chosen response (the RPO regulariser) does; so the demo's default is
``rpo`` (``dpo + η·NLL``) with η = ``nll_weight``; set it to 0 for pure (E-)DPO. The E-variant is the
reference view: for harmful rows the reference scores the responses given a safety-prefixed prompt.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from safealign.config import save_config, to_dict
from safealign.io import write_json
from safealign.io.summaries import Comparison, DemoSummary, Figure, Figures
from safealign.pipelines import demo_margin
from safealign.pipelines.demo_config import (
    BUILTIN_PREFIX,
    VARIANTS,  # noqa: F401 (the demo's methods, imported from here by tests/test_doc_commands.py)
    DemoConfig,
    eval_config,
    from_saved,
    objective_name,
    train_config,
)
from safealign.pipelines.demo_config import extra_name as _extra_name  # the name sweep_rule.py imports
from safealign.pipelines.demo_helpfulness import Retention, quality_figures
from safealign.pipelines.demo_methods import METHODS, check_methods_on_layout, comparison_pairs, describe

logger = logging.getLogger(__name__)
FRESH = "--fresh"  # the demo's option that starts a run over (safealign/cli/demo.py): what its refusals offer
WALL = "wall_seconds.json"  # the wall time of every call that worked on the run (_WallClock)
# what a demo run writes in its directory: what ``--fresh`` deletes (every other file there is left alone)
OUTPUTS = ("pairs.jsonl", "pairs.unpaired.jsonl", "eval", "train", "summary.json", "report.html", "report.md",
           "config.yaml", "demo_config.json", WALL)  # fmt: skip

def stratified(items: list[Any], n: int) -> list[Any]:
    """The first ``n`` items taking categories in turn, so every category is represented."""
    by_category: dict[str, list[Any]] = {}
    for item in items:
        by_category.setdefault(item.category, []).append(item)
    queues = [list(v) for _, v in sorted(by_category.items())]
    picked: list[Any] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def prompt_sets(config: DemoConfig) -> dict[str, Any]:
    """Every prompt set of the run, built once (before the model loads, so a bad file fails fast)."""
    from safealign.data.builtin import load_prompts

    return {
        "train": stratified(load_prompts("harmful", split="train"), config.harmful_train)
        + stratified(load_prompts("benign", split="train", kind="ordinary"), config.benign_train)
        + stratified(load_prompts("benign", split="train", kind="borderline"), config.borderline_train),
        "harmful_test": stratified(load_prompts("harmful", split="test"), config.harmful_test),
        "benign_test": benign_test_prompts(config),
        "extra_harmful": _extra_sets(config),
        "extra_benign": _extra_benign(config),
    }


def benign_test_prompts(config: DemoConfig) -> list[Any]:
    """The built-in held-out benign prompts (ordinary, then borderline): over-refusal's and the quality flags'."""
    from safealign.data.builtin import load_prompts

    return (stratified(load_prompts("benign", split="test", kind="ordinary"), config.benign_test)
            + stratified(load_prompts("benign", split="test", kind="borderline"), config.borderline_test))


def _pair_params(config: DemoConfig):
    """Pair generation's settings: greedy, ``pair_max_new_tokens`` long, batched as the evaluation, seeded with the
    demo's ``seed``. Its own on purpose: the pairs are training data, built once from the base model, so the
    evaluation's sampling settings (``eval.generation``) must not change them (nor a sweep's shared pairs)."""
    from safealign.eval.backends.base import GenerationParams

    return GenerationParams(max_new_tokens=config.pair_max_new_tokens, batch_size=config.eval.generation.batch_size,
                            seed=config.seed)


def evaluate(config: DemoConfig, model: Any, tokenizer: Any, prompts: dict[str, Any], out: Path,
             before: Path | None = None, wrap_chat: Any = None, reuse_scores: bool = False) -> Figures:
    """Jailbreak ASR (direct + templates), over-refusal and the held-out refusal margins (closed and open:
    safealign/pipelines/demo_margin.py) for one model; returns the demo's figures. ``before``: the base model's
    evaluation (the margin scores its direct answers); None when this is the base model's evaluation itself.
    ``wrap_chat(chat, params)`` wraps the chat model the evaluation queries (a method's inference-time defense), given
    the evaluation's generation params. ``reuse_scores``: closed margins ``out`` holds, scored from the same inputs,
    are read back instead of scored again (a demo run again); False, as a sweep cell calls it, scores them every call
    and records them as it always did. The open margins are read back from the same inputs either way
    (demo_margin.margin_figures)."""
    from safealign.eval.backends.hf import HFChatModel
    from safealign.eval.helpfulness.overrefusal import overrefusal_eval
    from safealign.eval.pipeline import generation_params, run_eval
    from safealign.data.builtin import harmful_behaviors

    behaviors = harmful_behaviors(prompts["harmful_test"])
    evaluation = eval_config(config, out)
    chat = HFChatModel(model, tokenizer)
    chat = wrap_chat(chat, generation_params(evaluation)) if wrap_chat is not None else chat
    jailbreak = run_eval(evaluation, chat_model=chat, model=model, tokenizer=tokenizer, behaviors=behaviors,
                         overwrite_flag=FRESH)
    untuned = [p for extra in prompts["extra_benign"].values() for p in extra]
    # the jailbreak evaluation's generation settings (eval.generation: sampling, stop strings, lengths), so both
    # halves of the evaluation answer alike; under the defaults these are the greedy settings used before
    helpful = overrefusal_eval(chat, prompts["benign_test"] + untuned, generation_params(evaluation),
                               out_dir=out / "helpfulness" / "overrefusal", overwrite_flag=FRESH)
    figures = {name: Figure.of(jailbreak.attacks[attack]["refusal"])
               for name, attack in (("direct_asr", "direct"), ("template_asr", "template"))}
    figures["benign_refusal_rate"] = Figure.of(helpful.refusal_rate["ordinary"])
    figures["borderline_refusal_rate"] = Figure.of(helpful.refusal_rate["borderline"])
    for name in prompts["extra_benign"]:
        figures[f"{name}_refusal_rate"] = Figure.of(helpful.refusal_rate[name])
    figures.update(quality_figures(out, [p.id for p in prompts["benign_test"]]))
    figures.update(demo_margin.margin_figures(model, tokenizer, out, margin_inputs(config, prompts, before or out),
                                              reuse_closed=reuse_scores))
    for name, extra in prompts["extra_harmful"].items():
        extra_config = dataclasses.replace(evaluation, output_dir=str(out / "extra" / name), attacks=["direct"],
                                           attack_params={})
        summary = run_eval(extra_config, chat_model=chat, model=model, tokenizer=tokenizer, behaviors=extra,
                           overwrite_flag=FRESH)
        figures[f"{name}_direct_asr"] = Figure.of(summary.attacks["direct"]["refusal"])
    return figures


def _extra_sets(config: DemoConfig) -> dict[str, list[Any]]:
    """name (file stem) -> up to ``extra_limit`` behaviors spread evenly over the file. HarmBench's
    copyright behaviors are left out: reproducing a text is judged by hashing, not by refusal."""
    from safealign.data.behaviors import load_behaviors

    sets = {}
    for path in config.extra_harmful:
        behaviors = [b for b in load_behaviors(path, what="extra_harmful") if b.category != "copyright"]
        step = max(1, len(behaviors) // max(1, config.extra_limit))
        sets[_extra_name(path)] = behaviors[::step][: config.extra_limit]
    return sets


def _benign_rows(spec: str) -> list[tuple[str, str]]:
    """``(id, prompt)`` of every prompt of an ``extra_benign`` entry: a file, or ``builtin:<name>``."""
    if spec.startswith(BUILTIN_PREFIX):  # the name was checked by DemoConfig.validate
        from safealign.data.builtin import load_untuned_benign

        return [(p.id, p.prompt) for p in load_untuned_benign()]
    from safealign.data.behaviors import load_behaviors

    return [(b.id, b.behavior) for b in load_behaviors(spec, what="extra_benign")]


def _extra_benign(config: DemoConfig) -> dict[str, list[Any]]:
    """name -> a seeded sample of up to ``extra_benign_limit`` of the set's prompts, as over-refusal prompts of
    kind ``name`` (ids prefixed with it, so they never collide with the built-in benign ids). The names are distinct
    and none is a built-in kind (DemoConfig.validate)."""
    import random

    from safealign.eval.helpfulness.overrefusal import HelpfulnessPrompt

    sets = {}
    for spec in config.extra_benign:
        name = _extra_name(spec)
        rows = _benign_rows(spec)
        picked = random.Random(config.seed).sample(rows, min(len(rows), config.extra_benign_limit))
        sets[name] = [HelpfulnessPrompt(f"{name}:{pid}", text, name) for pid, text in picked]
    return sets


def margin_inputs(config: DemoConfig, prompts: dict[str, Any], before: Path) -> demo_margin.MarginInputs:
    """The held-out refusal margins' inputs (safealign/pipelines/demo_margin.py): the held-out harmful prompts, the
    base model's answers in the "before" evaluation ``before`` and which were cut, the built-in refusals and the
    training data's lengths."""
    from safealign.data.builtin import load_refusals

    return demo_margin.margin_inputs({p.id: p.prompt for p in prompts["harmful_test"]}, before, load_refusals(),
                                     max_length=config.train.data.max_length,
                                     max_prompt_length=config.train.data.max_prompt_length)


def stage_outcomes(config: DemoConfig, eval_dir: Path) -> dict[str, dict[str, Any]]:
    """metric -> prompt id -> outcome (attack succeeded / benign prompt refused / answer flagged by a quality rule)
    or, for the held-out refusal margins (closed, and open where scored), the prompt's margin in nats; read back
    from a stage's evaluation; unscored prompts are left out. The quality flags are recomputed from the over-refusal
    records of the built-in benign test prompts, exactly as :func:`quality_figures` counted them, so their rates get
    intervals and paired differences like the others."""
    from safealign.eval.helpfulness import quality
    from safealign.eval.helpfulness.overrefusal import refusal_outcomes
    from safealign.eval.helpfulness.records import latest_by
    from safealign.eval.records import current_records
    from safealign.eval.summary import behavior_outcomes
    from safealign.io import read_jsonl
    from safealign.pipelines.judge_records import JUDGED, judged_records

    out: dict[str, dict[str, Any]] = {}
    for prefix, run, attacks in (("", eval_dir / "jailbreak", ("direct", "template")),
                                 *((f"{name}_", eval_dir / "extra" / name, ("direct",))
                                   for name in map(_extra_name, config.extra_harmful))):
        records = current_records(run / "records.jsonl")
        out.update({f"{prefix}{attack}_asr": behavior_outcomes(records, attack, "refusal") for attack in attacks})
        # ASR under judges added later (safealign judge records): metric "<name>@<label>", from a copy that judged
        # every answer the evaluation holds (one behind its source is left out, with a warning)
        for judged in sorted(run.glob(f"{JUDGED}/*/records.jsonl")):
            label = judged.parent.name
            if (records := judged_records(run, label)) is not None:
                out.update({f"{prefix}{attack}_asr@{label}": behavior_outcomes(records, attack, label)
                            for attack in attacks})
    benign = read_jsonl(eval_dir / "helpfulness" / "overrefusal" / "records.jsonl")
    for kind, metric in (("ordinary", "benign_refusal_rate"), ("borderline", "borderline_refusal_rate")):
        out[metric] = refusal_outcomes(benign, kind)
    for name in map(_extra_name, config.extra_benign):
        out[f"{name}_refusal_rate"] = refusal_outcomes(benign, name)
    latest = latest_by(benign, "id")
    flags = {i: quality.record_flags(latest[i]) for i in (p.id for p in benign_test_prompts(config)) if i in latest}
    out.update({metric: {i: f[flag] for i, f in flags.items()} for flag, metric in quality.FIGURES.items()})
    for files in (demo_margin.CLOSED, demo_margin.OPEN):  # the open one where scored (not in older cells)
        if (margins := demo_margin.read_margins(eval_dir, files)) is not None:
            out[files.figure] = margins
    return {m: {k: v for k, v in o.items() if v is not None} for m, o in out.items()}


def compare_variants(config: DemoConfig, run: Path, a: str, b: str) -> Comparison:
    """Paired difference ``a − b`` of every metric over the training seeds where both variants have it (a metric
    from a judge run later on some stages only, ``direct_asr@<label>``, on those); one with nothing scored for
    both is left out with a warning, never losing the run (safealign.eval.paired)."""
    from safealign.eval.paired import metric_differences, paired_difference

    outcomes = {v: {seed: stage_outcomes(config, run / "eval" / stage)
                    for stage, variant, seed in stages(config) if variant == v} for v in (a, b)}
    return Comparison(a, b, metric_differences(outcomes[a], outcomes[b], label="demo", compare=paired_difference))


def stages(config: DemoConfig) -> list[tuple[str, str, int]]:
    """``(stage name, variant, training seed)`` for every model the demo trains; with one seed the
    stage is named after the variant, else ``<variant>-seed<N>``."""
    several = len(config.train_seeds) > 1
    return [(f"{v}-seed{s}" if several else v, v, s) for v in config.variants for s in config.train_seeds]


def train_stage(config: DemoConfig, variant: str, seed: int, pairs_path: Path, out: Path) -> Path:
    """Train one variant and seed into ``out`` (resuming its last checkpoint); returns the final weights (a LoRA
    adapter or, with ``train.lora.enabled=false``, the whole model)."""
    from transformers.trainer_utils import get_last_checkpoint

    from safealign.train.run import run_training

    final = out / "final"
    # train_summary.json is written once the final weights are saved, whatever their kind (train/run.py, finish_run);
    # adapter_config.json also marks a finished LoRA run (the demo's only kind before)
    if final.is_dir() and ((out / "train_summary.json").is_file() or (final / "adapter_config.json").exists()):
        logger.info("demo: %s already trained", final)
        return final
    resume = out.is_dir() and get_last_checkpoint(str(out)) is not None
    return run_training(train_config(config, variant, pairs_path, out, seed), resume=resume,
                        overwrite_flag=FRESH).final_dir


def load_trained(final: Path):
    from safealign.models.load import load_model, merge_adapter

    model, tokenizer = load_model(str(final))
    return merge_adapter(model).eval(), tokenizer


def build_pairs(config: DemoConfig, model: Any, tokenizer: Any, prompts: dict[str, Any], pairs_path: Path):
    """Self-generated safety pairs from the train prompts (resumable); returns the build report."""
    from safealign.data.builtin import load_refusals
    from safealign.eval.backends.hf import HFChatModel
    from safealign.pipelines.build_safety import build_safety_pairs

    return build_safety_pairs(HFChatModel(model, tokenizer), prompts["train"], load_refusals(), pairs_path,
                              params=_pair_params(config), seed=config.seed, cut_answers=config.cut_answers)


def _check_same_config(config: DemoConfig, run: Path) -> str:
    """A demo run directory holds one configuration (safealign.io.rundir); ``--fresh`` starts over.
    Returns the run's fingerprint digest."""
    from safealign.io.rundir import claim_run_dir, demo_fingerprint, legacy_fingerprint

    def legacy(path: Path):  # demo_config.json, as written before fingerprints; a newer setting counts as its default
        return legacy_fingerprint(path / "demo_config.json",  # flat keys of older versions go through the aliases
                                  lambda p: {**to_dict(DemoConfig()), **from_saved(json.loads(p.read_text()))},
                                  demo_fingerprint)

    fingerprint = demo_fingerprint(to_dict(config), defaults=to_dict(DemoConfig()))
    claim_run_dir(run, fingerprint, outputs=OUTPUTS, legacy=legacy, overwrite_flag=FRESH)
    return fingerprint.digest


def check_before_loading(config: DemoConfig) -> None:
    """Everything checked before a model loads or ``--fresh`` deletes anything: the config's values, variants
    and seeds (DemoConfig.validate), and every method's training config on the pairs' layout."""
    config.validate()
    check_methods_on_layout(config)  # a method whose data lacks a field fails here, before the model loads


def run_demo(config: DemoConfig) -> DemoSummary:
    """Run (or resume) the demo; returns the summary also written to ``summary.json`` (the report is
    written beside it, ``report.html`` and ``report.md``)."""
    from safealign.models import load_model
    from safealign.models.identity import loaded_identity
    from safealign.report import build_report

    started = time.time()
    check_before_loading(config)
    methods = {v: f"{METHODS.get(v).summary}: {describe(train_config(config, v, Path('pairs.jsonl'), Path('.')))}"
               for v in dict.fromkeys(config.variants)}
    run = Path(config.output_dir)
    fingerprint = _check_same_config(config, run)
    clock = _WallClock(run, started)
    save_config(config, run / "config.yaml")
    prompts = prompt_sets(config)
    model, tokenizer = load_model(config.model)
    pairs_path = run / "pairs.jsonl"
    build = build_pairs(config, model, tokenizer, prompts, pairs_path)
    model_identity = loaded_identity(model)
    before = evaluate(config, model, tokenizer, prompts, run / "eval" / "before", reuse_scores=True)
    del model
    clock.record()
    after, trained_identity = {}, {}
    retention = Retention(run / "eval" / "before", [p.id for p in prompts["benign_test"]])
    for stage, variant, seed in stages(config):
        method = METHODS.get(variant)
        if method.trains:
            trained, trained_tokenizer = load_trained(train_stage(config, variant, seed, pairs_path,
                                                                  run / "train" / stage))
        else:  # an inference-time method: the starting model, wrapped at evaluation
            trained, trained_tokenizer = load_model(config.model)
        trained_identity[stage] = loaded_identity(trained)
        after[stage] = evaluate(config, trained, trained_tokenizer, prompts, run / "eval" / stage,
                                before=run / "eval" / "before", wrap_chat=method.wrap_chat, reuse_scores=True)
        if not retention.recorded(stage, run / "eval" / stage):
            retention.score_trained(stage, run / "eval" / stage, trained, trained_tokenizer)
        del trained
        clock.record()
    # the base model again, to score the trained models' answers (not loaded when every stage's was recorded)
    for stage, figures in retention.finish(lambda: load_model(config.model)).items():
        after[stage].update(figures)
    comparisons = [compare_variants(config, run, a, b) for a, b in comparison_pairs(config.variants)]
    comparison = next((c for c in comparisons if (c.a, c.b) == ("e-dpo", "dpo")), None)
    summary = DemoSummary(model=config.model, judge="refusal (AdvBench evaluation substrings)",
                          pairs=build.describe(), objective=objective_name(config), before=before, after=after,
                          comparison=comparison, comparisons=comparisons, methods=methods,
                          wall_seconds=clock.record(),
                          model_identity=model_identity, trained_identity=trained_identity,
                          run_fingerprint=fingerprint)
    write_json(run / "summary.json", summary.to_json())
    build_report(run)
    return summary


class _WallClock:
    """The run's wall time over every call that worked on it, not only the last: each call's seconds so far are
    recorded in ``wall_seconds.json`` (``{"runs": [...]}``, one entry per call) after each stage, so a call
    stopped part-way still counts up to its last finished stage, and the summary gives their sum."""

    def __init__(self, run: Path, started: float) -> None:
        self.path, self.started = run / WALL, started
        self.earlier = _earlier_walls(run)

    def record(self) -> float:
        """Record this call's seconds so far; returns the run's total."""
        runs = [*self.earlier, round(time.time() - self.started, 1)]
        write_json(self.path, {"runs": runs})
        return round(sum(runs), 1)


def _earlier_walls(run: Path) -> list[float]:
    """The seconds of the calls before this one: ``wall_seconds.json``, or for a run finished by a version that
    kept none, its summary's wall time (that version's last call only); unreadable, none (with a warning)."""
    for path, key in ((run / WALL, "runs"), (run / "summary.json", "wall_seconds")):
        if not path.is_file():
            continue
        try:
            walls = json.loads(path.read_text())[key]
        except (OSError, ValueError, KeyError, TypeError):
            walls = None
        walls = walls if isinstance(walls, list) else [walls]
        if all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in walls):
            return [float(w) for w in walls]
        logger.warning("%s: no readable wall time of the earlier calls; the summary counts this call's only", path)
        return []
    return []


def format_summary(summary: DemoSummary) -> str:
    """The before/after table printed at the end of the demo."""
    columns = summary.columns("after ({})")
    rows = ["direct_asr", "template_asr", "benign_refusal_rate", "borderline_refusal_rate"]
    rows += sorted({k for c in columns.values() for k in c if k not in rows})
    with_ci = len(columns) <= 3  # wider tables show values only; summary.json keeps the intervals
    width = max(len(c) for c in columns) + 2 + (12 if with_ci else 0)
    label = max(len(r) for r in rows) + 2
    lines = [f"{'metric':<{label}}" + "".join(f"{c:>{width}}" for c in columns)]
    for row in rows:
        cells = "".join(f"{_cell(columns[c].get(row), with_ci):>{width}}" for c in columns)
        lines.append(f"{row:<{label}}{cells}")
    for comparison in summary.comparisons or ([summary.comparison] if summary.comparison else []):
        lines.append(f"\npaired difference {comparison.a} − {comparison.b} (mean over seeds, 95% bootstrap "
                     "interval over prompts; discordant prompt×seed counts):")
        for metric, d in comparison.metrics.items():
            interval = f"[{d.ci95[0]:+.3f},{d.ci95[1]:+.3f}]" if d.ci95 else f"(no interval: {d.n_prompts} prompt)"
            lines.append(
                f"{metric:<{label}}{d.diff:+.3f} {interval}  {d.seeds} seed(s) × "
                f"{d.n_prompts} prompts; only {comparison.a}: {d.only_a}, "
                f"only {comparison.b}: {d.only_b}"
            )
    return "\n".join(lines)


def _cell(figure: Figure | None, with_ci: bool = True) -> str:
    if figure is None or figure.value is None:
        return "-"
    if not with_ci or figure.ci95 is None:  # none recorded (one prompt): no interval, never a made-up one
        return f"{figure.value:.2f}"
    lo, hi = figure.ci95
    return f"{figure.value:.2f} [{lo:.2f},{hi:.2f}]"
