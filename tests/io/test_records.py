"""Typed run records: round trips, files written before the types existed, unknown keys kept."""

from __future__ import annotations

import json

import pytest

from safealign.errors import UserError
from safealign.io.records import SCHEMA_VERSION, AsrStats, AttemptRecord
from safealign.io.summaries import (
    Comparison, DemoSummary, EvalSummary, Figure, MTBenchSummary, OverRefusalSummary, PairedDifference, RateStats,
    ScoreStats,
)

# A line of records.jsonl as the eval pipeline wrote it before records were typed (no schema_version).
OLD_RECORD = {
    "behavior_id": "b1", "category": "cyber", "attack": "prefill", "attempt_id": "0", "n_attempts": 1,
    "messages": [{"role": "user", "content": "first"}, {"role": "user", "content": "do it"}],
    "prefill": "Sure, ", "attempt_meta": {"target": "Sure"},
    "completion": {"text": "here.", "error": None, "meta": {}},
    "verdicts": {"kw": {"harmful": True, "error": None, "raw": "x"}, "bad": {"harmful": None, "error": "parse"}},
    "timings": {"attack_s": 0.0, "generate_s": 0.1, "judge_s": {"kw": 0.0}}, "time": "2026-01-01T00:00:00",
}  # fmt: skip
STATS = {"asr": 0.5, "ci95": [0.1, 0.9], "n": 4, "unscored": 1, "unscored_behaviors": 0, "attempts": 5}
OLD_EVAL_SUMMARY = {
    "n_behaviors": 4, "attacks": {"direct": {"kw": STATS}}, "by_category": {"direct": {"kw": {"cyber": STATS}}},
    "by_attempt": {}, "missing": {"direct": 0}, "complete": True, "wall_s": 1.5, "model": "tiny-random",
    "judges": {"kw": {"class": "KeywordJudge"}}, "records": "run/records.jsonl",
}  # fmt: skip
FIG = {"value": 0.25, "ci95": [0.1, 0.5], "n": 8}
PAIRED = {"diff": -0.1, "ci95": [-0.3, 0.1], "per_seed": {"0": -0.1}, "rate_a": 0.2, "rate_b": 0.3,
          "n_prompts": 10, "seeds": 1, "only_a": 1, "only_b": 2}  # fmt: skip


def test_attempt_record_from_an_old_file_round_trips_and_reads_verdicts():
    record = AttemptRecord.from_json(json.loads(json.dumps(OLD_RECORD)))
    assert record.schema_version == SCHEMA_VERSION == 1 and record.key == ("b1", "prefill", "0")
    assert record.harmful("kw") is True and record.harmful("bad") is None and record.harmful("absent") is None
    assert record.answer == "Sure, here." and record.prompt == "do it" and record.error is None
    assert record.to_json() == {**OLD_RECORD, "schema_version": 1}
    assert list(record.to_json())[:4] == ["behavior_id", "attack", "attempt_id", "category"]


def test_attempt_record_keeps_unknown_keys_and_defaults_missing_ones():
    minimal = {"behavior_id": 7, "attack": "direct", "attempt_id": 0, "prefill_honoured": False}
    record = AttemptRecord.from_json(minimal)
    assert record.key == ("7", "direct", "0") and record.n_attempts == 1 and record.verdicts == {}
    assert record.extra == {"prefill_honoured": False} and record.to_json()["prefill_honoured"] is False
    assert record.harmful("kw") is None and record.answer == ""


@pytest.mark.parametrize("verdict", [{"harmful": "yes"}, {"harmful": 1}, "harmful", None])
def test_a_verdict_that_is_not_a_boolean_counts_as_unscored(verdict):
    assert AttemptRecord.from_json({**OLD_RECORD, "verdicts": {"kw": verdict}}).harmful("kw") is None


def test_attempt_record_names_the_missing_field():
    with pytest.raises(UserError, match=r"records\.jsonl record 3: missing field\(s\) attack"):
        AttemptRecord.from_json({"behavior_id": "b", "attempt_id": "0"}, "records.jsonl record 3")
    with pytest.raises(UserError, match="expected a JSON object, got list"):
        AttemptRecord.from_json([1])
    with pytest.raises(UserError, match="n_attempts"):
        AttemptRecord.from_json({**OLD_RECORD, "n_attempts": "many"})


def test_eval_summary_from_an_old_file_round_trips():
    summary = EvalSummary.from_json(json.loads(json.dumps(OLD_EVAL_SUMMARY)))
    # written before partial_behaviors, with an unscored attempt: the older rule's numbers, not recounted as 0
    assert summary.stats("direct", "kw") == AsrStats(0.5, (0.1, 0.9), 4, 1, 0, 5, partial_behaviors=None)
    assert summary.stats("direct", "kw").older_rule and summary.by_category["direct"]["kw"]["cyber"].older_rule
    assert summary.by_category["direct"]["kw"]["cyber"].n == 4 and summary.stats("direct", "nope") is None
    assert summary.model_identity is None and summary.run_fingerprint is None
    assert summary.to_json() == {**OLD_EVAL_SUMMARY, "attacks": {"direct": {"kw": STATS}},  # still recognisable
                                 "by_category": {"direct": {"kw": {"cyber": STATS}}},
                                 "model_identity": None, "run_fingerprint": None,
                                 "input_bounds": {}, "prefill_check": {}, "judge_agreement": {},
                                 "asr_at_n": {}, "benchmark": {}, "over_refusal": {}, "mean_over_attacks": {},
                                 "test_case_asr": {}, "defenses": [], "cost": {},
                                 "schema_version": 1}
    assert EvalSummary.from_json(summary.to_json()) == summary


