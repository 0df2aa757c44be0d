"""Integration with the embedded SmolLM2 model (slow): a tiny end-to-end run, then a resume."""

from __future__ import annotations

import json

import pytest

from safealign.eval.config import EvalConfig
from safealign.eval.pipeline import run_eval

pytestmark = pytest.mark.slow


def test_embedded_model_direct_and_prefill_resume(shared_data, tmp_path):
    from safealign.models.load import load_model

    model, tokenizer = load_model("smollm2-135m-instruct")
    config = EvalConfig(attacks=["direct", "prefill"], judges=["refusal"], output_dir=str(tmp_path))
    config.behaviors.path = str(shared_data / "advbench_behaviors.csv")
    config.behaviors.targets = str(shared_data / "advbench_targets.json")
    config.behaviors.limit = 4
    config.generation.max_new_tokens = 16
    summary = run_eval(config, model, tokenizer)
    for attack in ("direct", "prefill"):
        stats = summary.attacks[attack]["refusal"]
        assert stats.n == 4 and stats.unscored == 0 and 0.0 <= stats.asr <= 1.0
    records = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(records) == 8 and all(json.loads(r)["completion"]["error"] is None for r in records)
    again = run_eval(config, model, tokenizer)  # everything recorded: nothing is generated again
    assert again.attacks == summary.attacks
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 8
