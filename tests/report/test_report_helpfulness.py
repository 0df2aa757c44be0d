"""The report's "Benign answers beyond refusal" section: retention numbers and flagged answers, escaped."""

from __future__ import annotations

import json
import re

from safealign.report import build_report


def _run(tmp_path):
    run = tmp_path / "run"
    figure = {"value": -0.25, "ci95": [-0.5, -0.125], "n": 8}
    (run).mkdir()
    (run / "summary.json").write_text(json.dumps({
        "before": {"direct_asr": 0.8, "empty_answer_rate": {"value": 0.0, "ci95": [0.0, 0.3], "n": 8}},
        "after": {"direct_asr": 0.2, "empty_answer_rate": {"value": 0.125, "ci95": [0.02, 0.47], "n": 8},
                  "retention_of_base_answers": figure, "retention_of_own_answers": {**figure, "value": -1.5}}}))
    garbage = "<script>alert(1)</script> " * 5  # 40+ tokens, the same 4-grams over and over
    for stage, answer in (("before", "Mix flour and water."), ("after", garbage)):
        folder = run / "eval" / stage / "helpfulness" / "overrefusal"
        folder.mkdir(parents=True)
        record = {"id": "b1", "kind": "ordinary", "prompt": "How do I <b>bake</b> bread?", "completion": answer,
                  "error": None, "finish": "length"}
        (folder / "records.jsonl").write_text(json.dumps(record) + "\n")
    return run


def test_retention_table_and_flagged_answers_are_shown_escaped(tmp_path):
    html_path, md_path = build_report(_run(tmp_path))
    html, md = html_path.read_text(), md_path.read_text()
    assert "## Benign answers beyond refusal" in md
    # nats per token, not a percentage: -0.25 with its interval and n
    assert "| base model's answers: trained − base log-prob per token | -0.25 [-0.50–-0.12] n=8 |" in md
    assert "-1.50 [-0.50–-0.12] n=8" in md
    assert "12.5% [2.0–47.0] n=8" in md  # the flag rate sits in the headline table
    # after: stopped at the limit mid-tag and loops; before: also at the limit but ended with a full stop
    assert "flags: truncated, repetitive" in html and "flags: none" in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>bake" not in html


def test_a_damaged_benign_records_file_is_listed_not_fatal(tmp_path):
    """The flagged-answer examples read the over-refusal records with the report's tolerant reader: a damaged
    line used to abort the whole report (strict reader at render time)."""
    run = _run(tmp_path)
    records = run / "eval" / "after" / "helpfulness" / "overrefusal" / "records.jsonl"
    records.write_text(records.read_text() + '{"id": "b2", "kind": "ordi\n')  # a damaged middle line ...
    records.write_text(records.read_text() + json.dumps({"id": "b3", "kind": "ordinary", "prompt": "p",
                                                         "completion": "ok.", "error": None}) + "\n")
    html_path, md_path = build_report(run)
    md = md_path.read_text()
    assert "flags: truncated, repetitive" in html_path.read_text()  # the readable rows still give their examples
    assert "helpfulness/overrefusal/records.jsonl: skipped 1 unreadable line(s): line(s) 2" in md


def _graded_run(tmp_path, mtbench_judges, detectors):
    """eval/before and eval/e-dpo, each with an MT-Bench run graded by its own judge (name, rating) and an
    over-refusal run by its own refusal detector (a RefusalConfig list)."""
    from eval.fakes import ScriptedChatModel

    from safealign.eval.helpfulness import mtbench_eval, overrefusal_eval
    from safealign.eval.judges.refusal import RefusalConfig, RefusalJudge

    run = tmp_path / "run"
    questions = [{"question_id": i, "category": "writing", "turns": [f"question {i}"]} for i in range(2)]
    for stage, (judge, rating), listed in zip(("before", "e-dpo"), mtbench_judges, detectors):
        folder = run / "eval" / stage / "helpfulness"
        mtbench_eval(ScriptedChatModel(lambda c: "An answer."),
                     ScriptedChatModel(lambda c, r=rating: f"Fine.\nRating: [[{r}]]", name=judge), questions,
                     out_dir=folder / "mtbench", progress=False)
        overrefusal_eval(ScriptedChatModel(lambda c: "Sure."), [("b1", "Bake bread?", "ordinary")],
                         judge=RefusalJudge(RefusalConfig(list=listed)), out_dir=folder / "overrefusal",
                         progress=False)
    return run


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _table_of(section: str, column: str) -> str:
    """The caption of the table whose header names ``column`` (captions precede their table in markdown)."""
    caption = ""
    for line in section.splitlines():
        if line.startswith("_") and line.endswith("_"):
            caption = line
        elif re.match(r"\|\s+\|", line) and f" {column} |" in line:
            return caption
    raise AssertionError(f"no table with column {column!r} in:\n{section}")


def test_stages_graded_by_different_judges_are_shown_each_with_its_own_judge(tmp_path):
    """A stage's MT-Bench scores sat under the first stage's judge: e-dpo's 8.00 by local-qwen-0.5b was shown
    under 'Judge model: gpt-4'. Each judge's stages now get a table of their own, captioned with that judge (and
    the over-refusal rates with their own detector)."""
    from safealign.report.document import build_document
    from safealign.report.load import load_run
    from safealign.report.markdown import render_markdown

    run = _graded_run(tmp_path, [("gpt-4", 6), ("local-qwen-0.5b", 8)], ["advbench_eval", "smoothllm"])
    md = render_markdown(build_document(load_run(run), with_plots=False))
    mtbench = _section(md, "Helpfulness (MT-Bench-style)")
    assert "Judge model: gpt-4" in _table_of(mtbench, "before")
    assert "Judge model: local-qwen-0.5b" in _table_of(mtbench, "e-dpo")
    assert not re.search(r"\|\s+\| before \| e-dpo \|", mtbench)  # never side by side in one table
    over = _section(md, "Over-refusal")
    assert "advbench_eval" in _table_of(over, "before") and "smoothllm" in _table_of(over, "e-dpo")


def test_stages_graded_by_one_judge_share_one_table_and_one_note(tmp_path):
    from safealign.report.document import build_document
    from safealign.report.load import load_run
    from safealign.report.markdown import render_markdown

    run = _graded_run(tmp_path, [("gpt-4", 6), ("gpt-4", 8)], ["advbench_eval", "advbench_eval"])
    md = render_markdown(build_document(load_run(run), with_plots=False))
    mtbench = _section(md, "Helpfulness (MT-Bench-style)")
    assert re.search(r"\|\s+\| before \| e-dpo \|", mtbench) and mtbench.count("Judge model: gpt-4") == 1
    over = _section(md, "Over-refusal")
    assert re.search(r"\|\s+\| before \| e-dpo \|", over) and over.count("advbench_eval") == 1
