"""YAML + key=value overrides: list items by index, typed values, loud errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from safealign.config import Value, load_config, save_config, to_dict
from safealign.errors import UserError
from safealign.train.config import TrainConfig


@pytest.fixture()
def recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data: {path: pairs.jsonl}\nlosses:\n  - name: dpo\n    params: {beta: 0.1}\n")
    return path


def test_overrides_reach_list_items_dicts_and_typed_fields(recipe):
    config = load_config(TrainConfig, recipe, ["losses.0.params.beta=0.5", "learning_rate=1e-4",
                                               "report_to=[none,tensorboard]", "data.columns.prompt=question",
                                               "data.limit=null"])
    assert config.losses[0].params == {"beta": 0.5}
    assert config.learning_rate == 1e-4
    assert config.report_to == ["none", "tensorboard"]
    assert config.data.columns == {"prompt": "question"} and config.data.limit is None


@pytest.mark.parametrize("override, value", [
    ("behaviors.rows=10:50", "10:50"),            # YAML 1.1: the base-60 number 650
    ("model.name=0123", "0123"),                  # octal 83
    ("model.name=1.10", "1.10"),                  # the float 1.1
    ("model.system_prompt=No", "No"),             # false
    ("model.system_prompt=#1 rule", "#1 rule"),   # a comment: null
    ("output_dir=runs/demo #2", "runs/demo #2"),  # cut at the comment: runs/demo (which --fresh deleted)
    ("model.system_prompt=Note: be safe", "Note: be safe"),
    ("model.name='quoted'", "quoted"),
    ("model.system_prompt=null", None),
    ("behaviors.categories=[on,off]", ["on", "off"]),
    ("behaviors.ids=[010, 'a, b']", ["010", "a, b"]),
    ("generation.stop=[User:, ###]", ["User:", "###"]),
])  # fmt: skip
def test_a_text_field_takes_the_text_as_written(override, value):
    from safealign.eval.config import EvalConfig

    config = load_config(EvalConfig, None, [override])
    for part in override.partition("=")[0].split("."):
        config = getattr(config, part)
    assert config == value


def test_an_unreadable_override_value_is_one_error_naming_it():
    from safealign.eval.config import EvalConfig

    with pytest.raises(ValueError, match=re.escape("'generation.max_new_tokens=[1': not a readable value")):
        load_config(EvalConfig, None, ["generation.max_new_tokens=[1"])


@pytest.mark.parametrize("override, reading", [
    ("attack_params.prefill.template=Sure #1 {target}", "'#1 {target}' as a comment"),  # was 'Sure'
    ("attack_params.prefill.template=Sure, here is {target}. Step #1", "'#1' as a comment"),
    ("attack_params.prefill.template=Sure: {target}", "as a mapping"),  # was {'Sure': {'target': None}}
    ("judge_params.llm.prompt=#1 rule", "'#1 rule' as a comment"),  # was null
    ("judge_params.llm.names=- a", "as a list"),
    ("judge_params.llm.prefix=Sure, here is ", "as 'Sure, here is'"),  # the space the template ends with
    ("judge_params.llm.ids=[a, b] #2", "'#2' as a comment"),
])  # fmt: skip
def test_an_override_whose_text_yaml_would_change_is_refused_with_how_to_quote_it(override, reading):
    """Inside free-form parameters (attack_params, judge_params, a loss's or defense's params) a value is read as
    YAML: `` #...`` was dropped as a comment and ``a: b`` became a mapping, silently. Quoted as the error says, the
    text arrives as written."""
    from safealign.eval.config import EvalConfig

    key, _, raw = override.partition("=")
    with pytest.raises(ValueError, match=re.escape(f"{override!r}: YAML would read ")) as info:
        load_config(EvalConfig, None, [override])
    assert reading in str(info.value)
    quoted = re.search(r'quote it: "(.*)"$', str(info.value)).group(1)
    assert quoted.startswith(f"{key}='")
    config = to_dict(load_config(EvalConfig, None, [quoted]))
    for part in key.split("."):
        config = config[part]
    assert config == raw


def test_a_comment_after_a_typed_value_is_refused_too():
    from safealign.eval.config import EvalConfig

    with pytest.raises(ValueError, match=re.escape("'generation.temperature=0.5 #was 0.7': YAML would read '#was")):
        load_config(EvalConfig, None, ["generation.temperature=0.5 #was 0.7"])


def test_override_values_yaml_reads_without_losing_text_keep_working():
    from safealign.eval.config import EvalConfig

    config = load_config(EvalConfig, None, [
        "judge_params.x.a=5e-1", "judge_params.x.b=true", "judge_params.x.c=null", "judge_params.x.d=0123",
        "judge_params.x.e='Sure: {target} #1'", 'judge_params.x.f="it\'s #1"', "judge_params.x.g=[a, 'b #c']",
        "judge_params.x.h={k: v}", "judge_params.x.i=Step#1, here is {target}.", "judge_params.x.j=",
        "defenses=[{name: smoothllm, params: {q: 5}}]", "defenses.0.params.q=0.1"])
    assert config.judge_params["x"] == {"a": 0.5, "b": True, "c": None, "d": "0123", "e": "Sure: {target} #1",
                                        "f": "it's #1", "g": ["a", "b #c"], "h": {"k": "v"},
                                        "i": "Step#1, here is {target}.", "j": None}
    assert config.defenses[0].params == {"q": 0.1}


@pytest.mark.parametrize("override, message", [
    ("losses.3.params.beta=1", "no such key 'losses.3' (a list of length 1)"),
    ("lora.bogus.r=1", "no such key 'lora.bogus'; valid keys here: alpha"),
    ("learning_rate.x=1", "no such key 'learning_rate' (learning_rate"),
    ("learning_rate=abc", "learning_rate: Value 'abc'"),
    ("data.bogus=1", "Key 'bogus' not in 'DataConfig'; valid keys here: columns"),
    ("noequals", "key=value"),
])
def test_bad_overrides_name_the_key(recipe, override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(TrainConfig, recipe, [override])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("losses: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        load_config(TrainConfig, bad)
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        load_config(TrainConfig, bad)
    bad.write_text("lerning_rate: 0.1\ndata: {path: x}\n")
    with pytest.raises(ValueError, match="lerning_rate"):
        load_config(TrainConfig, bad)


def test_missing_mandatory_value_is_an_error():
    with pytest.raises(ValueError, match=r"no value for data\.path: set it in the YAML config or on the command line"):
        load_config(TrainConfig, None, [])


def test_saved_config_loads_back_identically(recipe, tmp_path):
    config = load_config(TrainConfig, recipe, ["losses.0.params.beta=0.25"])
    saved = save_config(config, tmp_path / "out" / "config.yaml")
    assert load_config(TrainConfig, saved) == config


def test_an_explicitly_empty_mapping_loads_back_empty_and_an_omitted_one_takes_its_default(tmp_path):
    """The defenses comparison's eval (attack_params: the template names by default) saved with no attack
    parameters loads back with none, not the defaults; a config without the key still gets the defaults."""
    from safealign.pipelines.defenses import DefenseCompareConfig

    default = DefenseCompareConfig().eval.attack_params
    assert default == {"template": {"names": ["refusal_suppression", "roleplay_novelist"]}}
    config = DefenseCompareConfig()
    config.eval.attacks, config.eval.attack_params = ["direct"], {}
    saved = save_config(config, tmp_path / "config.yaml")
    assert "attack_params: {}" in saved.read_text()
    assert load_config(DefenseCompareConfig, saved) == config
    (tmp_path / "given.yaml").write_text("eval:\n  attack_params:\n    template: {}\n")  # one attack's, emptied
    assert load_config(DefenseCompareConfig, tmp_path / "given.yaml").eval.attack_params == {"template": {}}
    (tmp_path / "omitted.yaml").write_text("eval:\n  attacks: [direct, template]\n")
    assert load_config(DefenseCompareConfig, tmp_path / "omitted.yaml").eval.attack_params == default
    (tmp_path / "section.yaml").write_text("eval: {}\n")  # an empty section (a dataclass) changes nothing
    assert load_config(DefenseCompareConfig, tmp_path / "section.yaml") == DefenseCompareConfig()


def _preference_recipes() -> list[Path]:
    """The offline preference recipes; online and reward-model recipes (``trainer:``) have their own schemas and
    tests (tests/online/)."""
    from safealign.cli.train import trainer_kind

    recipes = sorted((Path(__file__).parents[1] / "configs" / "train").glob("*.yaml"))
    return [p for p in recipes if trainer_kind(str(p)) == "preference"]


@pytest.mark.parametrize("recipe_path", _preference_recipes(), ids=lambda p: p.name)
def test_shipped_train_recipes_load_train_on_a_train_split_and_name_registered_losses(recipe_path):
    from safealign.losses import loss_names
    from safealign.train.objectives import objective_names

    config = load_config(TrainConfig, recipe_path)
    assert config.data.split == "train" and "test" not in config.data.path
    assert all(loss.name in loss_names() for loss in config.losses)
    assert config.objective.name is None or config.objective.name in objective_names()


def test_e_dpo_recipe_is_dpo_plus_its_reference_block():
    import dataclasses

    recipes = Path(__file__).parents[1] / "configs" / "train"
    dpo, e_dpo = load_config(TrainConfig, recipes / "dpo_hh.yaml"), load_config(TrainConfig, recipes / "e_dpo_hh.yaml")
    assert e_dpo.reference.transform == "safety_prefix"
    assert e_dpo.reference.transform_params == {"prefix": "community_guidelines", "apply_to": "harmful"}
    assert dataclasses.replace(e_dpo, output_dir=dpo.output_dir, reference=dpo.reference) == dpo


def test_base_recipe_is_resolved_relative_to_the_recipe_and_merged(tmp_path):
    (tmp_path / "bases").mkdir()
    (tmp_path / "bases" / "root.yaml").write_text(
        "data: {path: pairs.jsonl, limit: 8}\nlosses: [{name: dpo}, {name: sft, weight: 0.5}]\nlearning_rate: 0.1\n")
    (tmp_path / "bases" / "mid.yaml").write_text("base: root.yaml\ndata: {limit: 16}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: bases/mid.yaml\nlosses: [{name: ipo}]\n")
    config = load_config(TrainConfig, child, ["learning_rate=0.2"])
    assert (config.data.path, config.data.limit) == ("pairs.jsonl", 16)  # mappings merge key by key
    assert [loss.name for loss in config.losses] == ["ipo"]  # lists are replaced, not concatenated
    assert config.learning_rate == 0.2


def test_base_recipe_errors_name_the_file(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("base: b.yaml\n")
    b.write_text("base: a.yaml\n")
    with pytest.raises(ValueError, match="extend each other in a cycle"):
        load_config(TrainConfig, a)
    a.write_text("base: nowhere.yaml\n")
    with pytest.raises(ValueError, match=r"a\.yaml: base recipe 'nowhere\.yaml' not found"):
        load_config(TrainConfig, a)
    b.write_text("learning_rat: 0.1\n")  # a bad key in the base: the base file is named, not the recipe given
    a.write_text("base: b.yaml\nseed: 3\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(b))}: invalid config: learning_rat"):
        load_config(TrainConfig, a)
    b.write_text("learning_rate: 0.1\n")
    a.write_text("base: b.yaml\nsead: 3\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(a))}: invalid config: sead"):
        load_config(TrainConfig, a)


def test_a_new_key_inside_a_free_form_mapping_is_created():
    """``attack_params.template.names=[...]`` before ``template`` has parameters (issue 11)."""
    from safealign.eval.config import EvalConfig

    smoke = Path(__file__).parents[1] / "configs" / "eval" / "advbench_smoke.yaml"
    config = load_config(EvalConfig, smoke, ["attack_params.template.names=[prefix_injection]",
                                             "attack_params.gcg.steps=50", "judge_params.refusal.extra=[x]"])
    assert config.attack_params == {"template": {"names": ["prefix_injection"]}, "gcg": {"steps": 50}}
    assert config.judge_params == {"refusal": {"extra": ["x"]}}
    with pytest.raises(ValueError, match="no such key 'generation.bogus'; valid keys here: batch_size"):
        load_config(EvalConfig, smoke, ["generation.bogus.x=1"])


@pytest.mark.parametrize("name, schema", [("ranking_hh.yaml", "RankingConfig"),
                                          ("entanglement_hh.yaml", "EntanglementConfig"),
                                          ("anchor_hh.yaml", "AnchorConfig")])
def test_shipped_diagnose_recipes_load_through_their_base(name, schema):
    from safealign.pipelines import diagnose, diagnose_ranking

    schema_type = getattr(diagnose, schema, None) or getattr(diagnose_ranking, schema)
    config = load_config(schema_type, Path(__file__).parents[1] / "configs" / "diagnose" / name, ["limit=5"])
    assert (config.data, config.split, config.harmful, config.limit) == ("Anthropic/hh-rlhf/harmless-base", "test",
                                                                         True, 5)


def test_a_list_of_sections_can_be_given_on_the_command_line():
    from safealign.eval.config import EvalConfig
    from safealign.train.config import TrainConfig

    config = load_config(EvalConfig, overrides=["defenses=[{name: smoothllm, params: {copies: 2}}, {name: urial}]"])
    assert [(d.name, d.params) for d in config.defenses] == [("smoothllm", {"copies": 2}), ("urial", {})]
    train = load_config(TrainConfig, overrides=["data.path=p.jsonl", "losses=[{name: ipo}]"])
    assert train.losses[0].name == "ipo" and train.losses[0].weight == 1.0  # the missing weight takes its default


def test_a_secret_in_training_args_is_refused_before_it_is_saved(recipe):
    with pytest.raises(ValueError, match="training_args.hub_token: a secret does not belong in a config"):
        load_config(TrainConfig, recipe, ["training_args.push_to_hub=true", "training_args.hub_token=hf_SECRET"])


@pytest.mark.parametrize("override, message", [
    # a typo: TrainingArguments(**training_args) failed with a TypeError traceback when the first stage trained
    ("training_args.disable_tqdn=true", r"training_args.disable_tqdn: not a field of transformers.TrainingArguments"
                                        r" \(did you mean 'disable_tqdm'\?\)"),
    ("training_args.learnig_rate=1e-4", r"training_args.learnig_rate: not a field .*did you mean the config key "
                                        r"learning_rate\?"),
    # a key the config sets itself: "got multiple values for keyword argument"
    ("training_args.learning_rate=1e-4", r"training_args.learning_rate: .* set learning_rate instead"),
    ("training_args.data_seed=3", r"training_args.data_seed: .* set seed instead"),
    ("training_args.optim=adafactor", r"training_args.optim: .* set optimizer instead"),
    ("training_args.remove_unused_columns=true", r"training_args.remove_unused_columns: safealign sets it"),
])
def test_training_args_are_checked_against_transformers_before_anything_loads(recipe, override, message):
    with pytest.raises(ValueError, match=message):
        load_config(TrainConfig, recipe, [override])
    config = load_config(TrainConfig, recipe, ["training_args.use_cpu=true", "training_args.bf16=false",
                                               "training_args.ddp_timeout=10800"])  # fields it does not set: kept
    assert config.training_args == {"use_cpu": True, "bf16": False, "ddp_timeout": 10800}


def test_every_training_argument_safealign_sets_is_refused_in_training_args():
    """The refused keys are those safealign.train.run.training_arguments passes besides ``**training_args``."""
    import ast
    import inspect

    from safealign.train import run
    from safealign.train.config import SET_BY_CONFIG, SET_BY_SAFEALIGN

    tree = ast.parse(inspect.getsource(run.training_arguments))
    call = next(n for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "TrainingArguments")
    passed = {k.arg for k in call.keywords if k.arg} | {"optim", "gradient_checkpointing"}  # the two ** expansions
    assert passed - {"bf16"} == set(SET_BY_CONFIG) - {"group_by_length"} | set(SET_BY_SAFEALIGN)  # bf16: a default



def test_a_recipe_may_name_its_trainer_preference_as_documented(tmp_path):
    path = tmp_path / "pref.yaml"
    path.write_text("trainer: preference\ndata: {path: pairs.jsonl}\n")
    assert load_config(TrainConfig, path).trainer == "preference"


def test_a_trainer_given_on_the_command_line_picks_the_schema(tmp_path, capsys):
    """``safealign train pref.yaml trainer=online`` loaded the preference schema, which said "'online' recipes have
    their own schema (safealign train picks it)": only the recipe files picked it."""
    from safealign.cli import main
    from safealign.cli.train import trainer_kind

    path = tmp_path / "pref.yaml"
    path.write_text(f"data: {{path: pairs.jsonl}}\noutput_dir: {tmp_path / 'out'}\n")
    assert trainer_kind(str(path)) == "preference"
    assert trainer_kind(str(path), ["trainer=online", "learning_rate=1e-4"]) == "online"
    assert trainer_kind(str(path), ["trainer=online", "trainer='reward'"]) == "reward"  # the last one, as written
    (tmp_path / "online.yaml").write_text("base: pref.yaml\ntrainer: online\n")
    assert trainer_kind(str(tmp_path / "online.yaml"), ["trainer=preference"]) == "preference"
    with pytest.raises(ValueError, match=re.escape("command-line overrides: trainer must be preference, online or "
                                                   "reward, got 'onlne'")):
        trainer_kind(str(path), ["trainer=onlne"])
    assert main(["train", str(path), "trainer=reward", "--resume"]) == 2  # refused as a reward recipe is
    assert "--resume: reward-model training (trainer: reward) keeps no checkpoints" in capsys.readouterr().err


