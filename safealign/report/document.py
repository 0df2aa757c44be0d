"""The report as a renderer-neutral document: sections of paragraphs, tables, plots, examples, code.

Every string in a block is plain, untrusted text; the renderers escape it. Numbers are formatted
here once, so the HTML and markdown reports show the same values.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence, Union

from safealign.eval.asr_at_n import TARGETS as FORECAST_TARGETS
from safealign.eval.judges.agreement import ALL_ATTEMPTS
from safealign.eval.summary import ANY_ATTACK, run_warnings
from safealign.io.summaries import is_rate
from safealign.report import plots
from safealign.eval.helpfulness.quality import RULES as QUALITY_RULES
from safealign.report.defenses import COST_NOTE as DEFENSE_COST_NOTE
from safealign.report.defenses import DefenseRow, defense_rows
from safealign.report.helpfulness import flagged_examples, retention_rows
from safealign.report.load import RunData, Stage, helpfulness_summary, jailbreak_dir, relative
from safealign.report.models import CAPTION as MODELS_CAPTION
from safealign.report.models import COLUMNS as MODELS_COLUMNS
from safealign.report.models import identity_rows
from safealign.report.results import (
    UNITS, Example, Metric, as_metric, asr_by_category, asr_rows, examples, headline, judge_descriptions,
    mtbench_scores, refusal_rates,
)

OVERREFUSAL_NOTE = ("Refusal = the answer contains a refusal substring (AdvBench list) or is empty. Polite "
                    "deflections without those phrases are not counted, and helpful answers that use one (\"As an "
                    "example\", \"not illegal\") are, so this rate errs both ways: no bound on unhelpful "
                    "answers.")  # fmt: skip
RETENTION_NOTE = ("Mean over benign prompts of the per-token log-prob difference between the two models on the "
                  "same answer, with a paired bootstrap 95% interval over prompts; 0 = identical models, negative "
                  "= the trained model moved away from the base model's answers (or the base model would not give "
                  "the trained model's).")  # fmt: skip
QUALITY_NOTE = "; ".join(f"{k}: {v}" for k, v in {"empty": "whitespace only", **QUALITY_RULES}.items())
MTBENCH_NOTE = ("Single-answer grading, 1–10 per assistant turn; unparseable judge outputs are unscored (counted, "
                "never guessed). Interval: mean ± t·SE with the question as the unit (a question's two turns "
                "are one observation; Student's t with n − 1 df); n counts questions.")  # fmt: skip
MTBENCH_FORMATS = {"fastchat": "FastChat's MT-Bench judge prompts and rating parser (docs/judges.md)",
                   "project": "the project's grading prompt, rating parsed strictly from 'Rating: [[N]]'"}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Para:
    text: str
    tone: str = "plain"  # plain | note | warn


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    collapsed: bool = False


@dataclass(frozen=True)
class Plot:
    png: bytes
    alt: str


@dataclass(frozen=True)
class Examples:
    items: tuple[Example, ...]
    max_chars: int = 600


@dataclass(frozen=True)
class Code:
    title: str
    text: str


Block = Union[Para, Table, Plot, Examples, Code]


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section]


def fmt(m: Metric | None, *, percent: bool = True) -> str:
    if m is None or m.value is None:
        return "—" if m is None or not m.unscored else f"— ({m.unscored} unscored)"
    scale, unit, digits = (100.0, "%", 1) if percent else (1.0, "", 2)
    text = f"{m.value * scale:.{digits}f}{unit}"
    if m.ci95:
        text += f" [{m.ci95[0] * scale:.{digits}f}–{m.ci95[1] * scale:.{digits}f}]"
    if m.n is not None:
        text += f" n={m.n}"
    if m.unscored:
        text += f", {m.unscored} unscored"
    return text


def _delta(before: Metric | None, after: Metric | None, unit: str | None = None) -> str:
    """A rate's change in points (and relative); with ``unit``, a number's change in that unit."""
    if before is None or after is None or before.value is None or after.value is None:
        return "—"
    if unit is not None:
        return f"{after.value - before.value:+.2f} {unit}"
    points = (after.value - before.value) * 100
    rel = f", {points / (before.value * 100):+.0%} rel." if before.value else ""
    return f"{points:+.1f} pts{rel}"


def _headline(data: RunData) -> Section | None:
    columns, rows = headline(data)
    if not rows:
        return None
    base = columns.index("before") if "before" in columns else None
    deltas = [c for c in columns if c != "before"] if base is not None else []
    table_rows = []
    for key, metrics in rows:
        unit = None if is_rate(key) else UNITS.get(key, "")  # a figure that is no rate: as the number it is
        cells = [fmt(m, percent=unit is None) for m in metrics]
        cells += [_delta(metrics[base], metrics[columns.index(c)], unit) for c in deltas]
        table_rows.append((key.replace("_", " ") + (f" ({unit})" if unit else ""), *cells))
    cols = ("metric", *columns, *(f"Δ {c.removeprefix('after: ')} vs before" for c in deltas))
    blocks: list[Block] = [
        Table(cols, tuple(table_rows), "Rates with 95% Wilson intervals; the held-out refusal margin and answer "
              "retention in their units, with bootstrap intervals over prompts; where the run recorded them.")
    ]
    wall = data.demo_summary.wall_seconds if data.demo_summary else None
    if isinstance(wall, (int, float)):
        blocks.append(Para(f"Wall clock for the whole run: {wall / 60:.1f} min.", "note"))
    blocks.append(Para("ASR here is scored by the judge(s) listed under Jailbreak attacks; with the refusal-substring "
                       "judge it errs both ways (deflections count as jailbreaks, complying answers with a listed "
                       "phrase as refusals), so it is no bound.", "note"))  # fmt: skip
    return Section("Before / after", "summary", blocks)


def _comparisons(data: RunData) -> list[Section | None]:
    """One section per paired comparison of the demo (each method − the baseline; E-variant − its method)."""
    summary = data.demo_summary
    if summary is None:
        return []
    return [_comparison(c) for c in summary.comparisons or ([summary.comparison] if summary.comparison else [])]


def _comparison(comparison: Any) -> Section | None:
    """The demo's paired difference of two methods (e.g. E-DPO − DPO) per metric, over training seeds."""
    a, b = comparison.a, comparison.b
    rows = []
    for metric, d in comparison.metrics.items():
        # a rate in percent and its difference in points; any other metric (the held-out refusal margin, nats)
        # as the number it is
        scale, unit, delta, n = (100.0, "%", " pts", 1) if is_rate(metric) else (1.0, "", "", 2)
        interval = (f"[{d.ci95[0] * scale:+.{n}f}, {d.ci95[1] * scale:+.{n}f}]" if d.ci95
                    else f"(no interval: {d.n_prompts} prompt)")  # one prompt: no spread to estimate
        rows.append((metric.replace("_", " "), f"{d.rate_a * scale:.{n}f}{unit}", f"{d.rate_b * scale:.{n}f}{unit}",
                     f"{d.diff * scale:+.{n}f}{delta} {interval}", str(d.seeds),
                     str(d.n_prompts), f"{d.only_a} / {d.only_b}"))
    if not rows:
        return None
    table = Table(("metric", a, b, f"{a} − {b} (95% CI)", "seeds", "prompts", f"only {a} / only {b}"), tuple(rows),
                  "Rates (and the mean held-out refusal margin, in nats) are means over training seeds on the prompts "
                  "scored for both variants.")
    note = Para("Both variants trained from the same pairs with the same seeds and evaluated on the same prompts. "
                "The interval is a paired bootstrap over prompts (seeds kept as run); the last column counts "
                "prompt×seed cases where only one variant's outcome was positive (for the margin: where that "
                "variant's margin was the higher).", "note")
    return Section(f"Paired comparison: {a} vs {b}", "comparison", [table, note])