def test_stats_without_partial_behaviors_and_no_unscored_attempt_read_as_the_current_rule():
    """Both rules agree where every attempt was scored (the committed sweep cells): such a block is not marked."""
    stats = AsrStats.from_json({**STATS, "unscored": 0})
    assert stats.partial_behaviors == 0 and not stats.older_rule
    assert AsrStats.from_json({**STATS, "partial_behaviors": 1}).partial_behaviors == 1  # written by the current rule


def test_eval_summary_of_an_older_layout_defaults_what_it_lacks():
    summary = EvalSummary.from_json({"n_behaviors": 2, "attacks": {"direct": {"kw": {"asr": None, "n": 0}}}})
    assert summary.by_attempt == {} and summary.complete is None and summary.stats("direct", "kw").ci95 is None


def test_helpfulness_summaries_round_trip():
    rate = {"rate": 0.5, "ci95": [0.2, 0.8], "n": 4, "unscored": 0}
    over = {"judge": "refusal", "refusal_rate": {"ordinary": rate, "all": {**rate, "ci95": None}}, "missing": 0}
    parsed = OverRefusalSummary.from_json(over)
    assert parsed.refusal_rate["ordinary"] == RateStats(0.5, (0.2, 0.8), 4, 0)
    assert parsed.refusal_rate["all"].ci95 is None
    assert parsed.to_json() == {**over, "model_identity": None, "run_fingerprint": None, "schema_version": 1}
    score = {"mean": 7.0, "ci95": None, "n": 1, "unscored": 0}
    mt = {"judge": "j", "overall": score, "by_turn": {"1": score}, "by_category": {"math": score}, "questions": 1,
          "missing": 0}  # fmt: skip
    parsed_mt = MTBenchSummary.from_json(mt)
    assert parsed_mt.overall == ScoreStats(7.0, None, 1, 0) and parsed_mt.overall.value == 7.0
    assert MTBenchSummary.from_json(parsed_mt.to_json()) == parsed_mt


def test_demo_summary_with_one_stage_keeps_the_flat_after_block():
    old = {"model": "m", "judge": "refusal", "pairs": "2 new", "objective": "dpo",
           "before": {"direct_asr": FIG}, "after": {"direct_asr": {**FIG, "value": 0.0}}, "wall_seconds": 3.0}
    summary = DemoSummary.from_json(old)
    assert summary.after == {"after": {"direct_asr": Figure(0.0, (0.1, 0.5), 8)}} and summary.comparison is None
    assert summary.to_json() == {**old, "model_identity": None, "trained_identity": {}, "run_fingerprint": None,
                                 "schema_version": 1}
    assert list(summary.columns()) == ["before", "after"]


def test_demo_summary_with_stages_and_comparison_round_trips():
    old = {"model": "m", "judge": "refusal", "pairs": "p", "objective": "o", "before": {"direct_asr": FIG},
           "after": {"dpo": {"direct_asr": FIG}, "e-dpo": {"direct_asr": FIG}},
           "comparison": {"a": "e-dpo", "b": "dpo", "metrics": {"direct_asr": PAIRED}}, "wall_seconds": 3.0}
    summary = DemoSummary.from_json(old)
    assert summary.comparison == Comparison("e-dpo", "dpo", {"direct_asr": PairedDifference(
        -0.1, (-0.3, 0.1), {"0": -0.1}, 0.2, 0.3, 10, 1, 1, 2)})  # fmt: skip
    assert list(summary.columns("after ({})")) == ["before", "after (dpo)", "after (e-dpo)"]
    assert summary.to_json() == {**old, "model_identity": None, "trained_identity": {}, "run_fingerprint": None,
                                 "schema_version": 1}


def test_a_bare_number_is_a_figure():
    assert DemoSummary.from_json({"before": {"direct_asr": 0.5}}).before["direct_asr"] == Figure(0.5)


@pytest.mark.parametrize("field, value, problem", [
    ("messages", 5, "'messages' must be a JSON list of messages, got a number"),
    ("messages", None, "'messages' must be a JSON list of messages, got null"),
    ("messages", ["hi"], "'messages' item 0 must be a JSON object, got a string"),
    ("messages", [{"content": "hi"}], "'messages' item 0 has no string 'role'"),
    ("defense", [5], "'defense' item 0 must be a JSON object, got a number"),
    ("timings", [], "'timings' must be a JSON object, got a list"),
    ("timings", None, "'timings' must be a JSON object, got null"),
    ("attempt_meta", "m", "'attempt_meta' must be a JSON object, got a string"),
    ("completion", {"text": "x", "meta": "m"}, "'completion.meta' must be a JSON object, got a string"),
])  # fmt: skip
def test_attempt_record_with_a_field_of_the_wrong_shape_names_file_line_and_field(field, value, problem):
    """Loaded, such a record crashed later (``.prompt``, cost_summary, prefill_check) with a TypeError."""
    with pytest.raises(UserError) as exc:
        AttemptRecord.from_json({**OLD_RECORD, field: value}, "run/records.jsonl:3")
    assert str(exc.value) == f"run/records.jsonl:3: {problem}"


def test_attempt_record_accepts_a_completion_without_meta_and_written_nulls():
    for completion in ({"text": "x", "error": None}, {"text": "x", "error": None, "meta": None}):
        record = AttemptRecord.from_json({**OLD_RECORD, "completion": completion})
        assert record.answer == "Sure, x"
    # a non-finite number is written as null (io/jsonfile.dumps_json): a timing read back as null is no cost
    from safealign.eval.cost import cost_summary

    record = AttemptRecord.from_json({**OLD_RECORD, "timings": {"generate_s": None}})
    assert cost_summary([record])["seconds"] == 0.0