def test_a_typed_value_is_assigned_as_it_is_and_errors_name_its_source():
    from safealign.config import Value, load_config
    from safealign.eval.config import EvalConfig

    texts = ['Say "no".', "Line one\nLine two", "'quoted'", "null", "Réponds — 安全", "a, b"]
    config = load_config(EvalConfig, None, [Value("model.name", texts[0]), Value("generation.stop", texts),
                                            Value("generation.temperature", 1), Value("judge_params.x.y", [1, 2])])
    assert config.model.name == texts[0] and config.generation.stop == texts
    assert config.generation.temperature == 1.0 and config.judge_params == {"x": {"y": [1, 2]}}
    with pytest.raises(ValueError, match=r"^grid.yaml: axes: .*temprature.*not in 'GenerationConfig'"):
        load_config(EvalConfig, None, [Value("generation.temprature", 1.0, "grid.yaml: axes")])
    with pytest.raises(ValueError, match=r"^grid.yaml: axes: generation.seed.x: no such key 'generation.seed'"):
        load_config(EvalConfig, None, [Value("generation.seed.x", 1, "grid.yaml: axes")])
    with pytest.raises(ValueError, match=r"^grid.yaml: axes: invalid config: .*generation.max_new_tokens"):
        load_config(EvalConfig, None, [Value("generation.max_new_tokens", "many", "grid.yaml: axes")])


