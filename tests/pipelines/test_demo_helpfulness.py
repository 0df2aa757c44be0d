"""The demo's answer retention read back on a finished run (safealign.pipelines.demo_helpfulness)."""

from __future__ import annotations

import hashlib
import json

from safealign.io.summaries import RetentionSummary, ScoreStats
from safealign.pipelines.demo_helpfulness import INPUTS, Retention


def _eval_dir(root, name, answers):
    folder = root / name / "helpfulness" / "overrefusal"
    folder.mkdir(parents=True)
    rows = [{"id": pid, "prompt": f"question {pid}", "completion": text, "error": None, "finish": finish}
            for pid, text, finish in answers]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / name


def _recorded_retention(eval_dir, digest):
    folder = eval_dir / "helpfulness" / "retention"
    folder.mkdir(parents=True)
    stats = ScoreStats(mean=-0.5, ci95=(-0.6, -0.4), n=2, unscored=0)
    (folder / "summary.json").write_text(json.dumps(RetentionSummary(stats, stats, prompts=2).to_json()))
    (folder / INPUTS).write_text(json.dumps({"digest": digest}))


def test_retention_recorded_before_cut_answers_were_scored_open_is_scored_again(tmp_path):
    """A finished demo reads a stage's retention back when its inputs.json matches: one scored with cut answers
    closed (the rule before) must not be kept on a run again, or the demo would report the old rule's figures."""
    before = _eval_dir(tmp_path, "before", [("a", "Mix flour and water, then", "length"), ("b", "Yes.", "stop")])
    after = _eval_dir(tmp_path, "after", [("a", "I can't help.", "stop"), ("b", "Sure.", "stop")])
    old = {"pairs": [["a", "question a", "Mix flour and water, then", "I can't help."],
                     ["b", "question b", "Yes.", "Sure."]], "prompts": 2}  # the digest the earlier rule stamped
    _recorded_retention(after, hashlib.sha256(json.dumps(old, ensure_ascii=False).encode("utf-8")).hexdigest())
    retention = Retention(before, ["a", "b"])
    assert not retention.recorded("after", after)
    current = retention._digest(retention._pairs(after))
    (after / "helpfulness" / "retention" / INPUTS).write_text(json.dumps({"digest": current}))
    assert retention.recorded("after", after)  # stamped under the current rule: read back
    assert retention.recorded_figures["after"]["retention_of_base_answers"].value == -0.5
