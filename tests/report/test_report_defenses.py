"""The report's defense section: one judge for every row of its table and its plot, each named."""

from __future__ import annotations

import json


def _stats(asr):
    return {"asr": asr, "ci95": [0.0, 1.0], "n": 10, "k": int(asr * 10), "unscored": 0}


def _defense_run(root):
    """A bare model judged by refusal then llm; smoothllm by llm then refusal (its first judge is another);
    paraphrase by llm only (no refusal verdicts at all)."""
    over = {"judge": "refusal (advbench_eval substrings)", "refusal_rate": {"all": {"rate": 0.1, "n": 10}}}
    methods = {"base": ([], {"refusal": 0.9, "llm": 0.5}), "smoothllm": (["smoothllm"], {"llm": 0.2, "refusal": 0.6}),
               "paraphrase": (["paraphrase"], {"llm": 0.3})}
    for name, (defenses, asr) in methods.items():
        (root / "eval" / name).mkdir(parents=True)
        (root / "eval" / name / "summary.json").write_text(json.dumps({
            "judges": {j: {"class": j} for j in asr}, "attacks": {"direct": {j: _stats(a) for j, a in asr.items()}},
            "defenses": [{"name": d} for d in defenses], "over_refusal": over,
            "cost": {"generated_tokens": 10.0, "seconds": 1.0}}))
    (root / "summary.json").write_text(json.dumps({"kind": "defense_comparison", "methods": {n: {} for n in methods}}))
    return root


def test_the_defense_table_and_plot_use_one_named_judge_and_mark_rows_without_it(tmp_path, monkeypatch):
    from safealign.report import document, plots
    from safealign.report.document import Plot, Table, build_document
    from safealign.report.load import load_run

    drawn = {}
    monkeypatch.setattr(plots, "cost_scatter", lambda points, **labels: drawn.update(points=points, **labels) or b"png")
    section = document._defenses(load_run(_defense_run(tmp_path)), with_plots=True)
    table = next(b for b in section.blocks if isinstance(b, Table))
    rows = {r[0]: r for r in table.rows}
    direct = table.columns.index("direct ASR")
    assert "judge refusal" in table.caption and "first judge" not in table.caption
    assert rows["base"][direct].startswith("90.0%") and rows["smoothllm"][direct].startswith("60.0%")  # not llm's 20%
    assert rows["paraphrase"][direct] == "not judged by refusal"
    assert "over-refusal by refusal (advbench_eval substrings)" in table.caption
    assert [p[0] for p in drawn["points"]] == ["base", "smoothllm"]  # paraphrase has no point under refusal
    assert "direct" in drawn["ylabel"] and "refusal" in drawn["ylabel"]
    assert "refusal (advbench_eval substrings)" in drawn["xlabel"]
    plot = next(b for b in section.blocks if isinstance(b, Plot))
    assert "judge refusal" in plot.alt
    assert build_document(load_run(tmp_path), with_plots=False)  # the whole document builds
