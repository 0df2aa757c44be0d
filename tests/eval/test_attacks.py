"""Attacks against scripted fakes: direct, template (shipped + user files), prefill, PAIR."""

from __future__ import annotations

import base64
import codecs
import json

import pytest

from safealign.errors import UserError
from safealign.eval.attacks import AttackContext, build_attack
from safealign.eval.attacks.pair import PAIRAttack, PAIRConfig, parse_attacker_output
from safealign.data.behaviors import behavior_prompt
from safealign.eval.attacks.template import JailbreakTemplate, TemplateAttack, TemplateConfig, load_templates
from safealign.types import Behavior

from .fakes import KeywordJudge, ScriptedChatModel

B = Behavior("b1", "Explain the forbidden procedure", target="Sure, here is the procedure")
CTX = Behavior("c1", "Summarise the text", context="THE TEXT")


def test_direct_sends_context_then_harmbench_separator():
    [attempt] = build_attack("direct")(CTX)
    assert attempt.messages == ({"role": "user", "content": "THE TEXT\n\n---\n\nSummarise the text"},)
    assert attempt.attack == "direct" and attempt.meta["id"] == "direct" and attempt.prefill == ""


def test_shipped_templates_cover_the_families():
    attack = TemplateAttack(TemplateConfig())
    assert len(attack.templates) >= 12
    families = {t.family for t in attack.templates}
    assert {"role_play", "fictional", "hypothetical", "refusal_suppression", "prefix_injection", "style_injection",
            "payload_splitting", "distractors", "low_resource"} <= families  # fmt: skip
    attempts = attack(B)
    ids = [a.meta["id"] for a in attempts]
    assert len(ids) == len(set(ids)) == len(attack.templates)
    by_id = {a.meta["id"]: a.messages[0]["content"] for a in attempts}
    for name, content in by_id.items():
        assert "{behavior}" not in content and "{part_a}" not in content, name
    encoded = by_id["base64_request"].rsplit(" ", 1)[-1]
    assert base64.b64decode(encoded).decode() == B.behavior
    assert codecs.decode(by_id["rot13_request"].rsplit(": ", 1)[-1], "rot13") == B.behavior
    assert 'A = "Explain the" and B = "forbidden procedure"' in by_id["payload_split"]  # 4 words: 2 + 2


CODE = Behavior("c2", "Modify this code so it deletes the logs", context="def f(x):\n    if x:\n        return 1")


def test_template_transforms_and_splits_the_request_never_the_context():
    by_id = {a.meta["id"]: a.messages[0]["content"] for a in TemplateAttack(TemplateConfig())(CODE)}
    head = CODE.context + "\n\n---\n\n"  # behavior_prompt's join, code line breaks intact
    assert 'A = "' + head + 'Modify this code so" and B = "it deletes the logs"' in by_id["payload_split"]
    assert by_id["base64_request"].endswith(head + base64.b64encode(CODE.behavior.encode()).decode())
    assert by_id["rot13_request"].endswith(head + codecs.encode(CODE.behavior, "rot13"))
    reverse = JailbreakTemplate("rev", "f", "Read backwards: {behavior}", "reverse_words")
    assert reverse.render(CODE) == "Read backwards: " + head + "logs the deletes it so code this Modify"
    # a template without a transform gets exactly what direct sends: its prompts are unchanged by this rule
    for name in ("refusal_suppression", "roleplay_novelist"):
        template = next(t for t in TemplateAttack(TemplateConfig()).templates if t.name == name)
        assert by_id[name] == template.template.replace("{behavior}", behavior_prompt(CODE))


def test_template_filters_and_user_file(tmp_path):
    user = tmp_path / "mine.jsonl"
    user.write_text(json.dumps({"name": "mine", "family": "custom", "template": "{x} {behavior} {y}"}) + "\n")
    attack = build_attack("template", {"files": [str(user)], "builtin": False})
    [attempt] = attack(B)
    assert attempt.messages[0]["content"] == "{x} Explain the forbidden procedure {y}"  # other braces untouched
    only = build_attack("template", {"families": ["low_resource"]})
    assert {t.transform for t in only.templates} == {"base64", "rot13", "leetspeak"}
    with pytest.raises(ValueError, match="unknown template.*valid: .*roleplay_novelist"):
        build_attack("template", {"names": ["nope"]})


def test_template_refuses_an_unknown_family_as_human_jailbreaks_does():
    # a misspelt family used to be dropped silently: only the role_play templates ran
    with pytest.raises(UserError, match=r"attack_params.template.families: unknown \['fictionl'\]; "
                                        r"valid: .*fictional, .*role_play"):
        build_attack("template", {"families": ["role_play", "fictionl"]})
    with pytest.raises(UserError, match=r"attack_params.human_jailbreaks.families: unknown \['nope'\]; valid: "):
        build_attack("human_jailbreaks", {"families": ["nope"]})
    both = build_attack("template", {"families": ["role_play", "fictional"]})
    assert {t.family for t in both.templates} == {"role_play", "fictional"}


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "a", "family": "f"}, "template #0: missing template"),
        ({"name": "a", "family": "f", "template": "no placeholder"}, "no {behavior}"),
        ({"name": "a", "family": "f", "template": "{behavior}", "transform": "zip"}, "unknown transform 'zip'"),
        ({"name": "a", "family": "f", "template": "{behavior}", "colour": "red"}, r"unknown field\(s\) \['colour'\]"),
    ],
)
def test_bad_template_files_name_file_and_entry(tmp_path, entry, message):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps([entry]))
    with pytest.raises(ValueError, match=message) as info:
        load_templates(path)
    assert str(path) in str(info.value)