def test_a_config_file_is_read_as_yaml_1_2(tmp_path):
    """YAML 1.1 (PyYAML's safe_load) read ``10:50`` as the base-60 number 650, ``0123`` as octal 83, ``No`` as false
    and ``5e-2`` / ``1e-8`` (no dot) as text, which free-form mappings then passed on unchecked."""
    from safealign.eval.config import EvalConfig

    path = tmp_path / "eval.yaml"
    path.write_text("behaviors: {rows: 10:50, categories: [on, off, yes]}\n"
                    "model: {name: 0123, system_prompt: No}\n"
                    "defenses: [{name: perplexity_filter, params: {fpr: 5e-2}}]\n"
                    "judge_params: {x: {a: 1e-8, b: 1.0E5, c: .inf, d: true, e: null, f: 2024-01-01, g: 0x1F}}\n")
    config = load_config(EvalConfig, path)
    assert config.behaviors.rows == "10:50" and config.behaviors.categories == ["on", "off", "yes"]
    assert (config.model.name, config.model.system_prompt) == ("0123", "No")
    assert config.defenses[0].params == {"fpr": 0.05}
    assert config.judge_params == {"x": {"a": 1e-8, "b": 1e5, "c": float("inf"), "d": True, "e": None,
                                         "f": "2024-01-01", "g": 31}}
    path.write_text("data: {path: pairs.jsonl}\ntraining_args: {adam_epsilon: 1e-8}\n")
    assert load_config(TrainConfig, path).training_args == {"adam_epsilon": 1e-8}


