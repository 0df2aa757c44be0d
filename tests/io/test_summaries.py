"""Summaries of the wrong shape are refused where they are read, naming the file and the field; what the
writers write still reads back; the console shows no interval where none was recorded."""

from __future__ import annotations

import json

import pytest

from safealign.errors import UserError
from safealign.eval.aggregate import format_aggregate, mean_over_attacks
from safealign.eval.summary import format_table, summarize
from safealign.io.records import AsrStats, AttemptRecord
from safealign.io.summaries import (
    Comparison, DemoSummary, EvalSummary, MTBenchSummary, OverRefusalSummary, PairedDifference, RateStats,
    RetentionSummary, ScoreStats,
)
from safealign.types import Behavior

STATS = {"asr": 0.5, "ci95": [0.1, 0.9], "n": 4}
BASE = {"attacks": {"direct": {"refusal": STATS}}}
PAIRED = {"diff": -0.1, "ci95": [-0.3, 0.1], "per_seed": {"0": -0.1}, "rate_a": 0.2, "rate_b": 0.3,
          "n_prompts": 10, "seeds": 1, "only_a": 1, "only_b": 2}  # fmt: skip
FIT = {"fit_range": [1, 4], "forecast": {"0.5": {"n": "x", "extrapolated": False}}}


@pytest.mark.parametrize(("block", "field"), [
    ({"attacks": {"direct": ["x"]}}, "attacks.direct"),
    ({"attacks": None}, "attacks"),
    ({"by_category": {"direct": "x"}}, "by_category.direct"),
    ({"by_attempt": {"direct": {"refusal": {"0": 3}}}}, "by_attempt.direct.refusal.0"),
    ({"judge_agreement": {"direct": {"a|b": {"n": 3}}}}, "judge_agreement.direct.a|b"),
    ({"judge_agreement": {"direct": {"a|b": {"n": 3, "a_only": 0, "b_only": 1, "agreement": {"value": "hi"}}}}},
     "judge_agreement.direct.a|b.agreement.value"),
    ({"mean_over_attacks": {"j": "x"}}, "mean_over_attacks.j"),
    ({"mean_over_attacks": {"j": {"mean": 0.5, "ci95": [0.1]}}}, "mean_over_attacks.j.ci95"),
    ({"mean_over_attacks": {"j": {"mean": "high"}}}, "mean_over_attacks.j.mean"),
    ({"asr_at_n": {"direct": {"refusal": {"fit": FIT}}}}, "asr_at_n.direct.refusal.fit.forecast.0.5.n"),
    ({"asr_at_n": {"direct": {"refusal": {"overall": [{"n": 1}]}}}}, "asr_at_n.direct.refusal.overall[0]"),
    ({"asr_at_n": {"direct": {"refusal": {"fit": {"fit_range": [1, 2, 3]}}}}}, "asr_at_n.direct.refusal.fit.fit_range"),
    ({"prefill_check": {"direct": ["x"]}}, "prefill_check.direct"),
    ({"prefill_check": {"direct": {"ignored": "3"}}}, "prefill_check.direct.ignored"),
    ({"input_bounds": ["x"]}, "input_bounds"),
    ({"judges": ["x"]}, "judges"),
    ({"over_refusal": {"refusal_rate": {"all": {"rate": "x"}}}}, "over_refusal.refusal_rate.all.rate"),
    ({"defenses": {"name": "smoothllm"}}, "defenses"),
    ({"cost": 3}, "cost"),
])  # fmt: skip
def test_an_eval_summary_of_the_wrong_shape_names_file_and_field(block, field):
    data = json.loads(json.dumps({**BASE, **block}))
    with pytest.raises(UserError) as caught:
        EvalSummary.from_json(data, "eval/before/jailbreak/summary.json")
    assert str(caught.value).startswith(f"eval/before/jailbreak/summary.json: field {field}")


