"""The report reads what the real evaluation pipeline writes (fake backend, real refusal judge)."""

from __future__ import annotations

import json

from eval.fakes import ScriptedChatModel
from fixture_run import XSS

from safealign.eval.config import EvalConfig
from safealign.eval.judges.refusal import RefusalConfig, RefusalJudge
from safealign.eval.pipeline import run_eval
from safealign.report.document import build_document
from safealign.report.html import render_html
from safealign.report.load import load_run
from safealign.report.markdown import render_markdown
from safealign.types import Behavior

BEHAVIORS = [Behavior(f"b{i}", f"behavior {i}", category="cyber" if i < 2 else "bio") for i in range(4)]


def _eval(out, reply):
    config = EvalConfig(attacks=["direct"], judges=["refusal"], output_dir=str(out))
    run_eval(config, chat_model=ScriptedChatModel(reply), behaviors=BEHAVIORS,
             judges={"refusal": RefusalJudge(RefusalConfig())})


def test_report_from_pipeline_output(tmp_path):
    run = tmp_path / "demo"
    # before: every behavior answered (one with a payload); after: b0..b2 refused
    _eval(run / "eval" / "before" / "jailbreak", lambda c: f"Sure: {XSS[0]}")
    _eval(run / "eval" / "after" / "jailbreak", lambda c: "Sure" if c[-1]["content"].endswith("3") else "I cannot.")
    (run / "summary.json").write_text(json.dumps({"before": {"direct_asr": 1.0}, "after": {"direct_asr": 0.25}}))
    data = load_run(run)
    assert [s.name for s in data.stages] == ["before", "after"]
    md = render_markdown(build_document(data, with_plots=False))
    # Wilson(4, 4) = [51.0, 100.0]; Wilson(1, 4) = [4.6, 69.9]
    assert "| direct | 100.0% [51.0–100.0] n=4 | 25.0% [4.6–69.9] n=4 |" in md
    assert "errs both ways" in md
    html = render_html(build_document(data, with_plots=False))
    assert XSS[0] not in html and "Sure: &lt;script&gt;alert(1)&lt;/script&gt;" in html
