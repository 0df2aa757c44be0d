"""``safealign compare-online`` on tiny-random: both variants × two seeds trained and evaluated, the table
written, and a second run recomputes nothing."""

from __future__ import annotations

import json

import pytest

from safealign.cli import main
from tests.online.test_online_trainer import RECIPES, TINY

SMALL = ["harmful_test=2", "benign_test=1", "borderline_test=1", "eval_max_new_tokens=4", "eval_batch_size=4",
         "seeds=[0,1]"]


def test_compare_online_trains_both_variants_and_writes_the_table(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    train = "train_overrides=[" + ",".join(o for o in TINY if not o.startswith("save_steps")) + "]"
    args = ["compare-online", f"recipe={RECIPES / 'rlhf_rloo.yaml'}", train, f"output_dir={out}", *SMALL]
    assert main(args) == 0
    table = json.loads((out / "online_compare.json").read_text())
    assert set(table["stages"]) == {"before", "plain-seed0", "plain-seed1", "e-seed0", "e-seed1"}
    assert set(table["metrics"]) == {"direct_asr", "template_asr", "benign_refusal_rate", "borderline_refusal_rate"}
    direct = table["metrics"]["direct_asr"]
    # the tiny policies' outcomes may not vary at all: then the exact bound over the prompts
    interval = direct["e_minus_plain"]["interval"]
    assert "random-effects t" in interval or "exact binomial over the" in interval
    assert direct["e_minus_plain"]["seeds"] == 2
    assert direct["e_minus_plain"]["diff"] == pytest.approx(direct["e"] - direct["plain"])  # every prompt scored
    for variant in ("plain", "e"):
        assert direct[f"{variant}_ci95"][0] <= direct[variant] <= direct[f"{variant}_ci95"][1]
    assert "| direct_asr |" in (out / "online_compare.md").read_text()
    records = (out / "eval" / "before" / "helpfulness" / "overrefusal" / "records.jsonl").read_text().splitlines()
    assert len(records) == 2  # the table's benign prompts only, not the demo's default untuned set
    e_train = (out / "train" / "e-seed0" / "config.yaml").read_text()
    assert "safety_prefix" in e_train and "identity" in (out / "train" / "plain-seed1" / "config.yaml").read_text()

    import safealign.online.run as run_module

    def no_training(*a, **k):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(run_module, "run_online", no_training)
    assert main(args) == 0