def _defenses(data: RunData, with_plots: bool) -> Section | None:
    """ASR, over-refusal and cost per answer of the bare model and each defense (issue 17), every ASR by one judge
    and every over-refusal rate by the detector named in the caption (a row by another says so)."""
    found = defense_rows(data)
    attacks, judge, rows = found.attacks, found.judge, found.rows
    if not rows:
        return None
    detector = next((r.over_refusal_judge for r in rows if r.over_refusal_judge), "")
    cols = ("model", "defenses", *(f"{a} ASR" for a in attacks), "over-refusal", "tokens/answer", "s/answer",
            "× base tokens", "× base s", "defense refusals")  # fmt: skip
    table = tuple((r.name, r.defenses, *(_defense_asr(r, a, judge) for a in attacks), _defense_refusal(r, detector),
                   _num(r.cost.get("generated_tokens")), _num(r.cost.get("seconds")),
                   _times(r.tokens_multiple), _times(r.seconds_multiple), str(r.cost.get("defense_refusals", "—")))
                  for r in rows)  # fmt: skip
    by = f"over-refusal by {detector}" if detector else "over-refusal's detector not recorded"
    asr = f"ASR by judge {judge} in every row (a model it did not score is marked)" if judge else "no judge recorded"
    blocks: list[Block] = [Table(cols, table, f"Rates with 95% Wilson intervals; {asr}; {by}."),
                           Para(DEFENSE_COST_NOTE, "note")]  # fmt: skip
    first = attacks[0] if attacks else None
    points = [(r.name, r.over_refusal.value, r.asr[first].value, r.tokens_multiple) for r in rows
              if first and r.over_refusal and r.over_refusal.value is not None and r.asr.get(first)
              and r.asr[first].value is not None]  # fmt: skip
    png = plots.cost_scatter(points, ylabel=f"{first} ASR, judge {judge} (%)",
                             xlabel=f"over-refusal on benign prompts, {detector or 'detector not recorded'} (%)") \
        if with_plots else None
    if png:
        blocks.insert(1, Plot(png, f"{first} ASR (judge {judge}) against over-refusal; marker area = tokens per answer "
                                   "× bare model"))
    return Section("Defenses: safety, helpfulness and cost", "defenses", blocks)