def test_other_summaries_of_the_wrong_shape_name_file_and_field():
    with pytest.raises(UserError, match=r"^s\.json: field before: expected a JSON object, got a string"):
        DemoSummary.from_json({"before": "x", "after": {"direct_asr": 0.2}}, "s.json")
    with pytest.raises(UserError, match=r"^s\.json: field comparisons: expected a JSON array"):
        DemoSummary.from_json({"before": {}, "comparisons": {"a": "e-dpo"}}, "s.json")
    with pytest.raises(UserError, match=r"^m\.json: field by_category: expected a JSON object, got an array"):
        MTBenchSummary.from_json({"judge": "j", "by_category": ["x"]}, "m.json")
    with pytest.raises(UserError, match=r"^o\.json: field refusal_rate\.all: expected a JSON object"):
        OverRefusalSummary.from_json({"judge": "j", "refusal_rate": {"all": 3}}, "o.json")


@pytest.mark.parametrize(("stats", "field", "expected"), [
    ({"asr": "0.5"}, "asr", "a number, got a string"),
    ({"asr": True}, "asr", "a number, got a boolean"),
    ({"ci95": ["x", 1]}, "ci95[0]", "a number, got a string"),
    ({"ci95": [0.1]}, "ci95", "a [low, high] pair of numbers, got 1 value(s)"),
    ({"ci95": "0.1-0.9"}, "ci95", "a [low, high] pair of numbers, got a string"),
    ({"n": "4"}, "n", "a whole number, got a string"),
    ({"n": 2.5}, "n", "a whole number, got a number"),
    ({"n": None}, "n", "a whole number, got null"),
    ({"unscored": True}, "unscored", "a whole number, got a boolean"),
    ({"partial_behaviors": "1"}, "partial_behaviors", "a whole number, got a string"),
])  # fmt: skip
def test_asr_stats_of_the_wrong_shape_name_file_and_field(stats, field, expected):
    """Text where a number belongs is refused where it is read, not left to break the console table (ValueError)
    or show as a blank cell in the report."""
    for block, at in (("attacks", "attacks.direct.kw"), ("by_category", "by_category.direct.kw.cyber")):
        value = {**STATS, **stats}
        data = {**BASE, block: {"direct": {"kw": {"cyber": value} if block == "by_category" else value}}}
        with pytest.raises(UserError) as caught:
            EvalSummary.from_json(data, "s.json")
        assert str(caught.value) == f"s.json: field {at}.{field}: expected {expected}"


def test_rate_and_score_stats_of_the_wrong_shape_name_file_and_field():
    with pytest.raises(UserError, match=r"^o\.json: field refusal_rate\.all\.rate: expected a number, got a string$"):
        OverRefusalSummary.from_json({"refusal_rate": {"all": {"rate": "0.5", "n": 4}}}, "o.json")
    with pytest.raises(UserError, match=r"^m\.json: field overall\.ci95\[1\]: expected a number, got a string$"):
        MTBenchSummary.from_json({"overall": {"mean": 7.0, "ci95": [6, "8"], "n": 4}}, "m.json")
    with pytest.raises(UserError, match=r"^r\.json: field base_answers\.n: expected a whole number, got a string$"):
        RetentionSummary.from_json({"base_answers": {"mean": 0.0, "n": "3"}}, "r.json")
    assert RateStats.from_json({"rate": 1, "ci95": [0, 1], "n": 3}) == RateStats(1.0, (0.0, 1.0), 3)  # ints read
    with pytest.raises(UserError, match=r"^score: field mean: expected a number, got a string$"):
        ScoreStats.from_json({"mean": "7"})


@pytest.mark.parametrize("key", ["diff", "rate_a", "rate_b", "only_a", "only_b"])
@pytest.mark.parametrize("value", [None, "0.5", True, [1]])
def test_a_paired_difference_needs_numbers(key, value):
    with pytest.raises(UserError, match=rf"^s\.json: field comparison\.metrics\.direct_asr\.{key}: expected a"):
        Comparison.from_json({"a": "e", "b": "d", "metrics": {"direct_asr": {**PAIRED, key: value}}},
                             "s.json: field comparison")


def test_a_paired_difference_reads_numbers_as_before():
    d = PairedDifference.from_json({**PAIRED, "rate_a": 1, "only_a": 3})
    assert (d.rate_a, type(d.rate_a), d.only_a, d.ci95) == (1.0, float, 3, (-0.3, 0.1))
    assert PairedDifference.from_json(d.to_json()) == d


