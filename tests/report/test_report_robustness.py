"""The report of damaged or unusual runs: a summary of the wrong shape is listed, not fatal; a section that
fails anyway says so; anchors, intervals, legend labels and markdown cells stay what they claim to be."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from safealign.io.records import AsrStats
from safealign.io.summaries import Comparison, DemoSummary, EvalSummary, PairedDifference
from safealign.report import build_report, numbers
from safealign.report.document import Para, build_document
from safealign.report.html import render_html
from safealign.report.load import RunData, Stage, load_run
from safealign.report.markdown import render_markdown
from safealign.report.results import Metric

STATS = {"asr": 0.5, "ci95": [0.1, 0.9], "n": 4}
PAIRED = {"diff": -0.1, "ci95": [-0.3, 0.1], "per_seed": {"0": -0.1}, "rate_a": 0.2, "rate_b": 0.3,
          "n_prompts": 10, "seeds": 1, "only_a": 1, "only_b": 2}  # fmt: skip
FORECAST = {"fit_range": [1, 4], "forecast": {"0.5": {"n": "x"}}}


@pytest.mark.parametrize(("block", "field"), [
    ({"attacks": {"direct": {"refusal": STATS}, "template": ["x"]}}, "attacks.template"),
    ({"by_category": {"direct": "x"}}, "by_category.direct"),
    ({"judge_agreement": {"direct": {"a|b": {"n": 3}}}}, "judge_agreement.direct.a|b"),
    ({"mean_over_attacks": {"j": "x"}}, "mean_over_attacks.j"),
    ({"mean_over_attacks": {"j": {"mean": 0.5, "ci95": [0.1]}}}, "mean_over_attacks.j.ci95"),
    ({"asr_at_n": {"direct": {"refusal": {"fit": FORECAST}}}}, "asr_at_n.direct.refusal.fit.forecast.0.5.n"),
    ({"prefill_check": {"direct": ["x"]}}, "prefill_check.direct"),
    ({"input_bounds": ["x"]}, "input_bounds"),
    ({"judges": ["x"]}, "judges"),
    ({"attacks": {"direct": {"refusal": {"asr": "0.5", "ci95": ["x", 1]}}}}, "attacks.direct.refusal.asr"),
])  # fmt: skip
def test_an_eval_summary_of_the_wrong_shape_is_listed_not_fatal(tmp_path, block, field):
    run = tmp_path / "eval-only"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"attacks": {"direct": {"refusal": STATS}}, **block}))
    _, md_path = build_report(run)
    md = md_path.read_text()
    assert "## Missing or unreadable pieces" in md
    assert f"summary.json: field {field}".replace("|", "\\|") in md
    assert "Not found: ./summary.json" not in md  # it was found: the problem says what is wrong with it


@pytest.mark.parametrize(("files", "problem"), [
    ({"summary.json": {"before": "x", "after": {"direct_asr": 0.2}}}, "summary.json: field before: expected"),
    ({"summary.json": {"before": {"direct_asr": 0.5}, "after": {"direct_asr": 0.2},
                       "comparison": {"a": "e-dpo", "b": "dpo", "metrics": {"direct_asr": PAIRED | {"rate_a": None}}}}},
     "summary.json: field comparison.metrics.direct_asr.rate_a: expected a number, got null"),
    ({"summary.json": {"before": {"direct_asr": 0.5}}, "eval/before/helpfulness/mtbench/summary.json":
      {"judge": "j", "by_category": ["x"]}}, "mtbench/summary.json: field by_category: expected"),
    ({"summary.json": {"before": {"direct_asr": 0.5}}, "train/dpo/train_summary.json": ["x"]},
     "train/dpo/train_summary.json: expected a JSON object"),
    ({"summary.json": {"kind": "defense_comparison", "methods": 3}}, "summary.json: field methods"),
])  # fmt: skip
def test_demo_files_of_the_wrong_shape_are_listed_not_fatal(tmp_path, files, problem):
    run = tmp_path / "demo"
    for name, content in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(json.dumps(content))
    _, md_path = build_report(run)
    assert problem in md_path.read_text()


def test_a_section_that_fails_on_unexpected_data_says_so_and_the_rest_renders(tmp_path, caplog):
    """Data that got past reading (here: built in code) and still breaks a section: that section names the
    file it was built from, the failure is logged with its traceback, the other sections render."""
    summary = EvalSummary(attacks={"direct": {"refusal": AsrStats(0.5, (0.1, 0.9), 4)}},
                          judge_agreement={"direct": {"a|b": {"n": 3}}})  # fmt: skip
    data = RunData(root=tmp_path, kind="eval", stages=[Stage("before", tmp_path / "before", summary, [], None, None)])
    with caplog.at_level(logging.ERROR, logger="safealign.report.document"):
        doc = build_document(data, with_plots=False)
    (section,) = [s for s in doc.sections if s.title == "Jailbreak attacks"]
    (para,) = section.blocks
    assert isinstance(para, Para) and para.tone == "warn"
    assert "could not be built from before/summary.json (KeyError: 'agreement')" in para.text
    (record,) = [r for r in caplog.records if r.name == "safealign.report.document"]
    assert "Jailbreak attacks" in record.getMessage() and record.exc_info[0] is KeyError
    assert "could not be built from before/summary.json" in render_markdown(doc)


def _paired(rate_a: float, rate_b: float) -> PairedDifference:
    return PairedDifference.from_json(PAIRED | {"rate_a": rate_a, "rate_b": rate_b})


def test_each_paired_comparison_gets_its_own_anchor(tmp_path):
    comparisons = [Comparison("dpo", "sft", {"direct_asr": _paired(0.2, 0.3)}),
                   Comparison("e-dpo", "dpo", {"direct_asr": _paired(0.1, 0.2)}),
                   Comparison("e-sft", "sft", {"direct_asr": _paired(0.25, 0.3)})]  # fmt: skip
    demo = DemoSummary(before={}, after={"dpo": {}}, comparisons=comparisons)
    doc = build_document(RunData(root=tmp_path, kind="demo", demo_summary=demo), with_plots=False)
    anchors = [s.anchor for s in doc.sections]
    assert len(set(anchors)) == len(anchors)
    assert [s.anchor for s in doc.sections if s.title.startswith("Paired comparison")] == [
        "comparison", "comparison-2", "comparison-3"]
    html = render_html(doc)
    ids = re.findall(r'<section id="([^"]+)"', html)
    links = re.findall(r'<a href="#([^"]+)"', html)
    assert len(set(ids)) == len(ids) and set(links) <= set(ids) and len(set(links)) == len(links)


def test_an_aggregate_without_an_interval_shows_none(tmp_path):
    summary = EvalSummary(attacks={"direct": {"kw": AsrStats(0.5, (0.1, 0.9), 4)}},
                          mean_over_attacks={"kw": {"mean": 0.5, "ci95": None, "n_attacks": 2, "n_behaviors": 4},
                                             "cls": {"mean": 0.25, "ci95": [0.1, 0.4], "n_attacks": 2,
                                                     "n_behaviors": 4}})  # fmt: skip
    data = RunData(root=tmp_path, kind="eval", stages=[Stage("before", tmp_path, summary, [], None, None)])
    md = render_markdown(build_document(data, with_plots=False))
    assert "[0.0, 100.0]" not in md
    assert "| before | kw | 2 | 50.0% | — | 4 |" in md
    assert "| before | cls | 2 | 25.0% | [10.0, 40.0] | 4 |" in md


def test_a_series_named_with_a_leading_underscore_keeps_its_legend_entry(monkeypatch):
    from safealign.report import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"png")
    series = {"_base": {"direct": Metric(0.5, (0.3, 0.7), 10)}, "dpo": {"direct": Metric(0.2, (0.1, 0.4), 10)}}
    assert plots.grouped_bars(["direct"], series, ylabel="ASR", percent=True) == b"png"
    plots.asr_at_n_curves({"_base: best_of_n": [{"n": 1, "asr": 0.1}, {"n": 2, "asr": 0.2}]})
    bars, curves = figures
    assert [t.get_text().lstrip("\u200b") for t in bars.legends[0].get_texts()] == ["_base", "dpo"]
    assert [t.get_text().lstrip("\u200b") for t in curves.axes[0].get_legend().get_texts()] == ["_base: best_of_n"]


def test_markdown_comparison_table_escapes_every_cell_and_leaves_numbers_alone():
    rows = [["setting", "variant|x", "direct_asr"],
            ["beta=0.1|lr=1e-5", "e-dpo\nnew", numbers.with_interval(0.25, [0.15, 0.367])],
            ["(base model)", "-", numbers.difference({"diff": 0.038, "ci95": [-0.05, 0.138]})]]  # fmt: skip
    lines = numbers.render(rows, markdown=True)
    assert lines == ["| setting | variant\\|x | direct_asr |", "|---|---|---|",
                     "| beta=0.1\\|lr=1e-5 | e-dpo new | 0.250 [0.150,0.367] |",
                     "| (base model) | - | +0.038 [-0.050,+0.138] |"]  # fmt: skip
    assert all(line.count(" | ") == 2 for line in lines if line.startswith("| "))
    assert numbers.render(rows)[1].startswith("beta=0.1|lr=1e-5")  # the console keeps the text as it is


def test_unique_anchors_keep_the_sweep_and_fixed_ones(tmp_path):
    data = load_run(_sweep_dir(tmp_path))
    anchors = [s.anchor for s in build_document(data, with_plots=False).sections]
    assert anchors[0] == "sweep-good" and len(set(anchors)) == len(anchors)


def _sweep_dir(root: Path) -> Path:
    (root / "cells").mkdir()
    (root / "tables").mkdir()
    table = {"variants": ["dpo"], "seeds": [0], "settings": [
        {"name": "beta=0.1", "means": {"dpo": {"direct_asr": 0.25}}, "ci95": {"dpo": {"direct_asr": [0.1, 0.4]}},
         "seeds_finished": {"dpo": 1}, "differences": []}]}  # fmt: skip
    (root / "tables" / "good.json").write_text(json.dumps(table))
    return root


def test_a_forecast_without_a_number_says_why():
    from safealign.eval.asr_at_n import fit_power_law, overall_curve
    from safealign.report.document import _forecast_cells

    flat = {**{f"b{i}": (512, 512) for i in range(500)}, **{f"c{i}": (512, 0) for i in range(499)}, "x": (512, 1)}
    cells = _forecast_cells(fit_power_law(overall_curve(flat)))
    assert any("beyond float range" in cell or "already reached" in cell for cell in cells[1:]), cells


def _copy(demo_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns("report.*"))
    return run


def _edit(path: Path, **fields) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_an_interrupted_evaluation_is_named_with_its_missing_counts(demo_run, tmp_path):
    """summary.json of a stopped evaluation says complete: false and counts what has no record; each
    section says so, naming the file, instead of showing the ASRs and rates as if finished."""
    run = _copy(demo_run, tmp_path)
    stage = run / "eval" / "dpo"
    _edit(stage / "jailbreak" / "summary.json", complete=False, missing={"direct": 0, "template": 7, "any_attack": 3})
    _edit(stage / "helpfulness" / "overrefusal" / "summary.json", missing=5)
    _edit(stage / "helpfulness" / "mtbench" / "summary.json", missing=2)
    md = render_markdown(build_document(load_run(run), with_plots=False))
    jailbreak = _section(md, "Jailbreak attacks")
    assert "dpo: eval/dpo/jailbreak/summary.json: evaluation not finished (complete: false); behaviors without a " \
           "record: template 7, any_attack 3" in jailbreak  # fmt: skip
    assert "direct 0" not in jailbreak and "before: eval/before/jailbreak/summary.json" not in jailbreak
    assert "dpo: eval/dpo/helpfulness/overrefusal/summary.json: 5 benign prompt(s) without a record" \
           in _section(md, "Over-refusal")  # fmt: skip
    assert "dpo: eval/dpo/helpfulness/mtbench/summary.json: 2 question(s) without a record" \
           in _section(md, "Helpfulness (MT-Bench-style)")  # fmt: skip


@pytest.mark.parametrize("summary", [None, "{not json", "[1]"])
def test_a_demo_without_a_readable_summary_still_shows_its_stages(demo_run, tmp_path, summary):
    """Still running, crashed, or its summary.json damaged: the eval/ and train/ folders are read as a demo's."""
    run = _copy(demo_run, tmp_path)
    if summary is None:
        (run / "summary.json").unlink()
    else:
        (run / "summary.json").write_text(summary)
    data = load_run(run)
    assert data.kind == "demo"
    assert [s.name for s in data.stages] == ["before", "dpo", "e-dpo"]
    assert [t.name for t in data.trainings] == ["dpo", "e-dpo"]
    if summary == "[1]":  # found, so not missing: what is wrong with it is named
        assert "summary.json: neither a demo's (before/after) nor a defense comparison's (kind)" in data.problems
    else:
        assert "summary.json (run not finished?)" in data.missing
    md = render_markdown(build_document(data, with_plots=False))
    assert "## Jailbreak attacks" in md and "## Training" in md