def _defense_asr(row: DefenseRow, attack: str, judge: str | None) -> str:
    return f"not judged by {judge}" if attack in row.unjudged else fmt(row.asr.get(attack))


def _defense_refusal(row: DefenseRow, detector: str) -> str:
    """The rate, naming its detector where it is not the caption's."""
    other = row.over_refusal is not None and row.over_refusal_judge and row.over_refusal_judge != detector
    return f"{fmt(row.over_refusal)} (by {row.over_refusal_judge})" if other else fmt(row.over_refusal)


def _times(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None else "—"


def _answers(data: RunData) -> Section | None:
    """Answer retention (nats per token) and benign answers a quality flag caught (issue 14)."""
    columns, rows = retention_rows(data)
    blocks: list[Block] = [Table(("answer retention", *columns), tuple((label, *(fmt(m, percent=False) for m in ms))
                                 for label, ms in rows), RETENTION_NOTE)] if rows else []
    if items := flagged_examples(data):
        blocks += [Para(f"Quality flags (rates in the table above): {QUALITY_NOTE}", "note"), Examples(tuple(items))]
    return Section("Benign answers beyond refusal", "answers", blocks) if blocks else None


def _models(data: RunData) -> Section | None:
    rows = identity_rows(data)
    return Section("Models", "models", [Table(MODELS_COLUMNS, tuple(rows), MODELS_CAPTION)]) if rows else None


def _training(data: RunData, with_plots: bool) -> Section | None:
    if not data.trainings:
        return None
    keys = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "ranking_accuracy")
    rows = []
    for run in data.trainings:
        last = next((r for r in reversed(run.metrics) if "loss" in r), {})
        s = run.summary or {}
        info = [str(s.get(k, "—")) for k in ("steps", "examples", "reference", "transform")]
        wall = s.get("wall_seconds")
        info.append(f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) else "—")
        values = [f"{last[k]:.3f}" if isinstance(last.get(k), (int, float)) else "—" for k in keys]
        rows.append((run.name, *info, *values))
    names = ("loss", "margin", "reward acc.", "logp chosen", "logp rejected", "ranking acc.")
    cols = ("variant", "steps", "examples", "reference", "transform", "wall", *names)
    blocks: list[Block] = [
        Table(
            cols,
            tuple(rows),
            "Metrics at the last logging step (margin = rewards/margins; log-probs summed over response tokens).",
        )
    ]
    png = plots.training_curves(data.trainings) if with_plots else None
    if png:
        blocks.insert(
            0, Plot(png, "Training curves: loss, reward margin, chosen/rejected log-probs, accuracies per variant")
        )
    for run in data.trainings:
        if s := run.summary:
            blocks.append(Code(f"{run.name}: train_summary.json", json.dumps(s, indent=2, ensure_ascii=False)))
    return Section("Training", "training", blocks)


