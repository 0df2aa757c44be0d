"""The attention implementation online and reward-model training load their models with (``attn_implementation``,
as the preference trainer's; tests/train/test_train_attention.py): a name transformers does not know is refused
naming the key before anything loads; a known one reaches the policy's and a ``reference.model``'s load (online) and
the backbone's (reward model); the run's fingerprint holds it only when it is set, so recorded digests stay."""

from __future__ import annotations

import json

import pytest

from safealign.config import load_config
from safealign.errors import UserError
from safealign.online.config import OnlineConfig
from safealign.online.reward_train import RewardConfig
from tests.online.test_online_trainer import tiny_config
from tests.online.test_reward_train import ROWS


def overrides(schema, *keys: str) -> list[str]:
    return ["data.path=x.jsonl", *keys] if schema is RewardConfig else list(keys)


@pytest.mark.parametrize("schema", [OnlineConfig, RewardConfig])
def test_a_known_implementation_is_accepted_and_unset_stays_unset(schema):
    assert load_config(schema, None, overrides(schema)).attn_implementation is None
    assert load_config(schema, None, overrides(schema, "attn_implementation=eager")).attn_implementation == "eager"


@pytest.mark.parametrize("schema", [OnlineConfig, RewardConfig])
@pytest.mark.parametrize("name", ["flash_attention", "paged|eager", "SDPA"])
def test_any_other_name_is_refused_naming_the_key_before_a_model_loads(schema, name, no_model_load):
    with pytest.raises(UserError, match=r"attn_implementation=.*must be one of .*eager.*flash_attention_2.*sdpa"):
        load_config(schema, None, overrides(schema, f"attn_implementation={name}"))


def test_the_online_fingerprint_names_the_implementation_only_once_set(tmp_path):
    from safealign.online.run import online_fingerprint, online_settings_fingerprint

    unset, eager = (online_fingerprint(tiny_config(tmp_path)),
                    online_fingerprint(tiny_config(tmp_path, "attn_implementation=eager")))
    assert "attn_implementation" not in unset.values and eager.values["attn_implementation"] == "eager"
    assert unset.digest != eager.digest
    # what compare-online's finished stages were recorded under: a config without the key digests the same
    assert "attn_implementation" not in online_settings_fingerprint(tiny_config(tmp_path)).values


def attention_loads(loads):
    """(spec, the attn_implementation asked for, the one the model runs) of each load of ``model_loads``."""
    return [(spec, kwargs.get("attn_implementation"), model.config._attn_implementation)
            for spec, kwargs, model in loads]


def test_an_online_run_loads_the_policy_and_a_reference_model_with_it(tmp_path, model_loads):
    from safealign.online.run import run_online

    result = run_online(tiny_config(tmp_path, "max_steps=1", "attn_implementation=eager",
                                    "reference.model=tiny-random", reward="length_reward"))
    assert attention_loads(model_loads) == [("tiny-random", "eager", "eager")] * 2  # policy, reference
    assert json.loads((result.output_dir / "fingerprint.json").read_text())["values"]["attn_implementation"] == "eager"


@pytest.mark.parametrize("name", [None, "eager"])
def test_a_reward_model_run_loads_its_backbone_with_it(name, tmp_path, model_loads):
    from safealign.online.reward_train import run_reward_training

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    config = load_config(RewardConfig, None, ["model=tiny-random", f"data.path={path}", f"output_dir={tmp_path / 'rm'}",
                                              "max_steps=1", "eval_fraction=0",
                                              *([f"attn_implementation={name}"] if name else [])])
    run_reward_training(config)
    # unset: transformers' default, as before
    assert attention_loads(model_loads) == [("tiny-random", name, name or "sdpa")]
    values = json.loads((tmp_path / "rm" / "fingerprint.json").read_text())["values"]
    assert values.get("attn_implementation", "left out") == (name or "left out")
