"""Config values of the right type that cannot work fail at load, naming the key, before any model loads (checks.py)."""

from __future__ import annotations

import math

import pytest

from safealign.cli import main
from safealign.config import load_config
from safealign.errors import UserError
from safealign.eval.config import EvalConfig
from safealign.train.config import TrainConfig


@pytest.mark.parametrize(("override", "key"), [
    ("generation.batch_size=0", "generation.batch_size"),
    ("generation.max_new_tokens=0", "generation.max_new_tokens"),
    ("generation.max_new_tokens=-5", "generation.max_new_tokens"),
    ("generation.temperature=nan", "generation.temperature"),
    ("generation.temperature=-1", "generation.temperature"),
    ("generation.top_p=0", "generation.top_p"),
    ("model.concurrency=0", "model.concurrency"),
    ("model.timeout_s=0", "model.timeout_s"),
    ("behaviors.limit=0", "behaviors.limit"),
])  # fmt: skip
def test_eval_value_ranges_name_the_key(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_config(EvalConfig, None, [override])


def test_sampling_at_temperature_zero_is_rejected():
    with pytest.raises(UserError, match="generation.temperature must be > 0"):
        load_config(EvalConfig, None, ["generation.do_sample=true", "generation.temperature=0"])
    assert load_config(EvalConfig, None, ["generation.temperature=0"]).generation.temperature == 0  # greedy: unused


@pytest.mark.parametrize(("override", "key"), [
    ("learning_rate=-1e-4", "learning_rate"),
    ("learning_rate=nan", "learning_rate"),
    ("per_device_train_batch_size=0", "per_device_train_batch_size"),
    ("gradient_accumulation_steps=0", "gradient_accumulation_steps"),
    ("max_steps=0", "max_steps"),
    ("lora.r=0", "lora.r"),
    ("lora.dropout=1.0", "lora.dropout"),
    ("data.max_prompt_length=600", "data.max_prompt_length"),
    ("losses.0.weight=-1", "losses.0.weight"),
    ("reference.batch_size=0", "reference.batch_size"),
])  # fmt: skip
def test_train_value_ranges_name_the_key(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_config(TrainConfig, None, ["data.path=x.jsonl", override])


@pytest.mark.parametrize("beta", [0, 0.0, -0.1])
def test_beta_zero_or_negative_is_rejected_with_the_reason(beta):
    from safealign.losses import LossSpec, build_loss

    with pytest.raises(UserError, match=r"'beta' must be > 0.*(constant|flips)"):
        build_loss([LossSpec(name="dpo", params={"beta": beta})])


def test_non_finite_loss_parameter_is_rejected():
    from safealign.losses import LossSpec, build_loss

    with pytest.raises(UserError, match="loss 'rpo': eta: expected a finite number, got inf"):
        build_loss([LossSpec(name="rpo", params={"eta": math.inf})])


def test_train_cli_rejects_beta_zero_before_the_model_loads(tmp_path, no_model_load, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(f"model: tiny-random\noutput_dir: {tmp_path / 'run'}\ndata: {{path: {tmp_path / 'p.jsonl'}}}\n")
    assert main(["train", str(config), "losses.0.params.beta=0"]) == 2
    assert "'beta' must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_mutated_config_is_checked_again_by_the_runs(tmp_path, no_model_load):
    from safealign.eval.pipeline import run_eval
    from safealign.train.run import run_training

    eval_config = EvalConfig(output_dir=str(tmp_path / "eval"))
    eval_config.generation.batch_size = 0  # set after construction, as library callers do
    with pytest.raises(UserError, match=r"generation\.batch_size"):
        run_eval(eval_config)
    train_config = TrainConfig(model="tiny-random", output_dir=str(tmp_path / "train"))
    train_config.per_device_train_batch_size = 0
    with pytest.raises(UserError, match="per_device_train_batch_size"):
        run_training(train_config)


@pytest.mark.parametrize(("override", "key"), [
    ("beta=0", "'beta' must be > 0"),
    ("train.losses.0.params.beta=-0.5", "'beta' must be > 0"),
    ("batch_size=0", r"generation\.batch_size"),
    ("eval_max_new_tokens=0", r"generation\.max_new_tokens"),
    ("pair_max_new_tokens=0", "pair_max_new_tokens"),
])  # fmt: skip
def test_demo_config_ranges(override, key):
    from safealign.pipelines.demo_config import load_demo_config

    with pytest.raises(UserError, match=key):
        load_demo_config([override])


def test_generation_params_reject_a_zero_batch():
    from safealign.eval.backends.base import GenerationParams

    with pytest.raises(UserError, match="batch_size"):
        GenerationParams(batch_size=0)


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--max-new-tokens", "-1"], ["--batch-size", "x"]])
def test_build_safety_rejects_bad_counts_at_parse_time(tmp_path, no_model_load, capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "build-safety", "--model", "tiny-random", "--out", str(tmp_path / "p.jsonl"), *args])
    assert exit_info.value.code == 2 and args[0] in capsys.readouterr().err