def _entanglement(data: RunData, with_plots: bool) -> Section | None:
    runs = [r for r in data.trainings if r.diagnostics or r.diagnostic_files]
    if not runs:
        return None
    blocks: list[Block] = [Para("Gradient entanglement probe: a positive cosine between the gradients of the chosen "
                                "and rejected log-probs means pushing the margin up also moves both log-probs "
                                "together, so a wider margin need not make the chosen (refusal) answer more likely.",
                                "note")]  # fmt: skip
    png = plots.entanglement_curves(runs) if with_plots else None
    if png:
        blocks.append(Plot(png, "Entanglement probe: gradient cosine and log-prob changes over training"))
    cols = ("variant", "step", "cosine", "ratio", "delta_chosen", "delta_rejected")
    rows = tuple((r.name, *(_num(d.get(c)) for c in cols[1:])) for r in runs for d in r.diagnostics[-1:])
    if rows:
        blocks.append(Table(cols, rows, "Last probe of each run."))
    for run in runs:
        for name, content in run.diagnostic_files.items():
            blocks.append(Code(f"{run.name}: diagnostics/{name}", json.dumps(content, indent=2, ensure_ascii=False)))
    return Section("Gradient entanglement", "entanglement", blocks)


def _num(v: object) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "—" if v is None else str(v)
    return str(v) if isinstance(v, int) else f"{v:.4g}"


def _per_stage(data: RunData, getter: Callable, title: str, anchor: str, grader: Callable[[Stage], str], note: str, *,
               percent: bool, ylabel: str, ylim: tuple[float, float] | None, with_plots: bool,
               warnings: list[Block]) -> Section | None:  # fmt: skip
    """One table (and plot) of every stage's ``getter`` figures when one grader (``grader(stage)``: the judge or
    refusal detector, as the note names it) scored them all; else one per grader, captioned with it, as the ASR
    tables are per judge: a stage graded by another judge is on another scale and never sits beside the others
    under a note naming only the first stage's judge."""
    per_stage = {s.name: getter(s) for s in data.stages}
    per_stage = {k: v for k, v in per_stage.items() if v}
    if not per_stage:
        return Section(title, anchor, warnings) if warnings else None
    by = {s.name: grader(s) for s in data.stages if s.name in per_stage}
    graders = list(dict.fromkeys(by.values()))
    blocks: list[Block] = []
    for name in graders:
        series = {s: v for s, v in per_stage.items() if by[s] == name}
        groups = list(dict.fromkeys(g for v in series.values() for g in v))
        rows = tuple((g, *(fmt(series[s].get(g), percent=percent) for s in series)) for g in groups)
        blocks.append(Table(("", *series), rows, f"{name}." if len(graders) > 1 else ""))
        png = plots.grouped_bars(groups, series, ylabel=ylabel, ylim=ylim, percent=percent) if with_plots else None
        if png:
            caption = f"{title}: before vs after with 95% intervals" + (f"; {name}" if len(graders) > 1 else "")
            blocks.insert(len(blocks) - 1, Plot(png, caption))
    if len(graders) > 1:
        blocks += [Para("The stages were graded by different judges (each table names its own): their figures are "
                        "not comparable across tables.", "warn"), Para(note, "note")]
    else:
        blocks.append(Para(f"{graders[0]}. {note}", "note"))
    return Section(title, anchor, [*blocks, *warnings])


