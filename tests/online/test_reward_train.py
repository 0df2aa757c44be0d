"""Reward-model training inputs and run folders: per-row margins from JSON as well as JSONL files, and what a
second run in a folder is told."""

from __future__ import annotations

import json

import pytest

from safealign.config import load_config
from safealign.errors import UserError
from safealign.online.reward_train import RewardConfig, load_rows

ROWS = [
    {"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "I won't.", "gap": 0.5 * i} for i in range(4)
]


def config_for(path, *overrides) -> RewardConfig:
    return load_config(RewardConfig, None, ["model=tiny-random", f"data.path={path}", *overrides])


@pytest.mark.parametrize("name", ["pairs.json", "pairs.jsonl"])
def test_margin_column_reads_a_json_list_as_well_as_jsonl(name, tmp_path):
    path = tmp_path / name
    path.write_text(json.dumps(ROWS) if name.endswith(".json") else "".join(json.dumps(r) + "\n" for r in ROWS))
    rows = load_rows(config_for(path, "margin_column=gap"))
    assert [r.margin for r in rows] == [0.0, 0.5, 1.0, 1.5]


def test_a_margin_that_is_not_a_finite_number_is_named(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([*ROWS[:2], {**ROWS[2], "gap": "wide"}]))
    with pytest.raises(UserError, match=r"pairs.json row 2: field 'gap' must be a finite number, got 'wide'"):
        load_rows(config_for(path, "margin_column=gap"))
    path.write_text(json.dumps(ROWS[:2]).replace("0.5", "NaN"))
    with pytest.raises(UserError, match=r"row 1: field 'gap' must be a finite number, got nan"):
        load_rows(config_for(path, "margin_column=gap"))


def test_a_second_run_is_told_whether_the_folder_holds_a_trained_model_or_an_unfinished_run(tmp_path):
    """A run killed before final/ must not be described as a trained model; both are refused without --overwrite."""
    import shutil

    from safealign.online.reward_train import run_reward_training

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    config = config_for(path, f"output_dir={tmp_path / 'rm'}", "max_steps=1", "eval_fraction=0")
    run_reward_training(config)
    with pytest.raises(UserError, match="holds a trained reward model"):
        run_reward_training(config)
    shutil.rmtree(tmp_path / "rm" / "final")  # as if killed before the end
    (tmp_path / "rm" / "train_summary.json").unlink()
    with pytest.raises(UserError, match="holds an unfinished reward-model run.*pass --overwrite to start it again"):
        run_reward_training(config)
    assert run_reward_training(config, overwrite=True).final_dir.is_dir()


def test_a_cost_model_refuses_a_margin_and_any_model_a_negative_max_grad_norm(tmp_path):
    """A cost model's loss has no margin (it would be silently ignored); a negative max_grad_norm would flip the
    gradients (0 means no clipping, as in the offline trainer)."""
    path = tmp_path / "pairs.jsonl"
    with pytest.raises(UserError, match="margin=0.5: a cost model"):
        config_for(path, "kind=cost", "margin=0.5")
    with pytest.raises(UserError, match="max_grad_norm must be >= 0"):
        config_for(path, "max_grad_norm=-1")
    assert config_for(path, "kind=cost", "max_grad_norm=0").max_grad_norm == 0


def test_max_grad_norm_zero_trains_without_clipping(tmp_path):
    """clip_grad_norm_(…, 0) zeroes every gradient: 0 must mean "no clipping" and give the unclipped run's steps."""
    from safealign.online.reward_train import run_reward_training

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    logged = {}
    for norm in ("0", "1e9"):
        config = config_for(path, f"output_dir={tmp_path / norm}", "max_steps=3", "eval_fraction=0",
                            "per_device_train_batch_size=2", "learning_rate=5e-2", f"max_grad_norm={norm}")
        run_reward_training(config)
        logged[norm] = [json.loads(line) for line in (tmp_path / norm / "metrics.jsonl").read_text().splitlines()]
    assert logged["0"] == logged["1e9"]
    assert logged["0"][0]["grad_norm"] > 0


UNSAFE_FIRST = [{"prompt": f"Q{i}?", "chosen": f"Here is how {i}.", "rejected": f"I refuse {i}.", "chosen_safe": False,
                 "rejected_safe": True} for i in range(3)]


def test_data_transforms_are_applied_to_reward_pairs(tmp_path):
    """data.transforms were ignored: safety_order on pairs whose chosen answer is the unsafe one trained the
    reward model to prefer it. They rewrite the pairs as for the offline trainer (safealign/train/data.py)."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in UNSAFE_FIRST))
    assert [r.pair.chosen for r in load_rows(config_for(path))][0] == "Here is how 0."
    rows = load_rows(config_for(path, "data.transforms=[{name: safety_order}]"))
    assert [(r.pair.chosen, r.pair.rejected) for r in rows] == [(f"I refuse {i}.", f"Here is how {i}.")
                                                                for i in range(3)]
    plain = tmp_path / "plain.jsonl"  # rows without the safety flags the transform reads: named, as offline
    plain.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with pytest.raises(UserError, match="data transform 'safety_order' needs"):
        load_rows(config_for(plain, "data.transforms=[{name: safety_order}]"))


@pytest.mark.parametrize(("settings", "key"), [
    (["data.unpair=true"], "data.unpair"),
    (["kind=cost", "data.format=hh_rlhf"], "data.format"),
    (["kind=cost", "data.columns={prompt: question}"], "data.columns"),
    (["kind=cost", "data.split=train"], "data.split"),
    (["kind=cost", "data.harmful=true"], "data.harmful"),
    (["kind=cost", "data.transforms=[{name: safety_order}]"], "data.transforms"),
])
def test_data_settings_the_trainer_would_ignore_are_refused_naming_them(tmp_path, settings, key):
    """A reward model learns from pairs (data.unpair would be ignored); a cost model reads the PKU-SafeRLHF layout
    from data.path alone, so format, columns, split, harmful and transforms would be silently ignored."""
    with pytest.raises(UserError, match=rf"^{key}"):
        config_for(tmp_path / "rows.jsonl", *settings)


PKU = {"prompt": "Q?", "response_0": "a", "response_1": "b", "safer_response_id": 1, "is_response_0_safe": False,
       "is_response_1_safe": True}


@pytest.mark.parametrize("value", [1.0, True, "1", 2])
def test_a_pku_safer_response_id_that_is_not_the_integer_0_or_1_is_named(tmp_path, value):
    """1.0 passed `in (0, 1)` and then failed indexing with a bare TypeError; True was taken for 1."""
    path = tmp_path / "pku.jsonl"
    path.write_text("".join(json.dumps({**PKU, "safer_response_id": v}) + "\n" for v in (1, 0, value)))
    with pytest.raises(UserError, match=r"pku.jsonl row 2 \(line 3\): safer_response_id must be the integer 0 or 1"):
        load_rows(config_for(path, "kind=cost"))


def test_pku_rows_with_identical_responses_are_dropped_and_counted(tmp_path, caplog):
    """As on the reward path (data/formats.py): for one prompt the same text is no preference."""
    path = tmp_path / "pku.jsonl"
    rows = [PKU, {**PKU, "response_1": " a "}, {**PKU, "prompt": "R?"}, {**PKU, "response_0": "b"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level("WARNING", logger="safealign.online.reward_train"):
        kept = load_rows(config_for(path, "kind=cost"))
    assert [r.pair.row for r in kept] == [0, 2]
    assert "pku.jsonl: dropped 2 row(s): response_0 and response_1 are identical" in caplog.text


LOCKS = "Locks are mechanical devices. " * 3  # a long shared beginning: with data.max_length=96 both sides are cut


def test_pairs_whose_response_would_be_cut_are_dropped_and_counted(tmp_path, caplog):
    """Cut at max_length, a response is scored mid-answer, and two responses sharing their beginning became the same
    ids (no gradient, a wrong pair in accuracy). TRL's RewardTrainer drops pairs over max_length: so does this."""
    from safealign.online.reward_train import run_reward_training

    path = tmp_path / "pairs.jsonl"
    long = [{"prompt": "Tell me about locks.", "chosen": LOCKS + "I won't explain how to defeat them.",
             "rejected": LOCKS + "Here is how to pick one: insert a tension wrench."},
            {"prompt": "Q?", "chosen": "Fine." * 30, "rejected": "No."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*ROWS, *long]))
    config = config_for(path, f"output_dir={tmp_path / 'rm'}", "max_steps=1", "eval_fraction=0",
                        "data.max_length=96", "data.max_prompt_length=48")
    with caplog.at_level("WARNING", logger="safealign.online.reward_train"):
        run_reward_training(config)
    summary = json.loads((tmp_path / "rm" / "train_summary.json").read_text())
    assert summary["train_pairs"] == 4 and summary["pairs_dropped_over_max_length"] == 2
    assert "dropped 2 of 6 pair(s)" in caplog.text and "data.max_length=96" in caplog.text