def test_stages_named_in_the_summary_without_an_evaluation_are_listed(demo_run, tmp_path):
    run = _copy(demo_run, tmp_path)
    shutil.rmtree(run / "eval" / "dpo")
    assert "eval/dpo/ (evaluation of dpo, named in summary.json)" in load_run(run).missing
    defenses = tmp_path / "defenses"
    (defenses / "eval" / "base").mkdir(parents=True)
    (defenses / "eval" / "base" / "summary.json").write_text(json.dumps({"attacks": {"direct": {"refusal": STATS}}}))
    (defenses / "summary.json").write_text(json.dumps({"kind": "defense_comparison",
                                                       "methods": {"base": {}, "smoothllm": {}}}))  # fmt: skip
    data = load_run(defenses)
    assert [s.name for s in data.stages] == ["base"]
    assert data.missing == ["eval/smoothllm/ (evaluation of smoothllm, named in summary.json)"]  # no helpfulness/


def test_a_demo_stage_without_mtbench_is_not_reported_missing(demo_run, tmp_path):
    """The demo never runs MT-Bench (a separate command): its absence is no missing piece."""
    run = _copy(demo_run, tmp_path)
    for stage in ("before", "dpo", "e-dpo"):
        shutil.rmtree(run / "eval" / stage / "helpfulness" / "mtbench")
    shutil.rmtree(run / "eval" / "dpo" / "helpfulness" / "overrefusal")
    missing = load_run(run).missing
    assert not [m for m in missing if "MT-Bench" in m], missing
    assert missing == ["eval/dpo/helpfulness/ (over-refusal results)"]


