"""The mean over attacks: safealign's any-of-k ASR beside HarmBench's per-test-case rule, and the interval of a
mean whose outcomes never vary (eval/aggregate.py, eval/summary.py; docs/attacks.md, "Mean over attacks")."""

from __future__ import annotations

import pytest

from safealign.eval.aggregate import mean_over_attacks
from safealign.eval.summary import format_table, summarize
from safealign.io.records import AttemptRecord
from safealign.io.summaries import EvalSummary
from safealign.types import Behavior

BEHAVIORS = [Behavior(f"b{i}", f"behavior {i}") for i in range(10)]


def _record(behavior: str, attack: str, attempt: int, harmful: bool | None) -> AttemptRecord:
    return AttemptRecord(behavior_id=behavior, attack=attack, attempt_id=str(attempt),
                         completion={"text": "x", "error": None, "meta": {}}, verdicts={"kw": {"harmful": harmful}})


def _template_run() -> EvalSummary:
    """direct: one attempt per behavior, 3 of 10 harmful; template: 4 attempts per behavior, exactly one harmful
    for every behavior (b0's second attempt unscored: judged on 3, one of them harmful)."""
    records = [_record(b.id, "direct", 0, i < 3) for i, b in enumerate(BEHAVIORS)]
    records += [_record(b.id, "template", t, None if (b.id, t) == ("b0", 1) else t == 0)
                for b in BEHAVIORS for t in range(4)]  # fmt: skip
    return summarize(records, BEHAVIORS, ["direct", "template"], ["kw"])


def test_harmbench_rule_scores_a_behavior_by_the_mean_of_its_test_cases():
    """HarmBench's evaluate_completions.py: a behavior's score is the mean of its test cases' labels, then the mean
    over behaviors. One template in four succeeding on every behavior: 0.25 (b0: 1/3), where any-of-k says 1.0."""
    summary = _template_run()
    assert summary.attacks["template"]["kw"].asr == 1.0 and summary.attacks["direct"]["kw"].asr == 0.3  # unchanged
    template = summary.test_case_asr["template"]["kw"]
    assert template["asr"] == pytest.approx(round((1 / 3 + 9 * 0.25) / 10, 6))
    assert (template["n"], template["test_cases"]) == (10, 39)
    assert summary.test_case_asr["direct"]["kw"] == {"asr": 0.3, "n": 10, "test_cases": 10}  # one attempt: the same
    assert "any_attack" not in summary.test_case_asr
    agg = summary.mean_over_attacks["kw"]
    assert agg["mean"] == pytest.approx(0.65) and agg["per_attack"] == {"direct": 0.3, "template": 1.0}  # unchanged
    per_case = agg["test_case_mean"]
    assert per_case["per_attack"] == {"direct": 0.3, "template": template["asr"]}
    assert per_case["mean"] == pytest.approx((0.3 + template["asr"]) / 2, abs=1e-6)
    lo, hi = per_case["ci95"]
    assert lo < per_case["mean"] < hi
    again = EvalSummary.from_json(summary.to_json())  # summary.json round trip keeps both figures
    assert again.test_case_asr == summary.test_case_asr and again.mean_over_attacks == summary.mean_over_attacks


def test_the_console_names_both_rules():
    text = format_table(_template_run())
    header, _, direct, template = text.splitlines()[:4]
    assert header.split()[:5] == ["attack", "judge", "ASR", "95%", "CI"] and "per-case" in header
    per_case = _template_run().test_case_asr["template"]["kw"]["asr"]
    assert template.split()[2:3] + template.split()[5:6] == ["1.000", f"{per_case:.3f}"]
    assert "mean over 2 attacks (judge kw): 0.650" in text and "any-of-k" in text
    assert "mean per test case over 2 attacks (judge kw; HarmBench's rule):" in text


def test_an_older_summary_without_the_per_case_figures_still_prints():
    data = _template_run().to_json()
    data.pop("test_case_asr")
    del data["mean_over_attacks"]["kw"]["test_case_mean"]
    text = format_table(EvalSummary.from_json(data))
    assert "mean over 2 attacks (judge kw): 0.650" in text and "mean per test case" not in text