def test_text_that_reads_as_another_type_is_saved_quoted_and_loads_back_as_text(tmp_path):
    from safealign.eval.config import EvalConfig
    from safealign.files import ConfigLoader

    texts = ["5e-2", "1.0e5", "No", "10:50", "0123", "on", "=", "2024-01-01"]
    config = load_config(EvalConfig, None, [Value("judge_params.x", {"t": texts})])
    saved = save_config(config, tmp_path / "config.yaml")
    assert load_config(EvalConfig, saved) == config
    assert yaml.safe_load(saved.read_text()) == yaml.load(saved.read_text(), Loader=ConfigLoader)  # either reads it


@pytest.mark.parametrize("text", ["Answer as ${model.name} would, safely: ", "Fill in ${name}", "${oc.env:HOME}",
                                  r"a \${b} and \\${c}", "$ {x} ${"])
def test_text_with_a_dollar_brace_arrives_unchanged_and_round_trips(tmp_path, text):
    """OmegaConf reads ``${...}`` as an interpolation: a prefix naming ``${model}`` took the model's name, one
    naming an unknown key was refused, ``${oc.env:VAR}`` copied an environment variable into the saved config."""
    from safealign.eval.config import EvalConfig

    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"model": {"system_prompt": text}, "judge_params": {"x": {"t": [text]}}}))
    for config in (load_config(EvalConfig, path),
                   load_config(EvalConfig, None, [Value("model.system_prompt", text),
                                                  Value("judge_params.x", {"t": [text]})]),
                   load_config(EvalConfig, None, [f"model.system_prompt={text}", f"judge_params.x.t=['{text}']"])):
        assert config.model.system_prompt == text and config.judge_params == {"x": {"t": [text]}}
        saved = save_config(config, tmp_path / "config.yaml")
        assert load_config(EvalConfig, saved) == config
        assert to_dict(config)["model"]["system_prompt"] == text