def test_a_malformed_paired_interval_is_named_not_dropped(tmp_path):
    bad = PAIRED | {"ci95": [-0.2, "0.0"]}
    (tmp_path / "summary.json").write_text(json.dumps({"before": {"direct_asr": 0.5}, "after": {"direct_asr": 0.2},
                                                       "comparisons": [{"a": "e-dpo", "b": "dpo",
                                                                        "metrics": {"direct_asr": bad}}]}))  # fmt: skip
    data = load_run(tmp_path)
    assert "summary.json: field comparisons[0].metrics.direct_asr.ci95[1]: expected a number, got a string" \
           in data.problems  # fmt: skip


def test_a_report_of_the_current_directory_names_it(tmp_path, monkeypatch):
    run = tmp_path / "eval-only"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"attacks": {"direct": {"refusal": STATS}}}))
    monkeypatch.chdir(run)
    data = load_run(".")
    assert [s.name for s in data.stages] == ["eval-only"]
    assert build_document(data, with_plots=False).title == "safealign report — eval-only"


def test_a_directory_that_holds_no_run_is_refused_and_nothing_is_written(tmp_path, capsys):
    """`safealign report DIR` on a directory of none of the layouts wrote an empty "unknown run" report and
    exited 0; now it names the layouts it reads, and a subfolder holding a run (the usual mistake: its parent)."""
    from safealign.cli import main

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "x.txt").write_text("x")
    (tmp_path / "my-eval").mkdir()
    (tmp_path / "my-eval" / "summary.json").write_text(json.dumps({"attacks": {"direct": {"refusal": STATS}}}))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"safealign: error: {tmp_path.resolve()}: no run of a layout the report reads")
    for layout in ("cells/", "summary.json", "eval/*/", "train/*/", "metrics.jsonl", "train_summary.json",
                   "records.jsonl", "jailbreak/"):
        assert layout in err, layout
    assert f"safealign report {tmp_path.resolve() / 'my-eval'}" in err and "notes" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-eval", "notes"]  # no report.html, no report.md
    with pytest.raises(ValueError, match="no run of a layout the report reads") as info:
        load_run(tmp_path / "notes")
    assert "subfolder" not in str(info.value)


