"""Bad recipes fail through ``safealign train`` with exit code 2 and a message naming the fix, before
any model loads."""

from __future__ import annotations

import json

import pytest
import yaml

from safealign.cli import main


@pytest.fixture()
def no_model_load(monkeypatch):
    from safealign.train import run

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(run, "_load_policy", refuse)


@pytest.fixture()
def unpaired_file(tmp_path):
    path = tmp_path / "unpaired.jsonl"
    rows = [
        {"prompt": "Hi?", "completion": "Hello.", "label": True},
        {"prompt": "Yo?", "completion": "No.", "label": False},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(tmp_path, data, fields):
    config = {"model": "tiny-random", "output_dir": str(tmp_path / "run"), "losses": [{"name": "dpo"}], **fields,
              "data": {"path": str(data), **fields.get("data", {})}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


CASES = {
    "unknown loss": ({"losses": [{"name": "dpoo"}]}, ["'dpoo'", "dpo", "kto", "simpo"]),
    "mistyped param": ({"losses": [{"name": "dpo", "params": {"betta": 0.1}}]}, ["(s) betta", "beta (default 0.1)"]),
    "bad reference mode": ({"reference": {"mode": "cached"}}, ["reference.mode", "cache, live", "'cached'"]),
    "pairs to unpaired loss": ({"losses": [{"name": "kto"}]}, ["format 'standard'", "'kto'", "data.unpair=true"]),
    "unpair already unpaired": ({"losses": [{"name": "kto"}], "data": {"unpair": True}}, ["already holds unpaired"]),
    "poft without scores": ({"losses": [{"name": "poft"}]}, ["'poft'", "8 of 8 rows", "no 'chosen_scores'",
                                                             "docs/loss-inputs.md"]),
    "jpo on same-prompt pairs": ({"losses": [{"name": "jpo"}]}, ["'jpo'", "no row of", "it is dpo", "'joint' format"]),
    "jpo with dpo": ({"losses": [{"name": "jpo"}, {"name": "dpo"}]},
                     ["cannot combine", "jpo (joint)", "dpo (response)"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_recipe_exits_2_before_loading_the_model(case, tmp_path, pairs_file, unpaired_file, no_model_load, capsys):
    fields, expected = CASES[case]
    data = unpaired_file if case == "unpair already unpaired" else pairs_file
    assert main(["train", str(recipe(tmp_path, data, fields))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("safealign: error:")
    for text in expected:
        assert text in err, (text, err)


def joint_file(tmp_path, rows):
    path = tmp_path / "joint.jsonl"
    path.write_text("".join(json.dumps({"chosen_prompt": a, "chosen": "Yes.", "rejected_prompt": b, "rejected": "No."})
                            + "\n" for a, b in rows))
    return path


def test_cross_prompt_rows_to_a_same_prompt_loss_name_the_rows(tmp_path, no_model_load, capsys):
    data = joint_file(tmp_path, [("A?", "A?"), ("A?", "B?"), ("C?", "D?")])
    assert main(["train", str(recipe(tmp_path, data, {}))]) == 2
    err = capsys.readouterr().err
    expected = ("format 'joint'", "2 row(s) (e.g. row 1, 2)", "loss 'dpo' compares two answers to one prompt", "'jpo'")
    for text in expected:
        assert text in err, (text, err)


def test_joint_log_probs_refuse_a_changed_reference_prompt(tmp_path, no_model_load, capsys):
    fields = {"losses": [{"name": "jpo"}], "reference": {"transform": "safety_prefix"}}
    assert main(["train", str(recipe(tmp_path, joint_file(tmp_path, [("A?", "B?")]), fields))]) == 2
    assert "reference.transform='safety_prefix' changes it: use identity" in capsys.readouterr().err


@pytest.mark.parametrize("loss", ["simpo", "orpo", "cpo", "sft"])
def test_a_reference_free_loss_refuses_a_reference_transform(loss, tmp_path, pairs_file, no_model_load, capsys):
    """No reference sees the safety prefix, yet it would be recorded and would cut responses: refused."""
    fields = {"losses": [{"name": loss}], "reference": {"transform": "safety_prefix"}}
    assert main(["train", str(recipe(tmp_path, pairs_file, fields))]) == 2
    err = capsys.readouterr().err
    assert f"loss '{loss}' is reference-free, so reference.transform='safety_prefix'" in err, err


def test_a_reference_transform_is_kept_when_one_component_needs_a_reference(tmp_path, pairs_file, no_model_load):
    """sft beside dpo: dpo's reference sees the prefix, so the check passes and training reaches the model load."""
    fields = {"losses": [{"name": "dpo"}, {"name": "sft", "weight": 0.5}], "reference": {"transform": "safety_prefix"}}
    with pytest.raises(AssertionError, match="model"):
        main(["train", str(recipe(tmp_path, pairs_file, fields))])


def test_unpaired_data_to_a_paired_loss_names_format_and_loss(tmp_path, unpaired_file, no_model_load, capsys):
    assert main(["train", str(recipe(tmp_path, unpaired_file, {"losses": [{"name": "ipo"}]}))]) == 2
    err = capsys.readouterr().err
    for text in ("format 'unpaired'", "'ipo'", "takes preference pairs", "kto", "bco"):
        assert text in err, (text, err)


def test_poft_scores_from_different_numbers_of_models_name_the_rows(tmp_path, no_model_load, capsys):
    data = tmp_path / "scored.jsonl"
    rows = [{"prompt": "A?", "chosen": "Yes.", "rejected": "No.", "chosen_scores": scores}
            for scores in ([-1.0], [-1.0], [-1.0, -2.0])]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["train", str(recipe(tmp_path, data, {"losses": [{"name": "poft"}]}))]) == 2
    assert "'chosen_scores' has 2 values in row 2 but 1 in row 0" in capsys.readouterr().err


def unflagged_file(tmp_path, flags):
    path = tmp_path / "unflagged.jsonl"
    rows = [{"prompt": f"How do I make a weapon {i}?", "chosen": "I can't help.", "rejected": "Sure: step 1",
             **({} if flag is None else {"harmful": flag})} for i, flag in enumerate(flags)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("flags", [[None, None, None], [False, None, False]])
def test_an_e_variant_on_rows_none_of_which_is_flagged_harmful_is_refused(flags, tmp_path, no_model_load, capsys):
    """safety_prefix (apply_to: harmful) changes only rows flagged harmful: with none, every row's reference sees the
    policy's prompt and the run would be plain DPO recorded as the E-variant (the online trainer refuses it too)."""
    data = unflagged_file(tmp_path, flags)
    fields = {"reference": {"transform": "safety_prefix"}}
    assert main(["train", str(recipe(tmp_path, data, fields))]) == 2
    err = capsys.readouterr().err
    for text in (str(data), "no row is flagged harmful", "reference.transform='safety_prefix'", "apply_to: harmful",
                 "a 'harmful' column", "data.harmful"):
        assert text in err, (text, err)


def test_an_e_variant_warns_of_rows_without_a_harmful_flag(tmp_path, no_model_load, caplog):
    """Some rows flagged: the run is an E-variant, but the unflagged rows keep the plain reference -- said, with
    examples, before the model loads."""
    data = unflagged_file(tmp_path, [True, None, False, None])
    fields = {"reference": {"transform": "safety_prefix"}}
    with caplog.at_level("WARNING", logger="safealign.train.data"), pytest.raises(AssertionError, match="model"):
        main(["train", str(recipe(tmp_path, data, fields))])
    warning = " ".join(r.getMessage() for r in caplog.records if r.name == "safealign.train.data")
    for text in (str(data), "2 of 4 rows", "e.g. row 1, 3", "no harmful flag", "plain reference"):
        assert text in warning, (text, warning)


def test_judgment_rows_given_to_a_loss_name_the_format_and_the_objective_that_reads_them(tmp_path, no_model_load,
                                                                                        capsys):
    data = tmp_path / "judged.jsonl"
    data.write_text(json.dumps({"prompt": "q", "completion": "a", "judgment": "bad", "score": 1}) + "\n")
    for fields in ({}, {"losses": [{"name": "kto"}]}, {"losses": [{"name": "kto"}], "data": {"unpair": True}}):
        assert main(["train", str(recipe(tmp_path, data, fields))]) == 2
        err = capsys.readouterr().err
        for text in (str(data), "format 'judgment'", "objective 'cut'", "objective: {name: cut}"):
            assert text in err, (fields, text, err)