def _refusal_detector(stage: Stage) -> str:
    """The refusal detector of a stage's over-refusal rates, as the report names it."""
    return f"Judge: {(stage.overrefusal.judge if stage.overrefusal else None) or 'not recorded'}"


def _mtbench_judge(stage: Stage) -> str:
    """The judge model and prompt format of a stage's MT-Bench scores, as the report names them."""
    summary = stage.mtbench
    form = summary.extra.get("judge_format", "project") if summary else "project"
    return f"Judge model: {(summary.judge if summary else None) or 'not recorded'}; {MTBENCH_FORMATS.get(form, form)}"


def _jailbreak(data: RunData, with_plots: bool) -> Section | None:
    rows = {s.name: asr_rows(s) for s in data.stages}
    if not any(rows.values()):
        return None
    judges = list(dict.fromkeys(r.judge for rs in rows.values() for r in rs))
    blocks: list[Block] = []
    for judge in judges:
        series = {s: {r.attack: r.metric for r in rs if r.judge == judge} for s, rs in rows.items()}
        series = {s: m for s, m in series.items() if m}
        attacks = list(dict.fromkeys(a for m in series.values() for a in m))
        table = tuple((a, *(fmt(series[s].get(a)) for s in series)) for a in attacks)
        blocks.append(
            Table(("attack", *series), table, f"ASR by judge '{judge}' (95% Wilson intervals; n = behaviors).")
        )
        png = plots.grouped_bars(attacks, series, ylabel=f"ASR, judge {judge} (%)", ylim=(0, 100), percent=True) \
            if with_plots else None  # fmt: skip
        if png:
            blocks.insert(len(blocks) - 1, Plot(png, f"Attack success rate per attack, judge {judge}"))
    for judge, desc in judge_descriptions(data.stages).items():
        blocks.append(Para(f"Judge '{judge}': {desc or 'no description recorded'}", "note"))
    for stage in data.stages:  # not finished; behaviors cut for length; prefill not continued by a remote server
        file = relative(jailbreak_dir(stage.path) / "summary.json", data.root)
        for line in run_warnings(stage.jailbreak_summary) if stage.jailbreak_summary else []:
            blocks.append(Para(f"{stage.name}: {file}: {line}", "warn"))
        if any("recomputed" in r.source for r in rows[stage.name]):
            blocks.append(Para(_recomputed(data, stage), "warn"))
    blocks += _aggregate_tables(data)
    blocks += _category_tables(data) + _judge_agreement_tables(data) + _asr_at_n_blocks(data, with_plots)
    return Section("Jailbreak attacks", "asr", blocks)


def _recomputed(data: RunData, stage: Stage) -> str:
    """Why a stage's ASRs come from its records, naming both files (any_attack is recomputed with them)."""
    jb = jailbreak_dir(stage.path)
    why = "was absent or unreadable" if stage.jailbreak_summary is None else "recorded no ASRs"
    if stage.recomputed:
        why = ("was written under the older rule (a behavior with an unscored attempt and no harmful one left out "
               "of n): the ASRs by category and the means over attacks below are recomputed too")  # fmt: skip
    return (f"{stage.name}: ASRs recomputed from {relative(jb / 'records.jsonl', data.root)} because "
            f"{relative(jb / 'summary.json', data.root)} {why}; they cover the behaviors recorded there.")