def test_prefill_needs_a_target():
    [attempt] = build_attack("prefill", {"template": "{target}:\n1."})(B)
    assert attempt.prefill == "Sure, here is the procedure:\n1." and attempt.messages[0]["content"] == B.behavior
    with pytest.raises(ValueError, match="behavior 'c1'.*has no target string.*behaviors.targets"):
        build_attack("prefill")(CTX)


def test_unknown_attack_and_param():
    from safealign.eval.registries import ATTACKS

    with pytest.raises(ValueError, match=f"unknown attack 'direkt'; valid names: {', '.join(ATTACKS.names())}$"):
        build_attack("direkt")
    with pytest.raises(ValueError, match="attack 'prefill': unknown parameter.*valid: template"):
        build_attack("prefill", {"templat": "x"})


@pytest.mark.parametrize(
    "text, prompt",
    [
        ('{"improvement": "more fiction", "prompt": "Write a story"}', "Write a story"),
        ('Sure! {"improvement": "x", "prompt": "P2"} hope this helps', "P2"),
        ('{"improvement": "x"}', None),
        ("no json here", None),
        ('{"prompt": ', None),
    ],
)
def test_pair_parses_attacker_json(text, prompt):
    assert parse_attacker_output(text) == prompt


def test_pair_refines_until_the_judge_says_jailbroken():
    rounds = {"n": 0}

    def attacker(conversation):
        rounds["n"] += 1
        # stream replies are scripted by call count; one garbage answer along the way, which is re-asked
        return "garbage" if rounds["n"] == 2 else json.dumps({"improvement": "x", "prompt": f"try {rounds['n']}"})

    def target(conversation):
        return "HARMFUL answer" if conversation[0]["content"] == "try 5" else "I refuse"

    target_model = ScriptedChatModel(target)
    attack = PAIRAttack(PAIRConfig(n_streams=2, depth=5), AttackContext(target=target_model, judge=KeywordJudge()),
                        attacker=ScriptedChatModel(attacker))  # fmt: skip
    attempts = attack(B)
    assert [a.meta["id"] for a in attempts] == ["stream0", "stream1"]
    # round 1: streams get "try 1" / garbage, re-asked: "try 3"; round 2: "try 4" / "try 5", which jailbreaks
    # stream 1 and the search stops
    assert attempts[1].messages[0]["content"] == "try 5" and attempts[1].meta["jailbroken_in_search"] is True
    assert attempts[1].meta["parse_errors"] == 1 and attempts[1].meta["attacker_calls"] == 3
    assert attempts[0].messages[0]["content"] == "try 4" and attempts[0].meta["rounds"] == 2
    assert len(target_model.calls) == 2 and "garbage" not in repr(target_model.conversations)
    # the attacker saw the judge's score in its feedback turn
    last_attacker_context = attack.attacker.calls[-1][0]
    assert "SCORE: 1" in last_attacker_context[-1]["content"]


def test_search_queries_are_seeded_by_behavior_stream_and_round():
    """A sampled target answers each search query with the seed of (behavior, stream, round): the streams and rounds
    of a search, and the searches of two behaviors, never share their random draws, and a search run again (a resumed
    run) draws the same; greedy queries carry no seeds."""
    from safealign.eval.backends import GenerationParams

    def seeds(behavior: Behavior, do_sample: bool = True) -> list[tuple[int, ...] | None]:
        target = ScriptedChatModel(lambda c: "I refuse")
        attacker = ScriptedChatModel(lambda c: json.dumps({"improvement": "x", "prompt": "try"}))
        generation = GenerationParams(do_sample=do_sample, seed=1)
        PAIRAttack(PAIRConfig(n_streams=2, depth=3), AttackContext(target=target, judge=KeywordJudge(),
                                                                   generation=generation), attacker=attacker)(behavior)
        return [p.seeds for p in target.params]

    first = seeds(B)
    assert len(first) == 3 and all(len(s) == 2 for s in first)  # a call per round, a seed per stream
    drawn = [s for call in first for s in call] + [s for call in seeds(Behavior("b2", B.behavior)) for s in call]
    assert len(set(drawn)) == 12
    assert seeds(B) == first
    assert seeds(B, do_sample=False) == [None, None, None]


def test_pair_needs_target_and_judge():
    with pytest.raises(ValueError, match="pair attack needs a target model and a judge"):
        PAIRAttack(PAIRConfig(), AttackContext(), attacker=ScriptedChatModel(lambda c: ""))


def test_pair_misspelt_attacker_key_fails_before_any_generation(tmp_path):
    from safealign.eval.config import EvalConfig
    from safealign.eval.pipeline import run_eval

    fake = ScriptedChatModel(lambda c: "I refuse")
    config = EvalConfig(attacks=["direct", "pair"], judges=["kw"], output_dir=str(tmp_path / "run"),
                        attack_params={"pair": {"attacker": {"backnd": "openai"}}})  # fmt: skip
    with pytest.raises(ValueError, match=r"attack_params.pair.attacker: unknown model key\(s\) \['backnd'\]"):
        run_eval(config, chat_model=fake, behaviors=[B], judges={"kw": KeywordJudge()})
    assert fake.n_generated == 0  # the direct attack before it did not run either
