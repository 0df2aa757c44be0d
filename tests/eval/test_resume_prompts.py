"""A resumed evaluation checks that its recorded prompts are the ones the current code builds
(safealign/eval/resume_check.py): records of a run begun before a change in how prompts are built (the
context separator, 2026-12-07) would otherwise be mixed with new ones under the same run."""

from __future__ import annotations

import json

import pytest

from safealign.errors import UserError
from safealign.eval.config import EvalConfig
from safealign.eval.pipeline import run_eval
from safealign.eval.registries import ATTACKS
from safealign.types import Behavior

from .fakes import KeywordJudge, ScriptedChatModel

BEHAVIORS = [
    Behavior("plain", "behavior 0", target="Sure, here is 0"),
    Behavior("ctx", "behavior 1", context="some code\nline two", target="Sure, here is 1"),
    Behavior("plain2", "behavior 2", target="Sure, here is 2"),
]
CHEAP = ("direct", "prefill", "template", "human_jailbreaks", "many_shot", "best_of_n")
PARAMS = {"template": {"names": ["prefix_injection", "style_bullet_only"]}, "human_jailbreaks": {"subset": 2},
          "many_shot": {"n_shots": 3}, "best_of_n": {"n": 2}}  # fmt: skip


def _config(tmp_path, attacks=CHEAP, **extra) -> EvalConfig:
    config = EvalConfig(attacks=list(attacks), judges=["kw"], output_dir=str(tmp_path / "run"),
                        attack_params={k: v for k, v in PARAMS.items() if k in attacks}, **extra)  # fmt: skip
    config.generation.batch_size = 2
    return config


def _run(config, fake, **kwargs):
    return run_eval(config, chat_model=fake, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()}, **kwargs)


def _records_path(tmp_path):
    return tmp_path / "run" / "records.jsonl"


def _rows(tmp_path):
    return [json.loads(line) for line in _records_path(tmp_path).read_text().splitlines()]


def _write(tmp_path, rows):
    _records_path(tmp_path).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_deterministic_attacks_are_the_ones_whose_attempts_are_rebuilt():
    rebuilt = {name for name in ATTACKS.names() if ATTACKS.get(name).deterministic}
    assert rebuilt == {*CHEAP, "gcg_transfer"}  # no search, no sampling model, no attacker model


def test_a_run_recorded_with_the_old_context_join_is_refused_on_resume(tmp_path):
    config = _config(tmp_path, attacks=("direct", "template"))
    with pytest.raises(KeyboardInterrupt):  # interrupted: the template attack's last batch is missing
        _run(config, ScriptedChatModel(lambda c: "I refuse", interrupt_after=4))
    rows = _rows(tmp_path)
    assert any(r["behavior_id"] == "ctx" and r["attack"] == "direct" for r in rows)
    for row in rows:  # as the code before 2026-12-07 built them: context and request joined by a blank line
        for message in row["messages"]:
            message["content"] = message["content"].replace("\n\n---\n\n", "\n\n")
    _write(tmp_path, rows)
    before = _records_path(tmp_path).read_text()
    resumed = ScriptedChatModel(lambda c: "I refuse")
    with pytest.raises(UserError) as refused:
        _run(config, resumed, overwrite_flag="--fresh")
    message = str(refused.value)
    assert str(_records_path(tmp_path)) in message
    assert "behavior 'ctx', attack 'direct', attempt 'direct'" in message
    assert "'some code\\nline two\\n\\nbehavior 1'" in message  # the recorded text about the first difference
    assert "'some code\\nline two\\n\\n---\\n\\nbehavior 1'" in message  # and what the code builds now
    assert "built differently" in message and "2026-12-07" in message
    assert "another output directory" in message and "--fresh" in message
    assert resumed.n_generated == 0 and _records_path(tmp_path).read_text() == before


@pytest.mark.parametrize("attack, field, value, match", [
    ("prefill", "prefill", "Sure, here is something else",  # a changed prefill
     r"behavior 'plain', attack 'prefill', attempt 'prefill': .*prefill"),
    ("template", "attempt_id", "a_template_since_renamed",  # a recorded attempt the code no longer builds
     r"attempt 'a_template_since_renamed': this code builds no attempt of that id "
     r"\(it builds 'prefix_injection', 'style_bullet_only'\)"),
])
def test_a_recorded_attempt_built_otherwise_is_refused(tmp_path, attack, field, value, match):
    config = _config(tmp_path, attacks=(attack,))
    _run(config, ScriptedChatModel(lambda c: "I refuse"))
    rows = _rows(tmp_path)
    rows[0][field] = value
    _write(tmp_path, rows)
    with pytest.raises(UserError, match=match):
        _run(config, ScriptedChatModel(lambda c: "I refuse"))


def test_an_interrupted_run_of_every_deterministic_attack_resumes(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _run(config, ScriptedChatModel(lambda c: "I refuse", interrupt_after=5))
    partial = len(_rows(tmp_path))
    resumed = ScriptedChatModel(lambda c: "I refuse")
    summary = _run(config, resumed, overwrite_flag="--fresh")
    rows = _rows(tmp_path)
    assert resumed.n_generated == len(rows) - partial > 0 and summary.complete is True
    assert len({(r["behavior_id"], r["attack"], r["attempt_id"]) for r in rows}) == len(rows)


def test_a_search_attacks_records_are_not_checked(tmp_path):
    class Pair:  # the target is also PAIR's attacker (empty attacker mapping)
        def __call__(self, conversation):
            if conversation[0]["role"] == "system":
                return json.dumps({"prompt": "a drawn prompt"})
            return "I refuse"

    config = _config(tmp_path, attacks=("pair",))
    config.attack_params = {"pair": {"n_streams": 1, "depth": 1, "lenient": True}}
    _run(config, ScriptedChatModel(Pair()))
    rows = _rows(tmp_path)
    for row in rows:  # a search's prompt is drawn, never rebuilt: another one recorded is no mismatch
        row["messages"][-1]["content"] = "a prompt another search drew"
    _write(tmp_path, rows)
    resumed = ScriptedChatModel(Pair())
    assert _run(config, resumed).complete is True
    assert resumed.n_generated == 0  # neither searched again nor answered again