@pytest.mark.parametrize("plot", ["training", "entanglement", "asr_at_n"])
def test_every_series_is_drawn_and_looks_different(monkeypatch, plot):
    """Past the palette (8 colours) and past its 4 repeats (32 series): no series is dropped, no two look alike."""
    from safealign.report import plots
    from safealign.report.load import TrainingRun

    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"png")
    names = [f"run{i}" for i in range(40)]
    rows = [{"step": s, "loss": 1.0 / s, "cosine": 0.5, "delta_chosen": 0.1, "delta_rejected": -0.1} for s in (1, 2)]
    runs = [TrainingRun(n, Path(n), rows, None, rows, {}) for n in names]
    if plot == "training":
        plots.training_curves(runs)
    elif plot == "entanglement":
        plots.entanglement_curves(runs)
    else:
        plots.asr_at_n_curves({n: [{"n": 1, "asr": 0.1}, {"n": 2, "asr": 0.2}] for n in names})
    lines = [line for line in figures[0].axes[0].get_lines() if line.get_label() in names]  # not the zero line
    assert [line.get_label() for line in lines] == names
    assert len({(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines}) == len(names)


def test_judges_described_differently_by_stages_name_each_description_with_its_stages(tmp_path):
    from safealign.report.results import judge_descriptions

    def stage(name: str, listed: str) -> Stage:
        summary = EvalSummary(attacks={"direct": {"refusal": AsrStats(0.5, (0.1, 0.9), 4)}},
                              judges={"refusal": {"list": listed}})  # fmt: skip
        return Stage(name, tmp_path / name, summary, [], None, None)

    described = judge_descriptions([stage("before", "advbench"), stage("dpo", "short"), stage("e-dpo", "advbench")])
    assert described["refusal"].startswith("list=advbench (before, e-dpo); list=short (dpo) — ")
    assert judge_descriptions([stage("before", "advbench")])["refusal"].startswith("list=advbench — ")


def _record(behavior: str, attack: str, harmful: bool | None, attempt: str = "0") -> dict:
    return {"behavior_id": behavior, "attack": attack, "attempt_id": attempt,
            "messages": [{"role": "user", "content": "x"}], "completion": {"text": "ok", "error": None},
            "verdicts": {"refusal": {"harmful": harmful}}}  # fmt: skip


@pytest.mark.parametrize("summary", [None, "{not json"])
def test_recomputed_asrs_name_the_stage_and_file_and_include_any_attack(tmp_path, summary):
    run = tmp_path / "eval-only"
    run.mkdir()
    rows = [_record("b0", "direct", True), _record("b1", "direct", False), _record("b0", "template", False),
            _record("b1", "template", True), _record("b2", "direct", False), _record("b2", "template", False)]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (run / "summary.json").write_text(summary)
    md = render_markdown(build_document(load_run(run), with_plots=False))
    assert "| any_attack | 66.7% [20.8–93.9] n=3 |" in md  # Wilson(2, 3): b0 and b1 jailbroken by some attack
    assert "eval-only: ASRs recomputed from records.jsonl because summary.json was absent or unreadable" in md


# written before partial_behaviors existed (fc92ff9): b1 resisted on its scored attempt and has an unscored one, b2
# was jailbroken; the older rule left b1 out of n, so ASR 100% over n=1 (under the current rule: 50% over n=2)
OLDER_RULE = {"asr": 1.0, "ci95": [0.206549, 1.0], "n": 1, "unscored": 1, "unscored_behaviors": 1, "attempts": 3}


def _older_rule_run(tmp_path: Path, stats: dict, *, records: bool) -> str:
    run = tmp_path / "eval-only"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"attacks": {"direct": {"refusal": stats}},
                                                  "by_category": {"direct": {"refusal": {"cyber": stats}}}}))
    if records:
        rows = [_record("b1", "direct", False), _record("b1", "direct", None, "1"), _record("b2", "direct", True)]
        (run / "records.jsonl").write_text("".join(json.dumps(r | {"category": "cyber"}) + "\n" for r in rows))
    return _section(render_markdown(build_document(load_run(run), with_plots=False)), "Jailbreak attacks")


