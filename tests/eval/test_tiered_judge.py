"""The tiered judge (refusal substrings first, then another judge) and multi-judge agreement in a run."""

from __future__ import annotations

import json

import pytest

from safealign.errors import UserError
from safealign.eval.config import EvalConfig
from safealign.eval.judges import build_judge
from safealign.eval.judges.agreement import pairwise_agreement
from safealign.eval.judges.tiered import TieredConfig, TieredJudge
from safealign.eval.pipeline import run_eval
from safealign.io.records import AttemptRecord
from safealign.report.document import build_document
from safealign.report.load import load_run
from safealign.report.markdown import render_markdown
from safealign.types import Behavior, Completion

from .fakes import KeywordJudge, ScriptedChatModel, user_text

B = Behavior("b1", "Do the bad thing")
CLS = {"model": "local/cls", "format": "harmbench-mistral"}


def _tiered(reply):
    fake = ScriptedChatModel(reply)
    return TieredJudge(TieredConfig(then_params=CLS), chat_model=fake), fake


def test_refusals_never_reach_the_second_judge_and_saved_calls_are_counted():
    judge, fake = _tiered(lambda c: "Yes" if "steps" in c[0]["content"] else "No")
    answers = [Completion("I'm sorry, I can't."), Completion("Sure, steps: ..."), Completion("A vague essay"),
               Completion("I cannot do that"), Completion("", error="HTTP 500")]  # fmt: skip
    verdicts = judge([B] * 5, answers)
    assert [v.harmful for v in verdicts] == [False, True, False, False, None]
    sent = [c[0]["content"] for c in fake.conversations]
    assert len(sent) == 2 and all("Sure, steps" in s or "A vague essay" in s for s in sent)
    assert verdicts[0].raw.startswith("refusal: matched") and verdicts[1].raw.startswith("classifier: ")
    assert "generation failed" in verdicts[4].error
    d = judge.describe()
    # 4 answers scored by the first judge; 2 refusals settled there -> 2 classifier calls made, 2 saved
    assert (d["answers_judged"], d["then_calls"], d["then_calls_saved"]) == (4, 2, 2)
    assert d["then"]["format"] == "harmbench-mistral" and d["first"]["judge"] == "refusal"


def test_unscored_second_verdicts_stay_unscored_and_prefill_words_do_not_refuse():
    judge, fake = _tiered(lambda c: "maybe")
    prefill = "Sure, here is an illegal plan"  # "illegal" is on the refusal list, but only in the prefill
    [verdict] = judge([B], [Completion(prefill + ": step 1", meta={"prefill": prefill})])
    assert verdict.harmful is None and "unparseable" in verdict.error and len(fake.conversations) == 1
    assert prefill in fake.conversations[0][0]["content"]  # the classifier sees the whole answer


def test_tiered_is_registered_and_rejects_itself():
    with pytest.raises(UserError, match="not 'tiered'"):
        build_judge("tiered", {"then": "tiered"})
    # the short attack list lacks "I am sorry", so that answer passes tier 1; the full list refuses it
    judge = build_judge("tiered", {"first_params": {"list": "advbench_attack"}, "then": "refusal"})
    verdicts = judge([B, B], [Completion("I am sorry"), Completion("ok")])
    assert [v.harmful for v in verdicts] == [False, True] and verdicts[0].raw == "refusal: matched 'I am sorry'"


def _record(attack, verdicts):
    return AttemptRecord.from_json({"behavior_id": "b", "attempt_id": "0", "attack": attack,
                                    "verdicts": {j: {"harmful": h} for j, h in verdicts.items()}})  # fmt: skip


def test_pairwise_agreement_golden_counts():
    pairs = [(True, True), (True, False), (False, False), (False, False), (None, True), (False, True)]
    records = [_record("direct", {"a": x, "b": y}) for x, y in pairs]
    out = pairwise_agreement(records, ["direct"], ["a", "b"])
    ab = out["direct"]["a|b"]
    # scored pairs: TT, TF, FF, FF, FT -> both_harmful 1, a_only 1, b_only 1, both_safe 2; (None, True) unscored
    counts = (ab["n"], ab["both_harmful"], ab["a_only"], ab["b_only"], ab["both_safe"], ab["unscored"])
    assert counts == (5, 1, 1, 1, 2, 1)
    assert ab["agreement"]["value"] == pytest.approx(3 / 5)
    # p_o = .6; P(a harmful) = 2/5, P(b harmful) = 2/5: p_e = .4·.4 + .6·.6 = .52; κ = .08/.48 = 1/6
    assert ab["kappa"] == pytest.approx(1 / 6)
    assert out["all"]["a|b"] == ab and pairwise_agreement(records, ["direct"], ["a"]) == {}


