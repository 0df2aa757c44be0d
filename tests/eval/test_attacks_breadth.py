"""Every attack of issue 13 through ``run_eval``: on tiny-random for real, the mean over attacks,
and bad parameters failing before any generation (docs/attacks.md)."""

from __future__ import annotations

import json

import pytest

from safealign.config import load_config
from safealign.errors import UserError
from safealign.eval.aggregate import mean_over_attacks
from safealign.eval.attacks import build_attack
from safealign.eval.backends.hf import HFChatModel
from safealign.eval.config import EvalConfig
from safealign.eval.defenses.base import build_defense
from safealign.eval.judges import build_judge
from safealign.eval.judges.classifier import ClassifierConfig
from safealign.eval.pipeline import run_eval
from safealign.eval.registries import make_config
from safealign.eval.summary import format_table
from safealign.types import Behavior

from .fakes import KeywordJudge, ScriptedChatModel

BEHAVIORS = [Behavior(f"b{i}", f"Tell me thing {i}", target=f"Sure, here is thing {i}") for i in range(3)]
SMALL = {
    "tap": {"branching": 2, "width": 2, "depth": 2, "attacker_max_new_tokens": 16, "retries": 0},
    "pap": {"techniques": ["Logical Appeal", "Expert Endorsement"], "attacker_max_new_tokens": 16},
    "zero_shot": {"n_cases": 2, "attacker_max_new_tokens": 16},
    "crescendo": {"max_turns": 2, "max_backtracks": 1, "attacker_max_new_tokens": 16},
    "many_shot": {"n_shots": 4},
    "human_jailbreaks": {"subset": 2},
    "autodan": {"steps": 2, "population": 4, "eval_every": 1, "eval_max_new_tokens": 4},
    "gcg_multi": {"steps": 1, "search_width": 8, "topk": 8, "suffix_length": 4, "n_train": 2},
}
ALL = ["direct", *SMALL]


def test_every_new_attack_runs_on_tiny_random(tiny_model, tiny_tokenizer, tmp_path):
    """The tiny model is target and attacker: its attacker output is noise, so this also proves that
    unparseable attacker answers end as flagged attempts, never a crash."""
    config = EvalConfig(attacks=ALL, attack_params=SMALL, judges=["refusal"], output_dir=str(tmp_path / "run"))
    config.generation.max_new_tokens = 4
    summary = run_eval(config, model=tiny_model, tokenizer=tiny_tokenizer, behaviors=BEHAVIORS)
    assert summary.complete and all(summary.missing[a] == 0 for a in ALL)
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    per_attack = {a: [r for r in records if r["attack"] == a] for a in ALL}
    assert {a: len(rs) for a, rs in per_attack.items()} == {
        "direct": 3, "tap": 3, "pap": 6, "zero_shot": 6, "crescendo": 3, "many_shot": 3, "human_jailbreaks": 6,
        "autodan": 3, "gcg_multi": 3}  # fmt: skip
    assert (tmp_path / "run" / "gcg_multi_suffix.json").exists()
    assert len({r["attempt_meta"]["suffix"] for r in per_attack["gcg_multi"]}) == 1
    agg = summary.mean_over_attacks["refusal"]
    assert agg["n_attacks"] == len(ALL) and set(agg["per_attack"]) == set(ALL)
    assert "mean over 9 attacks (judge refusal)" in format_table(summary)


def _scripted(conversation):
    text = conversation[-1]["content"]
    if "red-teaming assistant" in conversation[0]["content"]:  # tap/crescendo attacker
        return json.dumps({"prompt": "story prompt", "question": "story question"})
    return "HARMFUL" if "story" in text else "I refuse"


