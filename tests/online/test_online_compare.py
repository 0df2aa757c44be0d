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


def _compare(out, *more):
    from tests.online.test_online_compare_workers import args

    return args(out, "seeds=[0]", "variants=[plain]", *more)


def _stage(out):
    return json.loads((out / "train" / "plain-seed0" / "stage.json").read_text())


def test_a_stage_finished_with_fewer_steps_is_extended_and_one_with_more_is_refused(tmp_path, monkeypatch):
    """max_steps is no setting of a constant-schedule run (a longer one with --resume extends it, docs/online.md
    "Resume"), so a finished stage is checked for its step count: a shorter run is resumed to the new max_steps and
    evaluated again, a longer one (which cannot be shortened) refused, naming the stage and both counts."""
    import safealign.online.run as run_module
    from safealign.errors import UserError
    from tests.online.test_online_compare_workers import TRAIN

    out = tmp_path / "cmp"
    assert main(_compare(out)) == 0
    assert _stage(out)["train"]["steps"] == 2
    before = (out / "train" / "plain-seed0" / "metrics.jsonl").read_text().splitlines()
    answers = out / "eval" / "plain-seed0" / "helpfulness" / "overrefusal" / "records.jsonl"
    marked = [{**json.loads(line), "completion": "the 2-step policy's answer"}
              for line in answers.read_text().splitlines()]
    answers.write_text("".join(json.dumps(row) + "\n" for row in marked))
    resumed = []
    real = run_module.run_online
    monkeypatch.setattr(run_module, "run_online", lambda config, **kw: resumed.append(kw) or real(config, **kw))
    longer = TRAIN.replace("max_steps=2", "max_steps=3")
    assert longer != TRAIN
    assert main([*_compare(out), longer]) == 0
    assert resumed == [{"resume": True}]  # continued from checkpoint-2, not trained over
    assert _stage(out)["train"]["steps"] == 3
    assert json.loads((out / "online_compare.json").read_text())["stages"]["plain-seed0"]["train"]["steps"] == 3
    rows = (out / "train" / "plain-seed0" / "metrics.jsonl").read_text().splitlines()
    assert rows[:2] == before and len(rows) == 3
    assert "2-step" not in answers.read_text()  # the shorter run's evaluation records are not resumed as the new one's
    record = (out / "train" / "plain-seed0" / "stage.json").read_text()
    with pytest.raises(UserError, match=r"plain-seed0.*3 steps.*max_steps=2"):
        from safealign.pipelines.online_compare import load_compare_config, run_online_compare

        run_online_compare(load_compare_config(None, _compare(out)[1:]))  # the 3-step run is not the 2-step one
    assert (out / "train" / "plain-seed0" / "stage.json").read_text() == record


def test_a_finished_stage_whose_prompts_file_changed_is_refused_not_reused(tmp_path):
    """A finished stage's figures are reused only while its training run's whole fingerprint (the prompts file's
    content, the models' weights) still matches, not its settings alone."""
    from safealign.errors import UserError
    from safealign.pipelines.online_compare import load_compare_config, run_online_compare

    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"Question {i}?", "harmful": i % 2 == 0} for i in range(4)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "cmp"
    overrides = _compare(out)
    overrides[2] = overrides[2][:-1] + f",prompts.path={path}]"
    assert main(overrides) == 0
    record = (out / "train" / "plain-seed0" / "stage.json").read_text()
    path.write_text("".join(json.dumps({**row, "prompt": row["prompt"] + " Please."}) + "\n" for row in rows))
    with pytest.raises(UserError, match=r"plain-seed0.*prompts\.path_data"):
        run_online_compare(load_compare_config(None, overrides[1:]))
    assert (out / "train" / "plain-seed0" / "stage.json").read_text() == record


@pytest.mark.parametrize("override, key", [("seeds=[0,0,1]", "seeds"), ("variants=[e,e,plain]", "variants")])
def test_a_repeated_seed_or_variant_is_refused_when_the_config_loads(override, key):
    # the table's mean counted a repeated seed twice while its interval (keyed by seed) counted it once
    from safealign.errors import UserError
    from safealign.pipelines.online_compare import load_compare_config

    with pytest.raises(UserError, match=rf"{key} must be distinct.*{key}=\["):
        load_compare_config(None, [override])


def test_the_shipped_comparison_config_loads():
    from safealign.pipelines.online_compare import load_compare_config

    assert load_compare_config("configs/online/e_vs_plain_cpu.yaml", []).variants == ["plain", "e"]