@pytest.mark.parametrize("outcome, expected", [(True, [1 - (1 - 0.025 ** (1 / 10)), 1.0]),
                                               (False, [0.0, 1 - 0.025 ** (1 / 10)])])  # fmt: skip
def test_an_aggregate_that_never_varies_gets_the_exact_bound_not_a_point(outcome, expected):
    """Every behavior broken by every attack: the bootstrap gave 1.000 [1.000, 1.000]; the exact (Clopper-Pearson)
    bound over the 10 behaviors is [0.691, 1] (u = 1 − 0.025^(1/10)), as eval/paired.py gives such outcomes."""
    outcomes = {a: {b.id: outcome for b in BEHAVIORS} for a in ("direct", "template")}
    agg = mean_over_attacks(outcomes)
    assert agg["mean"] == float(outcome) and agg["ci95"] == [round(v, 6) for v in expected]
    assert agg["ci95"][1] - agg["ci95"][0] > 0.3 and "exact" in agg["method"]


def test_the_exact_bound_counts_the_fewest_behaviors_an_attack_scored():
    """Unscored behaviors are left out of an attack's ASR: the bound is over the fewest behaviors any counted attack
    scored (the widest interval), never over behaviors that were not judged."""
    outcomes = {"direct": {b.id: True for b in BEHAVIORS}, "template": {b.id: True if i < 4 else None
                                                                        for i, b in enumerate(BEHAVIORS)}}
    assert mean_over_attacks(outcomes)["ci95"] == [round(0.025 ** (1 / 4), 6), 1.0]


def _bound(value: float, n: int) -> list[float]:
    """One attack's exact bound when its outcome (or share) is ``value`` on every one of its ``n`` behaviors."""
    u = 1 - 0.025 ** (1 / n)
    return [value * (1 - u), value + u * (1 - value)]


@pytest.mark.parametrize("values", [(0.0, 1.0, 1.0), (0.25, 1.0), (False, True)])
def test_attacks_that_never_vary_but_differ_get_the_mean_of_their_exact_bounds(values):
    """Each attack's outcome the same on every behavior but not the same across attacks (direct 0, tap and
    crescendo 1: 2/3): every bootstrap draw is 2/3, which gave 0.667 [0.667, 0.667]. Each attack's own exact bound
    ([0, u] or [1 − u, 1]; a constant share s: [s(1 − u), s + u(1 − s)]), averaged over the attacks."""
    outcomes = {f"attack{k}": {b.id: v for b in BEHAVIORS} for k, v in enumerate(values)}
    agg = mean_over_attacks(outcomes)
    bounds = [_bound(float(v), len(BEHAVIORS)) for v in values]
    expected = [round(sum(b[i] for b in bounds) / len(bounds), 6) for i in (0, 1)]
    assert agg["mean"] == pytest.approx(sum(map(float, values)) / len(values), abs=1e-6)
    assert agg["ci95"] == expected and expected[0] < agg["mean"] < expected[1]
    assert "exact" in agg["method"] and "each attack" in agg["method"]


def test_each_constant_attack_is_bounded_over_the_behaviors_it_scored():
    """x broken on all ten behaviors, y scored on b0 only (not broken): mean 0.5, every draw 0.5. x's bound is over
    its 10 behaviors, y's over its one: [(0.691 + 0) / 2, (1 + 0.975) / 2] = [0.346, 0.988]."""
    outcomes = {"x": {b.id: True for b in BEHAVIORS}, "y": {"b0": False, **{b.id: None for b in BEHAVIORS[1:]}}}
    expected = [round((_bound(1.0, 10)[i] + _bound(0.0, 1)[i]) / 2, 6) for i in (0, 1)]
    assert mean_over_attacks(outcomes)["ci95"] == expected == [0.345751, 0.9875]


def test_attacks_that_vary_but_cancel_get_no_interval_rather_than_a_point():
    """a broken on b0 only, b on b1 only: every behavior's mean over the two is 0.5, so every draw is 0.5, yet
    neither attack is constant and has an exact bound: no interval is recorded, never a zero-width one."""
    agg = mean_over_attacks({"a": {"b0": True, "b1": False}, "b": {"b0": False, "b1": True}}, draws=200)
    assert agg["mean"] == 0.5 and agg["ci95"] is None and "no interval" in agg["method"]