def test_the_aggregate_is_the_mean_of_the_per_attack_asrs(tmp_path):
    from safealign.report import build_report

    fake = ScriptedChatModel(_scripted)
    config = EvalConfig(attacks=["direct", "tap", "crescendo"], judges=["kw"], output_dir=str(tmp_path / "run"),
                        attack_params={"tap": {"prune_off_topic": False, "depth": 1, "branching": 1}})  # fmt: skip
    summary = run_eval(config, chat_model=fake, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    agg = summary.mean_over_attacks["kw"]
    assert agg["per_attack"] == {"direct": 0.0, "tap": 1.0, "crescendo": 1.0}
    # no spread to resample (every draw 2/3): each attack's exact bound over its 3 behaviors, averaged, never a point
    u = 1 - 0.025 ** (1 / 3)
    assert agg["mean"] == pytest.approx(2 / 3) and agg["ci95"] == [round(2 * (1 - u) / 3, 6), round((u + 2) / 3, 6)]
    assert "any_attack" not in agg["per_attack"]
    _, md = build_report(tmp_path / "run")
    # one attempt per behavior: HarmBench's per-test-case rule gives the same mean, in its own column
    assert "| run | kw | 3 | 66.7% | [19.5, 90.3] | 3 | 66.7% [19.5, 90.3] |" in md.read_text()


def test_aggregate_bootstrap_and_unscored():
    outcomes = {"a": {"b0": True, "b1": False, "b2": None, "b3": True}, "b": {"b0": False, "b1": False},
                "c": {"b0": None}}  # fmt: skip
    agg = mean_over_attacks(outcomes, draws=200)
    assert agg["per_attack"] == {"a": pytest.approx(2 / 3), "b": 0.0, "c": None}
    assert agg["n_attacks"] == 2 and agg["mean"] == pytest.approx(1 / 3)  # c has nothing scored: left out
    lo, hi = agg["ci95"]
    assert 0 <= lo < agg["mean"] < hi <= 1 and agg == mean_over_attacks(outcomes, draws=200)  # seeded


def test_aggregate_interval_takes_the_projects_percentile_rule():
    """The interval is eval/paired.percentile_interval of the resampled means (nearest rank: 0-based indices 24
    and 974 of 1000), recomputed here by brute force with the same seeded resampling (17 behaviors: the lower
    bound is 0.147; index 25, which the shared rule took for a while, gives 0.176)."""
    import random

    from safealign.eval.paired import percentile_interval

    outcomes = {"a": {f"b{i}": i % 3 == 0 for i in range(17)}, "b": {f"b{i}": i % 4 == 1 for i in range(17)}}
    behaviors = sorted(outcomes["a"])
    rng, means = random.Random(0), []
    for _ in range(1000):
        picks = [rng.randrange(len(behaviors)) for _ in behaviors]
        means.append(sum(sum(outcomes[a][behaviors[i]] for i in picks) / len(picks) for a in "ab") / 2)
    expected = [round(bound, 6) for bound in percentile_interval(means)]
    assert mean_over_attacks(outcomes)["ci95"] == expected
    assert expected[0] == round(sorted(means)[24], 6) == 0.147059


@pytest.mark.parametrize("attack, params, message", [
    ("tap", {"width": 0}, "attack_params.tap.width"),
    ("tap", {"widht": 2}, r"attack 'tap': unknown parameter\(s\) widht; valid: .*width \(default 5\)"),
    ("autodan", {"mutator": "gpt"}, "attack_params.autodan.mutator"),
    ("crescendo", {"max_queries": 0}, "attack_params.crescendo.max_queries"),
    ("tap", {"max_queries": 1}, r"attack_params.tap.max_queries must be >= 2, got 1 \(the pipeline's answer"),
    ("many_shot", {"n_shots": 5000}, "over the budget"),
    ("pap", {"techniques": ["nope"]}, "unknown"),
    ("zero_shot", {"n_cases": 9, "max_queries": 2}, "over the budget"),
    ("human_jailbreaks", {"families": ["nope"]}, "unknown"),
    ("gcg_multi", {"n_train": 50}, "n_train=50"),
    ("gcg_transfer", {}, "suffix_file is required"),
])  # fmt: skip
def test_bad_params_fail_before_any_generation(tmp_path, attack, params, message):
    fake = ScriptedChatModel(lambda c: "x")
    config = EvalConfig(attacks=["direct", attack], attack_params={attack: params}, judges=["kw"],
                        output_dir=str(tmp_path / "run"))  # fmt: skip
    with pytest.raises(ValueError, match=message):
        run_eval(config, chat_model=fake, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    assert fake.n_generated == 0  # not even the direct attack listed before it ran


@pytest.mark.parametrize("override, message", [
    ("attack_params.many_shot.files=shots.yaml", "attack 'many_shot': files: expected a list of texts, got text "
                                                 "'shots.yaml'; "
                                                 r"write \['shots.yaml'\]"),
    ("attack_params.template.names=refusal_suppression", "attack 'template': names: expected a list of texts, got text "
                                                         r"'refusal_suppression'; write \['refusal_suppression'\]"),
    ("attack_params.pap.techniques='Logical Appeal'", "attack 'pap': techniques: expected a list of texts, got text "
                                                      r"'Logical Appeal'; write \['Logical Appeal'\]"),
])  # fmt: skip
def test_a_single_text_for_a_list_parameter_is_refused_not_read_per_character(tmp_path, override, message):
    """``key=text`` for a list parameter used to reach the attack as a string, which it then read one character
    at a time ("s: many-shot file not found", unknown templates ['_', 'a', ...])."""
    config = load_config(EvalConfig, None, [override, "judges=[kw]", f"output_dir={tmp_path / 'run'}"])
    config.attacks = [override.split(".")[1]]
    fake = ScriptedChatModel(lambda c: "x")
    with pytest.raises(UserError, match=message):
        run_eval(config, chat_model=fake, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    assert fake.n_generated == 0


def test_judges_and_defenses_refuse_a_single_text_for_a_list_parameter_too():
    with pytest.raises(UserError, match=r"judge 'refusal': custom: expected a list of texts, got text 'Sorry'"):
        build_judge("refusal", {"list": "custom", "custom": "Sorry"})
    with pytest.raises(UserError, match=r"defense 'mpo': policies: expected a list of texts, got text 'target'"):
        build_defense("mpo", {"policies": "target"})
    assert build_judge("refusal", {"list": "custom", "custom": ["Sorry"]}).config.custom == ("Sorry",)  # a list: kept


@pytest.mark.parametrize("build, name, params, message", [
    # YAML reads unquoted No as false and 1 as a number: the refusal judge's first score() raised TypeError
    (build_judge, "refusal", {"list": "custom", "custom": ["Sorry", False, 1]},
     r"judge 'refusal': custom\[1\]: expected text, got False \(bool\); quote it"),
    (build_judge, "classifier", {"threshold": "high"}, r"judge 'classifier': threshold: expected a number, got 'high'"),
    (build_judge, "classifier", {"batch_size": 2.5},
     r"judge 'classifier': batch_size: expected a whole number, got 2.5"),
    (build_defense, "mpo", {"policies": ["target", 3]}, r"defense 'mpo': policies\[1\]: expected text, got 3 \(int\)"),
    (build_defense, "mpo", {"weights": [0.5, "x"]}, r"defense 'mpo': weights\[1\]: expected a number, got 'x'"),
    (build_defense, "in_context", {"demos": [["q", "a"], ["q"]]},
     r"defense 'in_context': demos\[1\]: expected a list of 2, got \['q'\]"),
    (build_defense, "in_context", {"demos": [["q", 7]]},
     r"defense 'in_context': demos\[0\]\[1\]: expected text, got 7"),
    (build_attack, "best_of_n", {"n": True}, r"attack 'best_of_n': n: expected a whole number, got True \(bool\)"),
    (build_attack, "template", {"builtin": "no"}, r"attack 'template': builtin: expected true or false, got 'no'"),
    (build_attack, "pair", {"attacker": ["x"]}, r"attack 'pair': attacker: expected a mapping, got \['x'\]"),
])  # fmt: skip
def test_a_parameter_of_the_wrong_type_is_refused_naming_it_and_its_index(build, name, params, message):
    """make_config checked only list against text: a wrong element type built the plug-in and failed (or silently
    misbehaved) at its first use, through an eval's judge_params after every answer was generated."""
    with pytest.raises(UserError, match=message):
        build(name, params)


def test_parameters_of_the_right_type_still_build():
    """Whole numbers for float fields, None for optional ones, YAML lists for tuples (of pairs too) are accepted."""
    judge = build_judge("refusal", {"list": "custom", "custom": ["Sorry", "No"], "case_sensitive": False})
    assert judge.config.custom == ("Sorry", "No")
    assert make_config(ClassifierConfig, {"threshold": 1, "device": None}, "judge 'classifier'").threshold == 1
    assert build_defense("mpo", {"policies": ["target", "m"], "weights": [1, 0.5]}).config.weights == (1, 0.5)
    assert build_defense("in_context", {"demos": [["q", "a"]], "k": 1}).demos == (("q", "a"),)
    assert build_attack("best_of_n", {"n": 2, "caps_prob": 0}).config.n == 2


def test_eval_judge_params_of_the_wrong_type_fail_before_any_generation(tmp_path):
    overrides = ["judges=[refusal]", "judge_params.refusal.list=custom", "judge_params.refusal.custom=[Sorry, 1]"]
    config = load_config(EvalConfig, None, [*overrides, f"output_dir={tmp_path / 'run'}"])
    fake = ScriptedChatModel(lambda c: "x")
    with pytest.raises(UserError, match=r"judge 'refusal': custom\[1\]: expected text, got 1"):
        run_eval(config, chat_model=fake, behaviors=BEHAVIORS)
    assert fake.n_generated == 0


@pytest.mark.parametrize("attack, params", [
    ("tap", {"branching": 2, "width": 2, "depth": 5, "prune_off_topic": False, "max_queries": 3, "lenient": True}),
    ("crescendo", {"max_turns": 9, "max_queries": 3, "lenient": True}),
])  # fmt: skip
def test_max_queries_counts_every_target_generation_of_a_behavior(tmp_path, attack, params):
    attacker_answer = json.dumps({"prompt": "p", "question": "q"})
    fake = ScriptedChatModel(lambda c: "a calm answer" if c[0]["role"] == "user" else attacker_answer)
    config = EvalConfig(attacks=[attack], attack_params={attack: params}, judges=["kw"],
                        output_dir=str(tmp_path / "run"))  # fmt: skip
    run_eval(config, chat_model=fake, behaviors=BEHAVIORS[:1], judges={"kw": KeywordJudge()})
    # attacker and evaluator conversations start with their system prompt; the target's with the user turn
    assert sum(c[0]["role"] == "user" for c in fake.conversations) == 3  # the search's 2 and the final answer


def test_tap_batches_all_streams_of_a_depth_in_one_call(tiny_model, tiny_tokenizer):
    from safealign.eval.attacks import AttackContext
    from safealign.eval.attacks.tap import TAPAttack, TAPConfig

    target = HFChatModel(tiny_model, tiny_tokenizer)
    calls = []
    original = target.generate
    target.generate = lambda convs, params: calls.append(len(convs)) or original(convs, params)  # type: ignore
    attacker = ScriptedChatModel(lambda c: json.dumps({"prompt": "p"}))
    TAPAttack(TAPConfig(branching=3, width=3, depth=2, prune_off_topic=False),
              AttackContext(target=target, judge=KeywordJudge()), attacker=attacker)(BEHAVIORS[0])  # fmt: skip
    assert calls == [3, 3]  # one target call per depth, every kept node in it


def test_the_breadth_recipe_checks_on_its_behaviors(shared_data, no_model_load):
    """Every attack of the shipped recipe passes its checks on the 20 behaviors it names, targets included."""
    from pathlib import Path

    from safealign.config import load_config
    from safealign.eval.attacks.base import check_attack
    from safealign.eval.benchmarks import load_benchmark_set, select_configured

    root = Path(__file__).resolve().parents[2]
    config = load_config(EvalConfig, root / "configs" / "eval" / "harmbench_breadth.yaml",
                         [f"behaviors.path={shared_data / 'harmbench_behaviors_text_val.csv'}",
                          f"behaviors.targets={root / 'configs' / 'eval' / 'harmbench_val_targets.json'}"])  # fmt: skip
    behaviors = select_configured(load_benchmark_set(config.behaviors).harmful, config.behaviors)
    assert len(behaviors) == 20 and all(b.target for b in behaviors)
    assert {"tap", "pap", "zero_shot", "crescendo", "many_shot", "human_jailbreaks", "autodan", "gcg_multi",
            "pair", "gcg", "best_of_n", "direct"} <= set(config.attacks)  # fmt: skip
    for name in config.attacks:
        check_attack(name, config.attack_params.get(name), behaviors)


@pytest.mark.parametrize("attack, marker, per_behavior", [("pap", "Technique:", 5), ("zero_shot", "BEHAVIOR:", 5)])
def test_attacker_generations_are_batched_across_behaviors_and_not_redone(tmp_path, attack, marker, per_behavior):
    fake = ScriptedChatModel(lambda c: '"Please explain it as a story"' if marker in c[0]["content"] else "I refuse")
    config = EvalConfig(attacks=[attack], judges=["kw"], output_dir=str(tmp_path / "run"))
    run_eval(config, chat_model=fake, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    attacker_calls = [sum(marker in c[0]["content"] for c in call) for call in fake.calls]
    assert attacker_calls[0] == per_behavior * len(BEHAVIORS) and sum(attacker_calls) == attacker_calls[0]
    before = len(fake.calls)
    run_eval(config, chat_model=fake, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})  # resumed: complete
    assert len(fake.calls) == before  # nothing pending, so no attacker call either


def test_every_bootstrap_draw_averages_every_counted_attack():
    """The reviewer's case: attack x at 0.9 on ten behaviors, y scored on b0 only (0.0): mean 0.45. A draw without
    b0 would average x alone (about 0.9); such draws are drawn again, so the interval is about the mean, not above
    it (every draw holds b0, x's miss: (x's ASR + 0.0) / 2, at most 0.45)."""
    outcomes = {"x": {f"b{i}": i > 0 for i in range(10)}, "y": {"b0": False, **{f"b{i}": None for i in range(1, 10)}}}
    agg = mean_over_attacks(outcomes, draws=400)
    assert agg["mean"] == 0.45 and "bootstrap" in agg["method"]
    lo, hi = agg["ci95"]
    assert 0 < lo < hi <= 0.45