def test_pairs_whose_two_sides_encode_the_same_are_dropped(tmp_path, tiny_tokenizer):
    """A chat template that rewrites the answer (here: lower-cases it) can make two different texts one sequence."""
    from safealign.data import PairEncoder
    from safealign.online.reward_train import Row, encode_rows
    from safealign.types import PreferencePair

    template = tiny_tokenizer.chat_template.replace("message['content']", "message['content'] | lower")
    encoder = PairEncoder(tiny_tokenizer, max_length=96, max_prompt_length=48, chat_template=template)
    prompt = ({"role": "user", "content": "Q?"},)
    rows = [Row(PreferencePair(prompt, "Yes.", "YES.")), Row(PreferencePair(prompt, "Yes.", "No."))]
    items, over, same = encode_rows(encoder, rows)
    assert [row for _, row in items] == rows[1:] and (over, same) == (0, 1)


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_resume_is_refused_for_a_reward_recipe_before_the_model_loads(tmp_path, capsys, no_model_load, extra):
    """Reward-model training keeps no checkpoints: --resume trained from scratch on a fresh folder."""
    from safealign.cli import main

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = tmp_path / "rm.yaml"
    recipe.write_text(f"trainer: reward\nmodel: tiny-random\noutput_dir: {tmp_path / 'rm'}\ndata: {{path: {data}}}\n")
    assert main(["train", str(recipe), "--resume", *extra]) == 2
    err = capsys.readouterr().err
    assert "--resume: reward-model training (trainer: reward) keeps no checkpoints" in err, err
    assert not (tmp_path / "rm").exists()
