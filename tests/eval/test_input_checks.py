"""Everything an eval can know is wrong without a model fails before the model loads and before any
attack generates: missing target strings, bad template files (each a UserError naming the file)."""

from __future__ import annotations

import json

import pytest

from safealign.errors import UserError
from safealign.eval.config import EvalConfig
from safealign.eval.pipeline import run_eval
from safealign.types import Behavior

from .fakes import KeywordJudge, ScriptedChatModel

NO_TARGETS = [Behavior(f"b{i}", f"behavior {i}", source="b.jsonl", row=i) for i in range(3)]


@pytest.mark.parametrize("attack", ["prefill", "gcg"])
def test_attack_without_targets_fails_before_any_generation(tmp_path, attack):
    fake = ScriptedChatModel(lambda c: "I refuse")
    config = EvalConfig(attacks=["direct", "template", attack], judges=["kw"], output_dir=str(tmp_path / "run"))
    with pytest.raises(UserError, match=rf"{attack} attack: 3 of 3 behaviors have no target string.*'b0'.*row 0"):
        run_eval(config, chat_model=fake, behaviors=NO_TARGETS, judges={"kw": KeywordJudge()})
    assert fake.calls == []  # the direct and template attacks did not run first


BAD_TEMPLATE_FILES = {
    "bad.jsonl": ('{"name": "a", "family": "f", "template": "{behavior}"}\n{"name": \n', r"line 2: invalid JSON"),
    "nonstring.jsonl": ('{"name": "a", "family": "f", "template": 5}\n', r"#0: field\(s\) template must be text"),
    "latin1.yaml": ("- name: caf\xe9\n".encode("latin-1"), r"line 1: not UTF-8 text"),
    "syntax.yaml": ("- name: a\n  family: [unclosed\n", r"not valid YAML"),
    "tag.yaml": ("- !!python/object/apply:os.system [echo hi]\n", r"not valid YAML.*python/object"),
    "list-template.yaml": ("- {name: a, family: f, template: [x]}\n", r"field\(s\) template must be text, got list"),
    "list-transform.yaml": ("- {name: a, family: f, template: '{behavior}', transform: [x]}\n", "unknown transform"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_TEMPLATE_FILES))
def test_bad_template_file_is_a_named_error_before_the_model_loads(tmp_path, no_model_load, name):
    content, message = BAD_TEMPLATE_FILES[name]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    behaviors = tmp_path / "b.jsonl"
    behaviors.write_text(json.dumps({"behavior": "do x"}) + "\n")
    config = EvalConfig(attacks=["template"], output_dir=str(tmp_path / "run"),
                        attack_params={"template": {"files": [str(path)]}})  # fmt: skip
    config.behaviors.path = str(behaviors)
    config.model.name = "tiny-random"
    with pytest.raises(UserError, match=message) as error:
        run_eval(config)
    assert str(path) in str(error.value)


def test_template_file_that_is_a_directory(tmp_path, no_model_load):
    from safealign.eval.attacks.base import check_attack

    with pytest.raises(UserError, match=f"{tmp_path}: is a directory"):
        check_attack("template", {"files": [str(tmp_path)]}, NO_TARGETS)


@pytest.mark.parametrize(("attack", "params", "key"), [
    ("gcg", {"steps": 0}, "attack_params.gcg.steps"),
    ("gcg", {"search_width": 0}, "attack_params.gcg.search_width"),
    ("gcg", {"n_replace": 30, "suffix_length": 20}, "attack_params.gcg.n_replace"),
    ("pair", {"n_streams": 0}, "attack_params.pair.n_streams"),
    ("pair", {"attacker_temperature": 0.0}, "attack_params.pair.attacker_temperature"),
])  # fmt: skip
def test_attack_parameter_ranges_fail_before_the_model_loads(tmp_path, no_model_load, attack, params, key):
    behaviors = [Behavior("b0", "do x", target="Sure", source="b.jsonl", row=0)]
    config = EvalConfig(attacks=[attack], output_dir=str(tmp_path / "run"), attack_params={attack: params})
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        run_eval(config, behaviors=behaviors)