def test_a_summary_written_under_the_older_rule_is_recomputed_from_its_records(tmp_path):
    md = _older_rule_run(tmp_path, OLDER_RULE, records=True)
    assert "| direct | 50.0% [9.5–90.5] n=2, 1 unscored |" in md and "100.0%" not in md
    assert "| cyber | 50.0% [9.5–90.5] n=2, 1 unscored |" in md  # the categories too
    assert "eval-only: ASRs recomputed from records.jsonl because summary.json was written under the older rule" in md
    assert "direct/refusal: 1 behavior(s) judged on fewer attempts than made" in md
    assert "with no scored attempt" not in md and "behavior(s) with an unscored attempt" not in md


def test_a_summary_written_under_the_older_rule_without_records_is_shown_with_a_warning(tmp_path):
    md = _older_rule_run(tmp_path, OLDER_RULE, records=False)
    assert "| direct | 100.0% [20.7–100.0] n=1, 1 unscored |" in md
    assert ("eval-only: summary.json: direct/refusal: written under the older rule, which left out of n 1 "
            "behavior(s) with an unscored attempt and no harmful one") in md
    assert "with no scored attempt" not in md and "recomputed" not in md


def test_a_summary_without_partial_behaviors_and_no_unscored_attempt_is_shown_as_written(tmp_path):
    """The committed sweep cells: written before partial_behaviors, every attempt scored, so both rules agree; the
    summary is shown as it is even where its records would give other numbers."""
    stats = {**OLDER_RULE, "unscored": 0, "unscored_behaviors": 0, "asr": 0.25, "n": 4}
    md = _older_rule_run(tmp_path, stats, records=True)
    assert "| direct | 25.0% [20.7–100.0] n=4 |" in md and "| cyber | 25.0% [20.7–100.0] n=4 |" in md
    assert "recomputed" not in md and "older rule" not in md


def test_a_summary_with_a_byte_order_mark_is_read(tmp_path):
    run = tmp_path / "eval-only"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"attacks": {"direct": {"refusal": STATS}}}), encoding="utf-8-sig")
    data = load_run(run)
    assert data.problems == [] and data.stages[0].jailbreak_summary.stats("direct", "refusal").n == 4


def test_an_unreadable_summary_is_listed_not_fatal(tmp_path, monkeypatch):
    run = tmp_path / "eval-only"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"attacks": {"direct": {"refusal": STATS}}}))
    (run / "records.jsonl").write_text(json.dumps(_record("b0", "direct", True)) + "\n")
    read_text = Path.read_text

    def denied(path: Path, *args, **kwargs) -> str:
        if path.name == "summary.json":
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    data = load_run(run)
    assert any(p.startswith("summary.json: ") and "Permission denied" in p for p in data.problems), data.problems
    assert data.stages[0].jailbreak_summary is None and len(data.stages[0].jailbreak_records) == 1