def _record(behavior: str, attack: str, sample: int, harmful: dict[str, bool]) -> AttemptRecord:
    return AttemptRecord(behavior_id=behavior, attack=attack, attempt_id=str(sample), attempt_meta={"sample": sample},
                         completion={"text": "x", "meta": {"prefill_honoured": "ignored"}},
                         verdicts={j: {"harmful": h} for j, h in harmful.items()})  # fmt: skip


def test_what_the_writers_write_reads_back():
    """summarize() fills every checked block (judge agreement, ASR@N, mean over attacks, prefill check); the
    round trip through JSON keeps it whole."""
    from safealign.eval.judges.agreement import pairwise_agreement

    behaviors = [Behavior(f"b{i}", f"behavior {i}", category="cyber") for i in range(4)]
    records = [_record(b.id, attack, s, {"kw": (i + s) % 3 == 0, "cls": (i * s) % 2 == 0})
               for i, b in enumerate(behaviors) for attack in ("direct", "best_of_n") for s in range(6)]  # fmt: skip
    summary = summarize(records, behaviors, ["direct", "best_of_n"], ["kw", "cls"])
    rate = RateStats(0.25, (0.05, 0.7), 4).to_json()
    summary = EvalSummary.from_json(
        summary.to_json() | {"judge_agreement": pairwise_agreement(records, ["direct", "best_of_n"], ["kw", "cls"]),
                             "input_bounds": {"too_long": "skip", "skipped": 1}, "judges": {"kw": {"class": "K"}},
                             "over_refusal": {"judge": "kw", "refusal_rate": {"all": rate},
                                              "contrast": {"safe": rate, "unsafe": rate}},
                             "defenses": [{"name": "smoothllm"}], "cost": {"generated_tokens": 3.5}})  # fmt: skip
    assert summary.asr_at_n and summary.mean_over_attacks and summary.judge_agreement and summary.prefill_check
    assert EvalSummary.from_json(json.loads(json.dumps(summary.to_json()))) == summary


def test_console_shows_no_interval_where_none_was_recorded():
    summary = EvalSummary(attacks={"direct": {"kw": AsrStats(0.5, None, 4)}},
                          mean_over_attacks={"kw": {"mean": 0.5, "ci95": None, "n_attacks": 2, "n_behaviors": 4}},
                          over_refusal={"judge": "kw", "refusal_rate": {"all": {"rate": 0.1, "n": 10}}})  # fmt: skip
    text = format_table(summary)
    assert "[0.000, 1.000]" not in text and "0.000" not in text
    row = next(line for line in text.splitlines() if line.startswith("direct"))
    assert row.split()[2:4] == ["0.500", "-"]
    assert "mean over 2 attacks (judge kw): 0.500 over 4 behaviors (any-of-k)" in text
    assert "over-refusal (kw): 0.100 n=10" in text


def test_console_aggregate_keeps_a_recorded_interval():
    block = mean_over_attacks({"a": {"b1": True, "b2": False}, "b": {"b1": True, "b2": True}}, draws=50)
    (line,) = format_aggregate({"kw": block})
    lo, hi = block["ci95"]
    assert line == f"mean over 2 attacks (judge kw): 0.750 [{lo:.3f}, {hi:.3f}] over 2 behaviors (any-of-k)"


@pytest.mark.parametrize(("block", "field"), [
    ({"mean_score": {"direct": {"sr": {"mean": "high"}}}}, "mean_score.direct.sr.mean"),
    ({"mean_score": {"direct": {"sr": {"mean": 0.2, "ci95": [0.1]}}}}, "mean_score.direct.sr.ci95"),
    ({"mean_score": {"direct": ["x"]}}, "mean_score.direct"),
])  # fmt: skip
def test_a_mean_score_block_of_the_wrong_shape_names_file_and_field(block, field):
    with pytest.raises(UserError) as caught:
        EvalSummary.from_json({**BASE, **block}, "s.json")
    assert str(caught.value).startswith(f"s.json: field {field}")