def _unfinished(data: RunData, kind: str, unit: str) -> list[Block]:
    """A warning per stage whose ``kind`` summary (``overrefusal``, ``mtbench``) counts ``unit`` without a
    record: the evaluation was interrupted, and its figures cover the recorded ones only."""
    blocks: list[Block] = []
    for stage in data.stages:
        summary = stage.overrefusal if kind == "overrefusal" else stage.mtbench
        if summary is not None and summary.missing:
            file = helpfulness_summary(stage.path, kind) or stage.path / "helpfulness" / kind / "summary.json"
            blocks.append(Para(f"{stage.name}: {relative(file, data.root)}: {summary.missing} {unit} without a "
                               "record (evaluation not finished?); the figures cover the recorded ones only",
                               "warn"))  # fmt: skip
    return blocks


def _aggregate_tables(data: RunData) -> list[Block]:
    """The mean of the per-attack ASRs, per stage and judge (safealign/eval/aggregate.py): any-of-k, and by
    HarmBench's per-test-case rule where the summary records it."""
    rows = []
    for stage in data.stages:
        block = stage.jailbreak_summary.mean_over_attacks if stage.jailbreak_summary else {}
        for judge, agg in block.items():
            if agg.get("mean") is None:
                continue
            per_case = agg.get("test_case_mean") or {}
            rows.append((stage.name, judge, str(agg.get("n_attacks")), *_mean_cells(agg), str(agg.get("n_behaviors")),
                         " ".join(_mean_cells(per_case)) if per_case.get("mean") is not None else "—"))
    if not rows:
        return []
    headers = ("stage", "judge", "attacks", "mean ASR over attacks", "95% CI (bootstrap over behaviors)", "behaviors",
               "mean per test case (HarmBench's rule) [95% CI]")
    return [Table(headers, tuple(rows), "Mean over attacks: the plain mean of the per-attack ASRs above (any_attack "
                  "excluded), under the judge named in each row. Those ASRs are any-of-k (a behavior counts when any "
                  "attempt is judged harmful), which runs higher than HarmBench's rule (each behavior scored by the "
                  "share of its attempts judged harmful) for attacks with several attempts per behavior. Where no "
                  "resample could vary (each attack's outcome the same on every behavior), the interval is built from "
                  "the attacks' exact binomial bounds (docs/attacks.md).")]


def _mean_cells(agg: dict) -> tuple[str, str]:
    ci = agg.get("ci95")  # none recorded: no interval to show, never a made-up one
    return f"{100 * agg['mean']:.1f}%", f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "—"


def _asr_at_n_blocks(data: RunData, with_plots: bool) -> list[Block]:
    """ASR@N curves of sampling attacks (best_of_n) and the power-law forecast (safealign/eval/asr_at_n.py)."""
    curves: dict[str, list] = {}
    rows = []
    for stage in data.stages:
        block = stage.jailbreak_summary.asr_at_n if stage.jailbreak_summary else {}
        for attack, per_judge in block.items():
            for judge, result in per_judge.items():
                label = f"{stage.name}: {attack}, judge {judge}"
                curves[label] = result.get("overall") or []
                rows.append((stage.name, attack, judge, *_forecast_cells(result.get("fit") or {})))
    if not rows:
        return []
    headers = ("stage", "attack", "judge", "fit range of N", *(f"N for {t:.0%} ASR" for t in FORECAST_TARGETS))
    table = Table(headers, tuple(rows),
                  "Budget forecast from the fit -log ASR@N = a*N^-b; '(extrapolated)' lies beyond the fitted range.")
    png = plots.asr_at_n_curves(curves) if with_plots else None
    return ([Plot(png, "ASR@N against the number of attempts per behavior")] if png else []) + [table]


