"""The report of damaged or unusual runs: a summary of the wrong shape is listed, not fatal; a section that
fails anyway says so; anchors, intervals, legend labels and markdown cells stay what they claim to be."""

from __future__ import annotations

import json
import logging
import re
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
