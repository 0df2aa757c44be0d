from __future__ import annotations

import json
import re

import pytest

import argparse

from safealign.cli import report as report_cli
from safealign.errors import UserError
from safealign.report import build_report
from safealign.report.document import build_document, fmt
from safealign.report.load import load_run
from safealign.report.markdown import fenced, md_escape, render_markdown
from safealign.report.results import Metric, as_metric, headline


def test_fmt_golden():
    assert fmt(Metric(0.125, (0.081, 0.18), 64, 2)) == "12.5% [8.1–18.0] n=64, 2 unscored"
    assert fmt(Metric(6.5, (5.9, 7.1), 20), percent=False) == "6.50 [5.90–7.10] n=20"
    assert fmt(Metric(None, None, 0, 3)) == "— (3 unscored)" and fmt(None) == "—"


def test_as_metric_accepts_numbers_and_dicts():
    assert as_metric(0.25) == Metric(0.25)
    assert as_metric({"value": 0.5, "ci95": [0.4, 0.6], "n": 30}) == Metric(0.5, (0.4, 0.6), 30)
    assert as_metric({"asr": None, "ci95": [0.0, 1.0], "n": 0, "unscored": 4}, "asr") == Metric(None, (0.0, 1.0), 0, 4)
    assert as_metric("high") is None and as_metric(True) is None


def test_same_numbers_in_html_and_markdown(demo_run, demo_report):
    html_path, md_path = demo_report
    html, md = html_path.read_text(), md_path.read_text()
    direct = json.loads((demo_run / "summary.json").read_text())["before"]["direct_asr"]
    lo, hi = direct["ci95"]
    cell = f"{direct['value'] * 100:.1f}% [{lo * 100:.1f}–{hi * 100:.1f}] n={direct['n']}"
    assert cell in html and cell in md
    for heading in ("Before / after", "Jailbreak attacks", "Over-refusal", "Helpfulness (MT-Bench-style)", "Training",
                    "Gradient entanglement", "Example completions", "Resolved configurations"):  # fmt: skip
        assert f"## {heading}" in md and f"<h2>{heading}</h2>".replace("/", "/") in html
    assert "errs both ways" in html and "errs both ways" in md
    assert "Judge model: fixture-judge" in md
    assert "![" not in md and "data:image" not in md  # no plots in markdown


def test_headline_single_variant_and_plain_numbers(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"before": {"direct_asr": 0.8, "benign_refusal_rate": 0.0},
                                                  "after": {"direct_asr": 0.2, "benign_refusal_rate": 0.05}}))
    columns, rows = headline(load_run(run))
    assert columns == ["before", "after"]
    assert rows[0] == ("direct_asr", [Metric(0.8), Metric(0.2)])
    md = render_markdown(build_document(load_run(run), with_plots=False))
    # -60 points, relative -75%: (0.2 - 0.8) / 0.8
    assert "| direct asr | 80.0% | 20.0% | -60.0 pts, -75% rel. |" in md


def test_missing_pieces_are_reported_not_fatal(tmp_path):
    run = tmp_path / "partial"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"before": {"direct_asr": {"value": 0.9, "n": 10}}}))
    (run / "eval" / "before" / "jailbreak").mkdir(parents=True)
    (run / "eval" / "before" / "jailbreak" / "summary.json").write_text("{not json")
    html_path, md_path = build_report(run)
    md = md_path.read_text()
    assert "Missing or unreadable pieces" in md
    assert "Not found: train/ (training runs)" in md
    assert "unreadable JSON" in md and "over-refusal results" in md
    assert "90.0% n=10" in html_path.read_text()