def _forecast_cells(fit: dict) -> tuple[str, ...]:
    if not fit.get("fit_range"):
        return ("no fit: " + str(fit.get("reason", "no data")), *("-" for _ in FORECAST_TARGETS))
    lo, hi = fit["fit_range"]
    cells = []
    for target in FORECAST_TARGETS:  # the keys eval.asr_at_n writes: str(target)
        f = (fit.get("forecast") or {}).get(str(target)) or {}
        n = f.get("n")
        if n is None:  # why there is no number: not growing with N, beyond float range, or already reached
            cells.append(str(f.get("reason") or "-"))
        else:
            cells.append(f"{n:,.1f}" + (" (extrapolated)" if f.get("extrapolated") else ""))
    return (f"{lo}..{hi}", *cells)


def _judge_agreement_tables(data: RunData) -> list[Block]:
    """When several judges scored a stage: the ASR under each side by side with how often they agree (Wilson
    interval). The pooled row (every attempt of every attack) shows the ASR under any attack; with one attack it
    would repeat that attack's row and is left out."""
    tables: list[Block] = []
    for stage in (s for s in data.stages if s.jailbreak_summary and s.jailbreak_summary.judge_agreement):
        summary = stage.jailbreak_summary
        scopes = summary.judge_agreement
        rows = []
        for attack, pairs in scopes.items():
            if attack == ALL_ATTEMPTS and len(scopes) == 2:
                continue
            scope, name = (ANY_ATTACK, "all attacks") if attack == ALL_ATTEMPTS else (attack, attack)
            for pair, agree in pairs.items():
                a, _, b = pair.partition("|")
                kappa, rate = agree.get("kappa"), agree["agreement"]
                low, high = rate.get("low"), rate.get("high")
                ci95 = (low, high) if low is not None and high is not None else None
                asr_a, asr_b = (fmt(as_metric(summary.stats(scope, j), "asr")) for j in (a, b))
                rows.append((name, a, asr_a, b, asr_b, fmt(Metric(rate["value"], ci95, agree["n"])),
                             "—" if kappa is None else f"{kappa:.2f}", f"{agree['a_only']} / {agree['b_only']}"))
        tables.append(Table(("attack", "judge A", "ASR A", "judge B", "ASR B", "agreement", "κ", "A only / B only"),
                            tuple(rows), f"Judges side by side: {stage.name} (agreement over attempts; the ASR of "
                                         "'all attacks' is under any attack)"))
    return tables


def _category_tables(data: RunData) -> list[Block]:
    """One collapsed table per attack × judge: categories down, stages across."""
    per_stage = {s.name: asr_by_category(s) for s in data.stages}
    keys = list(dict.fromkeys(k for cats in per_stage.values() for k in cats))
    tables: list[Block] = []
    for attack, judge in keys:
        stages = [s for s, cats in per_stage.items() if cats.get((attack, judge))]
        categories = list(dict.fromkeys(c for s in stages for c in per_stage[s][(attack, judge)]))
        rows = tuple((c, *(fmt(per_stage[s][(attack, judge)].get(c)) for s in stages)) for c in categories)
        tables.append(Table(("category", *stages), rows, f"ASR by category: {attack}, judge {judge}", True))
    return tables


def _examples(data: RunData) -> Section | None:
    items = examples([s for s in data.stages if s.jailbreak_records])
    if not items:
        return None
    note = Para(
        "Model outputs are shown as inert text and truncated; they are adversarial and may be offensive.", "note"
    )
    return Section("Example completions", "examples", [note, Examples(tuple(items))])


def _configs(data: RunData) -> Section | None:
    if not data.configs:
        return None
    return Section("Resolved configurations", "configs", [Code(name, text) for name, text in data.configs.items()])


def _missing(data: RunData) -> Section | None:
    blocks: list[Block] = [Para(f"Not found: {m}", "warn") for m in data.missing]
    blocks += [Para(p, "warn") for p in dict.fromkeys(data.problems)]  # a file read twice is named once
    return Section("Missing or unreadable pieces", "missing", blocks) if blocks else None


