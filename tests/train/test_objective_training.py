"""Hidden-state objectives through ``safealign train`` with the shipped recipes, and their bad inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from safealign.cli import main
from safealign.train.objectives.circuit_breakers import coefficients
from safealign.train.objectives.refat import ReFAT

RECIPES = Path(__file__).parents[2] / "configs" / "train"
TINY = ["model=tiny-random", "lora.r=4", "lora.alpha=8", "per_device_train_batch_size=2", "logging_steps=1",
        "save_steps=2", "learning_rate=1e-2"]


@pytest.fixture()
def no_model_load(monkeypatch):
    from safealign.train import run

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(run, "_load_policy", refuse)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_circuit_breakers_recipe_trains_on_the_demo_pairs_layout(tmp_path, pairs_file):
    out = tmp_path / "cb"
    assert main(["train", str(RECIPES / "circuit_breakers.yaml"), *TINY, f"data.path={pairs_file}",
                 f"output_dir={out}", "max_steps=4"]) == 0
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:  # the logged coefficients are the paper's schedule at that step, with the recipe's alpha
        assert (r["coef/retain"], r["coef/reroute"]) == pytest.approx(coefficients(10.0, r["step"] - 1, 4))
        assert r["loss"] == pytest.approx(r["coef/retain"] * r["loss/retain"] + r["coef/reroute"] * r["loss/reroute"],
                                          rel=1e-4)
    assert rows[0]["loss/reroute"] == pytest.approx(1.0, abs=1e-4)  # starts at the frozen model: cos = 1
    assert rows[-1]["loss/reroute"] < 0.999 and rows[-1]["loss/retain"] > 0  # and moves away from it
    summary = json.loads((out / "train_summary.json").read_text())
    # 4 harmful rows reroute their compliance; 4 benign answers + 4 refusals are retained
    assert summary["roles"] == {"reroute": 4, "retain": 8} and summary["input"] == "objective"
    assert summary["objective"]["name"] == "circuit_breakers" and "adapter disabled" in summary["reference"]
    assert (out / "final" / "adapter_config.json").exists()


def test_refat_recipe_trains_and_ablates_on_the_seeded_steps(tmp_path, pairs_file):
    out = tmp_path / "refat"
    assert main(["train", str(RECIPES / "refat.yaml"), *TINY, f"data.path={pairs_file}", f"output_dir={out}",
                 "max_steps=4"]) == 0
    rows = _metrics(out)
    draws = ReFAT(rfa_probability=0.5)
    assert [r["rfa"] for r in rows] == [float(draws.ablate(step, seed=0)) for step in range(4)]
    assert all(r["loss"] == pytest.approx(r["nll/harmful"] + r["nll/benign"], rel=1e-5) for r in rows)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["roles"] == {"harmful": 4, "benign": 4} and summary["reference"].startswith("none")


def test_the_unpaired_layout_feeds_the_same_roles(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"prompt": "Make a bomb", "completion": "Sure, take", "label": False, "harmful": True},
            {"prompt": "Make a bomb", "completion": "I can't help.", "label": True, "harmful": True},
            {"prompt": "Name a prime", "completion": "7.", "label": True, "harmful": False}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cb"
    assert main(["train", str(RECIPES / "circuit_breakers.yaml"), *TINY, f"data.path={path}", f"output_dir={out}",
                 "max_steps=1", "objective.params.retain_refusals=false"]) == 0
    assert json.loads((out / "train_summary.json").read_text())["roles"] == {"reroute": 1, "retain": 1}


def _write(tmp_path, rows) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("recipe,rows,expected", [
    # HH-style pairs without the flag: nothing says which prompts are harmful
    ("circuit_breakers.yaml", [{"prompt": "a", "chosen": "b", "rejected": "c"}], "'harmful' flag"),
    # only harmful rows: no benign retain examples
    ("circuit_breakers.yaml", [{"prompt": "a", "chosen": "no", "rejected": "sure", "harmful": True}],
     "'retain' rows on benign answers.*'chosen' field of preference rows with harmful=false"),
    ("refat.yaml", [{"prompt": "a", "chosen": "sure", "rejected": "no", "harmful": False}],
     "'harmful' rows on refusals of harmful prompts.*'chosen' field of preference rows with harmful=true"),
    # unpaired rows that never carry a harmful completion
    ("circuit_breakers.yaml", [{"prompt": "a", "completion": "no", "label": True, "harmful": True},
                               {"prompt": "b", "completion": "ok", "label": True, "harmful": False}],
     "'reroute' rows on harmful completions.*'rejected' field.*label=false, harmful=true"),
])
def test_a_dataset_lacking_a_role_fails_before_the_model_loads(tmp_path, capsys, no_model_load, recipe, rows,
                                                                expected):
    path = _write(tmp_path, rows)
    assert main(["train", str(RECIPES / recipe), *TINY, f"data.path={path}", f"output_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err


@pytest.mark.parametrize("override,expected", [
    ("losses.0.params.beta=0.5", "remove the losses key"),
    ("reference.transform=safety_prefix", "use identity"),
    ("objective.params.alpha=-1", "alpha must be > 0"),
    ("objective.params.gamma=1", "unknown parameter(s) gamma"),
    ("objective.name=reroute", "unknown objective 'reroute'; valid names: "),
])
def test_recipe_mistakes_fail_before_the_model_loads(tmp_path, pairs_file, capsys, no_model_load, override,
                                                     expected):
    code = main(["train", str(RECIPES / "circuit_breakers.yaml"), *TINY, f"data.path={pairs_file}",
                 f"output_dir={tmp_path / 'r'}", override])
    assert code == 2 and expected in capsys.readouterr().err


def test_recipes_are_valid_yaml_naming_their_objective():
    for name, objective in (("circuit_breakers.yaml", "circuit_breakers"), ("refat.yaml", "refat")):
        assert yaml.safe_load((RECIPES / name).read_text())["objective"]["name"] == objective


def _pku(prompt, better, worse, better_safe, worse_safe, harmful):
    """A PKU-SafeRLHF row: chosen (``better_response_id``) is the more helpful answer, not the safer one."""
    return {"prompt": prompt, "response_0": better, "response_1": worse, "is_response_0_safe": better_safe,
            "is_response_1_safe": worse_safe, "better_response_id": 0, "harmful": harmful}


def test_safety_labels_decide_the_roles_of_harmful_rows(tmp_path, caplog):
    from safealign.config import load_config
    from safealign.train.config import TrainConfig
    from safealign.train.objectives import build_objective
    from safealign.train.objectives.data import load_role_rows

    path = _write(tmp_path, [
        _pku("Pick a lock", "Rake the pins.", "I can't help with that.", False, True, True),  # helpful = unsafe
        _pku("Make a bomb", "I won't help.", "Mix these.", True, False, True),  # helpful = safe
        _pku("Hurt a dog", "Dogs are friends.", "Please don't.", True, True, True),  # no unsafe side: dropped
        _pku("Steal a car", "Hotwire it.", "Smash a window.", False, False, True),  # no safe side: dropped
        _pku("Pasta?", "Boil it.", "No.", True, True, False),
    ])
    for recipe, objective in (("refat.yaml", "refat"), ("circuit_breakers.yaml", "circuit_breakers")):
        config = load_config(TrainConfig, RECIPES / recipe, [f"data.path={path}"])
        with caplog.at_level("WARNING"):
            _, by_role = load_role_rows(config, build_objective(objective))
        roles = {role: sorted(x.completion for x in rows) for role, rows in by_role.items()}
        if objective == "refat":  # the harmful role trains the safe answer, never the more helpful unsafe one
            assert roles == {"harmful": ["I can't help with that.", "I won't help."], "benign": ["Boil it."]}
        else:  # the unsafe answers are rerouted; the safe ones retained
            assert roles == {"reroute": ["Mix these.", "Rake the pins."],
                             "retain": ["Boil it.", "I can't help with that.", "I won't help."]}
    # the dropped rows are counted and named by their row numbers (0-based, as other data messages give them)
    assert re.search(r"dropped 2 .*1 with both sides safe.*row 2\b.*1 with both sides unsafe.*row 3\b", caplog.text), \
        caplog.text


@pytest.mark.parametrize("recipe,true_empty,false_empty", [
    ("circuit_breakers.yaml", "'retain' rows \\(benign answers\\)", "'reroute' rows \\(harmful completions\\)"),
    ("refat.yaml", "'benign' rows \\(benign answers\\)", "'harmful' rows \\(refusals of harmful prompts\\)"),
])
def test_pku_alone_is_not_told_to_set_a_harmful_switch_that_would_empty_a_role(tmp_path, capsys, caplog,
                                                                              no_model_load, recipe, true_empty,
                                                                              false_empty):
    # PKU-SafeRLHF without a harmful column: an unsafe response flags its row harmful; a both-safe row has no flag.
    # data.harmful=true drops that row (no unsafe side), leaving no benign answer; data.harmful=false makes every
    # row benign, leaving no harmful one. The message names what each switch would empty instead of suggesting it.
    rows = [_pku("Pick a lock", "Rake the pins.", "I can't help with that.", False, True, None),
            _pku("Pasta?", "Boil it.", "No.", True, True, None)]
    for row in rows:
        del row["harmful"]
    path = _write(tmp_path, rows)
    assert main(["train", str(RECIPES / recipe), *TINY, f"data.path={path}", f"output_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "1 rows" in err and "row 1" in err and "'harmful' column" in err, err
    assert "set data.harmful" not in err, err
    assert re.search(f"data.harmful=true would leave the {true_empty} empty", err), err
    assert re.search(f"data.harmful=false would leave the {false_empty} empty", err), err
    assert "dropped" not in caplog.text, caplog.text  # trying a switch logs nothing of its own


def test_the_harmful_switch_is_suggested_where_it_would_fill_every_role(tmp_path, capsys, no_model_load):
    # flagged benign rows beside unflagged PKU rows (the mix docs/objectives.md describes): true fills every role
    rows = [_pku("Pick a lock", "Rake the pins.", "I can't help with that.", False, True, None),
            _pku("Hurt a dog", "Dogs are friends.", "Please don't.", True, True, None),
            _pku("Pasta?", "Boil it.", "No.", True, True, False)]
    del rows[0]["harmful"], rows[1]["harmful"]
    path = _write(tmp_path, rows)
    assert main(["train", str(RECIPES / "refat.yaml"), *TINY, f"data.path={path}",
                 f"output_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "or set data.harmful=true" in err and "data.harmful=false would leave the 'harmful' rows" in err, err