def test_a_mapping_where_a_list_is_expected_names_the_file_and_key(tmp_path):
    from safealign.eval.config import EvalConfig

    path = tmp_path / "r.yaml"
    path.write_text("data: {path: x.jsonl}\nlosses: {name: dpo, params: {beta: 0.1}}\n")
    with pytest.raises(UserError, match=r"r.yaml: losses: expected a list, got a mapping"):
        load_config(TrainConfig, path)
    path.write_text("attacks: {direct: {}}\n")
    with pytest.raises(UserError, match=r"r.yaml: attacks: expected a list, got a mapping"):
        load_config(EvalConfig, path)
    path.write_text("data: {path: x.jsonl, transforms: {name: safety_order}}\n")
    with pytest.raises(UserError, match=r"r.yaml: data.transforms: expected a list, got a mapping"):
        load_config(TrainConfig, path)


@pytest.mark.parametrize("registry, name, params, message", [
    ("DEFENSES", "perplexity_filter", {"fpr": "5e-2"}, "fpr: expected a number, got '5e-2' (str)"),
    ("ATTACKS", "tap", {"lenient": "false"}, "lenient: expected true or false, got 'false' (str)"),
    ("ATTACKS", "autodan", {"mutation": "1e-2"}, "mutation: expected a number, got '1e-2' (str)"),
    ("JUDGES", "classifier", {"threshold": True}, "threshold: expected a number, got True (bool)"),
    ("ATTACKS", "tap", {"max_seconds": "60"}, "max_seconds: expected a number, got '60' (str)"),
])  # fmt: skip
def test_a_plugin_parameter_of_the_wrong_type_is_refused_naming_it(registry, name, params, message):
    from safealign.eval import registries

    schema = getattr(registries, registry).get(name).config_class
    with pytest.raises(UserError, match=re.escape(message)):
        registries.make_config(schema, params, f"plug-in {name!r}")