def _guarded(title: str, anchor: str, files: Callable[[], list[str]],
             build: Callable[[], Section | list[Section | None] | None]) -> list[Section | None]:
    """The section(s) ``build`` makes; when it fails on data it did not expect (a hand-edited file, or one from
    another version, that reading did not catch), a section saying so and naming ``files()``, so the rest of
    the report still renders. The failure is logged with its traceback: it may as well be a bug here."""
    try:
        built = build()
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        named = ", ".join(files()) or "the run directory"
        logger.error("report section %r could not be built from %s", title, named, exc_info=exc)
        return [Section(title, anchor, [Para(f"This section could not be built from {named} ({type(exc).__name__}: "
                                             f"{exc}); the file's content is not what this version expects.",
                                             "warn")])]  # fmt: skip
    return built if isinstance(built, list) else [built]


def _unique_anchors(sections: list[Section]) -> list[Section]:
    """Every section's anchor made unique (``comparison``, ``comparison-2``, ...), so each link finds its section."""
    seen: set[str] = set()
    for section in sections:
        anchor, n = section.anchor, 1
        while anchor in seen:
            n += 1
            anchor = f"{section.anchor}-{n}"
        seen.add(anchor)
        section.anchor = anchor
    return sections


def build_document(data: RunData, *, with_plots: bool = True) -> Document:
    from safealign.report.sweep import sweep_sections

    root = data.root
    top = lambda: ["summary.json"]  # noqa: E731
    jailbreak = lambda: [relative(jailbreak_dir(s.path) / "summary.json", root) for s in data.stages]  # noqa: E731
    helpfulness = lambda: [relative(s.path / "helpfulness", root) + "/" for s in data.stages]  # noqa: E731
    training = lambda: [relative(t.path, root) + "/" for t in data.trainings]  # noqa: E731

    def per_stage(getter: Callable, title: str, anchor: str, grader: Callable[[Stage], str], note: str, kind: str,
                  unit: str, **kwargs: Any) -> list:
        return _guarded(title, anchor, helpfulness,
                        lambda: _per_stage(data, getter, title, anchor, grader, note, with_plots=with_plots,
                                           warnings=_unfinished(data, kind, unit), **kwargs))

    sections: Sequence[Section | None] = [
        *sweep_sections(data.sweep_tables, with_plots=with_plots),
        *_guarded("Before / after", "summary", top, lambda: _headline(data)),
        *_guarded("Paired comparison", "comparison", top, lambda: _comparisons(data)),
        *_guarded("Defenses: safety, helpfulness and cost", "defenses", lambda: [*jailbreak(), *helpfulness()],
                  lambda: _defenses(data, with_plots)),
        *_guarded("Models", "models", lambda: [*top(), *training(), *jailbreak()], lambda: _models(data)),
        *_guarded("Jailbreak attacks", "asr", jailbreak, lambda: _jailbreak(data, with_plots)),
        *per_stage(refusal_rates, "Over-refusal", "overrefusal", _refusal_detector, OVERREFUSAL_NOTE, "overrefusal",
                   "benign prompt(s)", percent=True, ylabel="refusal rate on benign prompts (%)", ylim=(0, 100)),
        *_guarded("Benign answers beyond refusal", "answers", helpfulness, lambda: _answers(data)),
        *per_stage(mtbench_scores, "Helpfulness (MT-Bench-style)", "mtbench", _mtbench_judge, MTBENCH_NOTE, "mtbench",
                   "question(s)", percent=False, ylabel="mean rating (1–10)", ylim=(0, 10.5)),
        *_guarded("Training", "training", training, lambda: _training(data, with_plots)),
        *_guarded("Gradient entanglement", "entanglement", training, lambda: _entanglement(data, with_plots)),
        *_guarded("Example completions", "examples",
                  lambda: [relative(jailbreak_dir(s.path) / "records.jsonl", root) for s in data.stages],
                  lambda: _examples(data)),
        _configs(data),
        _missing(data),
    ]  # fmt: skip
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"{data.kind} run · {data.root} · generated {stamp}"
    return Document(f"safealign report — {data.root.name}", subtitle, _unique_anchors([s for s in sections if s]))
