"""Defenses as ``safealign demo --compare`` methods: evaluated on the starting model, priced in the report."""

from __future__ import annotations

import json

from safealign.pipelines.demo_defenses import DEMO_DEFENSES
from safealign.pipelines.demo_methods import METHODS


def test_every_demo_defense_is_a_method_that_does_not_train():
    for name in DEMO_DEFENSES:
        assert not METHODS.get(name).trains and METHODS.get(name).wrap_chat is not None


def test_demo_compare_runs_defenses_beside_a_trained_method(tmp_path, monkeypatch):
    from safealign.cli import main

    run = tmp_path / "demo"
    argv = ["demo", "--output-dir", str(run), "--model", "tiny-random", "--compare", "dpo,self-reminder,smoothllm",
            "harmful_train=4", "benign_train=2", "borderline_train=0", "harmful_test=2", "benign_test=1",
            "borderline_test=1", "eval_max_new_tokens=3", "pair_max_new_tokens=6", "train_batch_size=8",
            "templates=[refusal_suppression]", "entanglement_every=0"]  # fmt: skip
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    assert main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["after"]) == {"dpo", "self-reminder", "smoothllm"}
    assert not (run / "train" / "smoothllm").exists()
    smooth = json.loads((run / "eval" / "smoothllm" / "jailbreak" / "summary.json").read_text())
    assert [d["name"] for d in smooth["defenses"]] == ["smoothllm"]
    before = json.loads((run / "eval" / "before" / "jailbreak" / "summary.json").read_text())
    assert smooth["cost"]["generated_tokens"] > 3 * before["cost"]["generated_tokens"]  # 6 copies per answer
    benign = [json.loads(line) for line in (run / "eval" / "smoothllm" / "helpfulness" / "overrefusal" /
                                            "records.jsonl").read_text().splitlines()]  # fmt: skip
    assert all(r["defense"][0]["name"] == "smoothllm" for r in benign)  # over-refusal went through the defense
    html = (run / "report.html").read_text()
    assert "Defenses: safety, helpfulness and cost" in html