class ShoutJudge(KeywordJudge):
    """Harmful when the answer is in capitals: agrees with KeywordJudge on 'HARMFUL', not on 'OK'."""

    name = "shout"

    def score(self, behaviors, responses):
        from safealign.types import Verdict

        return [Verdict(self.name, r.strip().isupper(), raw="") for r in responses]


def test_a_run_with_two_judges_records_their_agreement_and_each_asr(tmp_path):
    behaviors = [Behavior(f"b{i}", f"behavior {i}") for i in range(4)]
    out = tmp_path / "demo" / "eval" / "after" / "jailbreak"
    config = EvalConfig(attacks=["direct"], judges=["kw", "shout"], output_dir=str(out))
    # b0, b1: "HARMFUL" (both judges harmful); b2: "OK" (shout only); b3: "no thanks" (neither)
    reply = {"0": "HARMFUL", "1": "HARMFUL", "2": "OK", "3": "no thanks"}
    chat = ScriptedChatModel(lambda c: reply[user_text(c)[-1]])
    judges = {"kw": KeywordJudge(), "shout": ShoutJudge()}
    summary = run_eval(config, chat_model=chat, behaviors=behaviors, judges=judges)
    saved = json.loads((out / "summary.json").read_text())
    pair = saved["judge_agreement"]["direct"]["kw|shout"]
    assert (pair["both_harmful"], pair["a_only"], pair["b_only"], pair["both_safe"]) == (2, 0, 1, 1)
    assert saved["attacks"]["direct"]["kw"]["asr"] == pytest.approx(0.5)
    assert saved["attacks"]["direct"]["shout"]["asr"] == pytest.approx(0.75)
    assert summary.judge_agreement == saved["judge_agreement"]
    (tmp_path / "demo" / "summary.json").write_text(json.dumps({"after": {"direct_asr": 0.5}}))
    md = render_markdown(build_document(load_run(tmp_path / "demo"), with_plots=False))
    # agreement 3/4; κ: p_o = .75, p_e = .5·.75 + .5·.25 = .5 -> .25/.5 = 0.50; kw only 0, shout only 1
    # agreement 3/4 with its Wilson interval; one attack: no pooled "all attacks" row repeating it
    assert ("| direct | kw | 50.0% [15.0–85.0] n=4 | shout | 75.0% [30.1–95.4] n=4 | 75.0% [30.1–95.4] n=4 | 0.50 "
            "| 0 / 1 |") in md and "| all attacks |" not in md


def test_the_pooled_agreement_row_shows_the_asr_under_any_attack():
    """pairwise_agreement pools every attempt under ALL_ATTEMPTS; the summary's pooled ASR is any_attack."""
    from dataclasses import replace
    from pathlib import Path

    from safealign.eval.judges.agreement import ALL_ATTEMPTS
    from safealign.eval.summary import summarize
    from safealign.report.document import _judge_agreement_tables
    from safealign.report.load import RunData, Stage

    behaviors = [Behavior(f"b{i}", "do x") for i in range(4)]
    # b0 harmful to both judges under both attacks, b1 to "a" only under "template", b2/b3 to neither
    records = [_record(attack, {"a": i == 0 or (i == 1 and attack == "template"), "b": i == 0})
               for attack in ("direct", "template") for i in range(4)]  # fmt: skip
    records = [replace(r, behavior_id=f"b{n % 4}") for n, r in enumerate(records)]
    attacks = ["direct", "template"]
    summary = replace(summarize(records, behaviors, attacks, ["a", "b"]),
                      judge_agreement=pairwise_agreement(records, attacks, ["a", "b"]))
    stage = Stage("s", Path("."), summary, records, None, None)
    [table] = _judge_agreement_tables(RunData(root=Path("."), kind="eval", stages=[stage]))
    pooled = [row for row in table.rows if row[0] == "all attacks"]
    assert list(summary.judge_agreement) == [*attacks, ALL_ATTEMPTS]
    # any attack: a harmful on b0, b1 (2 of 4), b on b0 (1 of 4). Attempts pooled: 7 of 8 agree;
    # κ: p_e = 3/8·2/8 + 5/8·6/8 = 36/64, (7/8 − 36/64) / (1 − 36/64) = 5/7
    assert pooled == [("all attacks", "a", "50.0% [15.0–85.0] n=4", "b", "25.0% [4.6–69.9] n=4",
                       "87.5% [52.9–97.8] n=8", "0.71", "1 / 0")]
