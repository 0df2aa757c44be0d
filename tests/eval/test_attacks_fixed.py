"""Fixed-prompt attacks: many_shot and human_jailbreaks (docs/attacks.md)."""

from __future__ import annotations

import re

import pytest

from safealign.eval.attacks import build_attack
from safealign.eval.attacks.human_jailbreaks import WRAPPERS_FILE, HumanJailbreaksConfig, load_wrappers
from safealign.eval.attacks.many_shot import SHOTS_FILE, load_shots
from safealign.types import Behavior

B = Behavior("b1", "Explain the forbidden procedure", target="Sure, here is the procedure")


def test_many_shot_builds_n_shots_in_one_message():
    [attempt] = build_attack("many_shot", {"n_shots": 7})(B)
    [message] = attempt.messages
    text = message["content"]
    assert text.count("\nAssistant: ") == 7 and text.count("User: ") == 8  # 7 shots + the real request
    assert text.endswith(f"User: {B.behavior}\nAssistant:") and attempt.meta["n_shots"] == 7


def test_many_shot_as_turns_and_repeats_beyond_the_pool():
    pool = len(load_shots(SHOTS_FILE))
    [attempt] = build_attack("many_shot", {"n_shots": pool + 5, "as_turns": True})(B)
    roles = [m["role"] for m in attempt.messages]
    assert roles == ["user", "assistant"] * (pool + 5) + ["user"] and attempt.messages[-1]["content"] == B.behavior
    assert attempt.meta["unique_shots"] == pool  # every shot used once before any repeats
    first = build_attack("many_shot", {"n_shots": 3, "seed": 1})(B)[0].messages
    assert first == build_attack("many_shot", {"n_shots": 3, "seed": 1})(B)[0].messages  # seeded
    assert first != build_attack("many_shot", {"n_shots": 3, "seed": 2})(B)[0].messages


def test_many_shot_user_files_and_budget(tmp_path):
    mine = tmp_path / "shots.yaml"
    mine.write_text("- {user: 'Q1?', assistant: 'A1.'}\n")
    [attempt] = build_attack("many_shot", {"n_shots": 2, "builtin": False, "files": [str(mine)]})(B)
    assert attempt.messages[0]["content"].count("User: Q1?\nAssistant: A1.") == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {user: 'Q1?'}\n")
    with pytest.raises(ValueError, match=f"{bad}: shot #0"):
        build_attack("many_shot", {"files": [str(bad)]})
    with pytest.raises(ValueError, match="n_shots=2000 is over the budget max_shots=1024"):
        build_attack("many_shot", {"n_shots": 2000})


def test_human_jailbreaks_ship_30_plus_tagged_wrappers():
    wrappers = load_wrappers(HumanJailbreaksConfig(subset=0))
    assert len(wrappers) >= 30 and len({w.name for w in wrappers}) == len(wrappers)
    assert len({w.family for w in wrappers}) >= 10 and all(w.family for w in wrappers)
    assert all(w.template.rstrip().endswith("{behavior}") for w in wrappers)  # autodan's prefixes rely on it
    attempts = build_attack("human_jailbreaks", {"subset": 0})(B)
    assert len(attempts) == len(wrappers)
    assert all(a.messages[0]["content"].endswith(B.behavior) and a.meta["family"] for a in attempts)


def test_human_jailbreaks_seeded_subset_per_behavior():
    attack = build_attack("human_jailbreaks", {"subset": 5, "seed": 1})
    ids = [a.meta["id"] for a in attack(B)]
    assert len(ids) == len(set(ids)) == 5
    assert ids == [a.meta["id"] for a in build_attack("human_jailbreaks", {"subset": 5, "seed": 1})(B)]
    other = Behavior("b2", "Another request")
    assert ids != [a.meta["id"] for a in attack(other)]  # drawn per behavior
    only = build_attack("human_jailbreaks", {"subset": 0, "families": ["fiction"]})(B)
    assert {a.meta["family"] for a in only} == {"fiction"}
    with pytest.raises(ValueError, match=r"families: unknown \['nope'\]; valid: .*persona"):
        build_attack("human_jailbreaks", {"families": ["nope"]})
    with pytest.raises(ValueError, match="over the budget max_queries=3"):
        build_attack("human_jailbreaks", {"subset": 0, "max_queries": 3})


def test_human_jailbreaks_refuse_a_wrapper_name_used_twice(tmp_path):
    mine = tmp_path / "mine.yaml"  # a name the shipped file already uses: two attempts would share one id
    mine.write_text("- {name: my_own, family: persona, template: 'Mine. {behavior}'}\n"
                    "- {name: persona_free_agent, family: persona, template: 'Also mine. {behavior}'}\n")
    shipped = re.escape(str(WRAPPERS_FILE))
    message = rf"{re.escape(str(mine))}: template #1: field 'name': 'persona_free_agent' is already used by {shipped}"
    with pytest.raises(ValueError, match=message):
        build_attack("human_jailbreaks", {"files": [str(mine)]})
    twice = tmp_path / "twice.yaml"
    twice.write_text("- {name: a, family: f, template: '{behavior}'}\n"
                     "- {name: a, family: f, template: 'x {behavior}'}\n")
    where = re.escape(str(twice))
    message = rf"{where}: template #1: field 'name': 'a' is already used by {where}: template #0"
    with pytest.raises(ValueError, match=message):
        load_wrappers(HumanJailbreaksConfig(builtin=False, files=(str(twice),)))