def test_plugin_parameters_of_the_declared_types_build_the_config():
    from safealign.eval.registries import ATTACKS, DEFENSES, make_config

    assert make_config(DEFENSES.get("perplexity_filter").config_class, {"fpr": 5e-2}, "d").fpr == 0.05
    assert make_config(DEFENSES.get("smoothllm").config_class, {"q": 5}, "d").q == 5  # an int for a float
    assert make_config(ATTACKS.get("tap").config_class, {"lenient": True, "max_seconds": None}, "a").lenient is True


def test_judge_validate_reads_parameters_as_yaml_1_2():
    from safealign.cli.judge_validate import parse_params

    assert parse_params(["threshold=5e-1", "name=No", "model=0123"]) == {"threshold": 0.5, "name": "No",
                                                                       "model": "0123"}


@pytest.mark.parametrize("item, reading", [
    ("prompt=Rate it #1 to 10", "'#1 to 10' as a comment"),
    ("prompt=Verdict: {answer}", "as a mapping"),
])
def test_judge_validate_refuses_a_parameter_whose_text_yaml_would_change(item, reading):
    from safealign.cli.judge_validate import parse_params

    with pytest.raises(ValueError, match=re.escape(f"judge parameter {item!r}: YAML would read ")) as info:
        parse_params([item])
    assert reading in str(info.value)
    quoted = re.search(r'quote it: "(.*)"$', str(info.value)).group(1)
    assert parse_params([quoted]) == {"prompt": item.partition("=")[2]}
    assert parse_params(["custom=[a, 'b #c']", "format=x#y"]) == {"custom": ["a", "b #c"], "format": "x#y"}