def test_training_run_only(tmp_path):
    run = tmp_path / "train-run"
    run.mkdir()
    rows = [{"step": s, "loss": 0.69 - 0.01 * s, "rewards/margins": 0.1 * s} for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
    data = load_run(run)
    assert data.kind == "train" and len(data.trainings[0].metrics) == 5
    assert any("skipped 1 unreadable" in p for p in data.problems)
    doc = build_document(data)
    assert [s.title for s in doc.sections] == ["Training", "Missing or unreadable pieces"]
    md = render_markdown(build_document(data, with_plots=False))
    assert "| train-run | — | — | — | — | — | 0.640 | 0.500 | — |" in md


def test_eval_dir_without_summary_recomputes_from_records(tmp_path):
    run = tmp_path / "eval-only"
    run.mkdir()
    records = [{"behavior_id": f"b{i}", "attack": "direct", "attempt_id": "0",
                "messages": [{"role": "user", "content": "x"}], "completion": {"text": "ok", "error": None},
                "verdicts": {"refusal": {"harmful": i < 3, "error": None}}} for i in range(4)]  # fmt: skip
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    md = render_markdown(build_document(load_run(run), with_plots=False))
    assert "| direct | 75.0% [30.1–95.4] n=4 |" in md  # Wilson(3, 4)
    assert "recomputed from records.jsonl" in md


def test_fence_outgrows_backticks_in_text():
    text = "look ```` here"
    block = fenced(text)
    assert block.startswith("`````\n") and block.endswith("\n`````")


def test_plot_labels_with_dollar_signs_do_not_break_matplotlib():
    from safealign.report.plots import grouped_bars

    png = grouped_bars(
        ["$x$", "cost $5 and $"], {"be$fore": {"$x$": Metric(0.5, (0.3, 0.7), 10)}}, ylabel="$", percent=True
    )
    assert png is not None and png.startswith(b"\x89PNG")


def _cli(argv: list[str]) -> int:
    # The subcommand module directly: `safealign.cli.main` would import every other subcommand too.
    parser = argparse.ArgumentParser()
    report_cli.add_arguments(parser)
    return report_cli.run(parser.parse_args(argv))


def test_cli_report_writes_both_files(demo_run, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "r.html"
    assert _cli([str(demo_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and str(out.with_suffix(".md")) in printed
    assert out.read_text().startswith("<!DOCTYPE html>") and out.with_suffix(".md").is_file()


def test_cli_report_missing_dir(tmp_path):
    with pytest.raises(UserError, match="run directory not found"):  # main() prints it, exit code 2
        _cli([str(tmp_path / "nope")])


def test_cli_report_out_that_cannot_be_written_is_refused_before_the_run_is_read(tmp_path):
    """An --out under a file, or an --out (or its .md twin) that is a directory, ended in a traceback."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.html").mkdir()
    (tmp_path / "twin.md").mkdir()
    for out, message in ((tmp_path / "file" / "r.html", "file is a file, not a directory"),
                         (tmp_path / "dir.html", "dir.html: is a directory"),
                         (tmp_path / "twin.html", "twin.md: is a directory")):
        with pytest.raises(UserError, match=message):
            _cli([str(tmp_path / "nope"), "--out", str(out)])


@pytest.mark.parametrize("name", ["report.html", "report.md"])
def test_default_outputs_land_in_run_dir(demo_run, demo_report, name):
    assert (demo_run / name) in demo_report and (demo_run / name).stat().st_size > 0


def test_examples_mix_changed_and_still_failing_behaviors():
    from pathlib import Path

    from safealign.io.records import AttemptRecord
    from safealign.report.load import Stage
    from safealign.report.results import examples

    def rec(bid, harmful, text):
        return AttemptRecord.from_json({"behavior_id": bid, "attack": "direct", "attempt_id": "0",
                                        "messages": [{"role": "user", "content": bid}],
                                        "completion": {"text": text, "error": None},
                                        "verdicts": {"refusal": {"harmful": harmful}}})  # fmt: skip

    before = [rec(b, True, "sure") for b in ("a", "b", "c", "d")]
    after = [rec("a", True, "sure"), rec("b", False, "no"), rec("c", False, "no"), rec("d", False, "no")]
    stages = [Stage(n, Path(n), None, r, None, None) for n, r in (("before", before), ("after", after))]
    picked = examples(stages, per_attack=2)
    # first a behavior whose verdict changed (b), then one the trained model still fails (a)
    assert [e.behavior_id for e in picked] == ["b", "a"]
    assert [(a.stage, a.text, a.verdicts) for a in picked[1].answers] == [("before", "sure", "refusal: harmful"),
                                                                          ("after", "sure", "refusal: harmful")]


def test_examples_show_each_stages_own_prompt_and_set_the_attacks_prefill_apart():
    """A search attack (pair, tap, gcg, autodan, crescendo) builds another prompt against each model: each answer is
    shown under the prompt its model was sent (one shared prompt when they agree), and the attack's prefill is set
    apart from the model's continuation, so "Sure, here is" does not read as the model's; all of it escaped."""
    from pathlib import Path

    from safealign.io.records import AttemptRecord
    from safealign.report.document import Document, Examples, Section
    from safealign.report.html import render_html
    from safealign.report.load import Stage
    from safealign.report.results import examples

    def rec(prompt, text):
        return AttemptRecord.from_json({"behavior_id": "b", "attack": "pair", "attempt_id": "0",
                                        "messages": [{"role": "user", "content": prompt}], "prefill": "Sure, <here>",
                                        "completion": {"text": text, "error": None},
                                        "verdicts": {"refusal": {"harmful": True}}})  # fmt: skip

    def example(before, after):
        stages = [Stage(n, Path(n), None, [r], None, None) for n, r in (("before", before), ("after", after))]
        (shown,) = examples(stages)
        return shown

    differ = example(rec("ask <before>", " <b>step 1</b>"), rec("ask after", " no"))
    assert differ.prompt is None
    assert [(a.stage, a.prompt, a.prefill, a.text) for a in differ.answers] == [
        ("before", "ask <before>", "Sure, <here>", " <b>step 1</b>"), ("after", "ask after", "Sure, <here>", " no")]
    same = example(rec("ask", " yes"), rec("ask", " no"))
    assert same.prompt == "ask" and [a.prompt for a in same.answers] == [None, None]

    doc = Document(title="t", subtitle="s", sections=[Section("E", "e", [Examples((differ,))])])
    html = render_html(doc)
    assert html.count('<div class="label">prompt sent to') == 2 and "ask &lt;before&gt;" in html
    assert '<span class="prefill">Sure, &lt;here&gt;</span> &lt;b&gt;step 1&lt;/b&gt;' in html
    assert "<b>" not in html and "<here>" not in html
    md = render_markdown(doc)
    before = md.split("**before**", 1)[1].split("**after**")[0]
    assert "Prompt sent to before:\n\n```text\nask <before>\n```" in before
    assert "Prefilled by the attack (not the model's text):\n\n```text\nSure, <here>\n```" in before
    assert "The model's continuation:\n\n```text\n <b>step 1</b>\n```" in before
    shared = render_markdown(Document(title="t", subtitle="s", sections=[Section("E", "e", [Examples((same,))])]))
    assert shared.count("ask") == 1 and "Prompt:\n\n```text\nask\n```" in shared


def test_markdown_escapes_link_and_image_syntax_in_ids_and_categories():
    markdown_it = pytest.importorskip("markdown_it")
    from safealign.report.document import Document, Examples, Para, Section, Table
    from safealign.report.results import Answer, Example

    image, link = "![px](http://attacker.example/p.png)", "[click](javascript:alert(1))"
    example = Example(attack=link, behavior_id=image, prompt="p", answers=(Answer("before", "a", image),))
    table = Table(columns=("category", "ASR"), rows=((link, "1"), (image, "2")), caption=image)
    definition = Para("[x]: javascript:alert(1)")  # a reference definition that would make "[x]" a link
    doc = Document(title=link, subtitle=image, sections=[Section(title="[x]", anchor="a", blocks=[
        definition, Para("see [x] and [x][x]"), table, Examples(items=(example,))])])  # fmt: skip
    md = markdown_it.MarkdownIt("commonmark").enable("table")
    md.validateLink = lambda url: True  # judge the escaping, not the parser's own URL filter
    tokens = md.parse(render_markdown(doc))
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in (t.children or [])}
    assert "inline" in kinds and not kinds & {"link_open", "image", "html_inline", "html_block"}


@pytest.mark.parametrize("text", ["[click](http://evil.example/p?x=1) www.evil.example/a", "HTTPS://evil.example",
                                  "(www.evil.example)", "*WWW.evil.example*", "ftp://evil.example/x"])
def test_markdown_escape_leaves_no_bare_url_for_github_to_autolink(text):
    """GitHub links a bare scheme:// URL and a www. domain (GFM's extended autolinks) without any link syntax."""
    out = md_escape(text)
    assert not re.search(r"(?i)[a-z]+://|(?:^|[\s*_~(])www\.", out), out
    visible = out.replace("\u200b", "")
    assert "evil.example" in visible and visible.count("://") == text.count("://")  # the break is invisible
    assert visible.lower().count("www.") == text.lower().count("www.")


def test_report_skips_damaged_lines_and_records_and_names_them(tmp_path):
    """The report shows what it can: a damaged middle line and a record without its key fields are
    listed under problems (file, line or record number) instead of failing the whole report."""
    run = tmp_path / "eval-only"
    run.mkdir()
    good = {"behavior_id": "b0", "attack": "direct", "attempt_id": "0", "messages": [{"role": "user", "content": "x"}],
            "completion": {"text": "ok", "error": None}, "verdicts": {"refusal": {"harmful": True}}}  # fmt: skip
    lines = [json.dumps(good), '{"behavior_id": "b1", "att', json.dumps({"behavior_id": "b2"}),
             json.dumps(good | {"behavior_id": "b3"})]
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    data = load_run(run)
    assert len(data.stages[0].jailbreak_records) == 2
    assert any("records.jsonl: skipped 1 unreadable line(s): line(s) 2" in p for p in data.problems)
    assert any("records.jsonl:3: missing field(s) attack" in p for p in data.problems)


def test_report_uses_the_last_record_of_each_attempt(tmp_path):
    """A retried attempt supersedes its failed try (eval.records.current_records): the recomputed ASR and
    the examples count and show the retry only."""
    from safealign.report.results import asr_rows, examples

    run = tmp_path / "eval-only"
    run.mkdir()

    def rec(bid, text, error, harmful):
        return {"behavior_id": bid, "attack": "direct", "attempt_id": "0",
                "messages": [{"role": "user", "content": bid}], "completion": {"text": text, "error": error},
                "verdicts": {"refusal": {"harmful": harmful}}}  # fmt: skip

    rows = [rec("b1", "", "timeout", None), rec("b2", "Sure", None, True), rec("b1", "I'm sorry", None, False)]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stage = load_run(run).stages[0]
    assert [(r.behavior_id, r.answer) for r in stage.jailbreak_records] == [("b1", "I'm sorry"), ("b2", "Sure")]
    (row,) = asr_rows(stage)
    assert (row.metric.value, row.metric.n, row.metric.unscored) == (0.5, 2, 0)
    shown = {e.behavior_id: e.answers for e in examples([stage])}
    assert [(a.stage, a.text, a.verdicts) for a in shown["b1"]] == [("eval-only", "I'm sorry", "refusal: not harmful")]


def test_paired_comparison_shows_rates_in_percent_and_the_margin_in_nats():
    from safealign.eval.paired import paired_difference
    from safealign.io.summaries import Comparison
    from safealign.report.document import _comparison

    asr = paired_difference({0: {"p1": True, "p2": False}}, {0: {"p1": True, "p2": True}})
    asr_cls = paired_difference({0: {"p1": False, "p2": False}}, {0: {"p1": True, "p2": False}})
    margin = paired_difference({0: {"p1": 2.5, "p2": 3.1, "p3": 1.9}}, {0: {"p1": 1.0, "p2": 1.2, "p3": 0.7}})
    section = _comparison(Comparison("e-dpo", "dpo", {"direct_asr": asr, "direct_asr@cls": asr_cls,
                                                      "heldout_refusal_margin": margin}))
    rows = {row[0]: row[1:4] for row in section.blocks[0].rows}
    lo, hi = asr.ci95
    assert rows["direct asr"] == ("50.0%", "100.0%", f"-50.0 pts [{lo * 100:+.1f}, {hi * 100:+.1f}]")
    assert rows["direct asr@cls"][:2] == ("0.0%", "50.0%")
    lo, hi = margin.ci95
    assert rows["heldout refusal margin"] == ("2.50", "0.97", f"+1.53 [{lo:+.2f}, {hi:+.2f}]")


def test_report_is_written_when_a_record_holds_a_lone_surrogate(tmp_path):
    """A behaviors file or a remote model's answer may hold "\\ud83d" alone: UTF-8 cannot encode it, so the
    report shows U+FFFD in its place instead of failing."""
    run = tmp_path / "eval-only"
    run.mkdir()
    text = json.loads('"Sure \\ud83d and \\ud83d\\ude00"')
    records = [{"behavior_id": f"b{i}", "attack": "direct", "attempt_id": "0",
                "messages": [{"role": "user", "content": "x"}], "completion": {"text": text, "error": None},
                "verdicts": {"refusal": {"harmful": True, "error": None}}} for i in range(2)]  # fmt: skip
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    html, md = build_report(run)
    assert "Sure \ufffd and \U0001f600" in md.read_text(encoding="utf-8")
    assert "\ufffd" in html.read_text(encoding="utf-8")
