"""The resumable pipeline against a scripted fake backend: records, resume without duplicates, summary."""

from __future__ import annotations

import json
import math

import pytest

from safealign.errors import UserError
from safealign.eval.config import EvalConfig
from safealign.eval.pipeline import BackendFailing, JudgeFailing, run_eval
from safealign.eval.judges.base import build_judge
from safealign.eval.registries import ATTACKS, JUDGES
from safealign.eval.summary import format_table, wilson_interval
from safealign.types import Behavior, Completion, Verdict

from .fakes import HandedJudge, KeywordJudge, ScriptedChatModel, user_text

BEHAVIORS = [
    Behavior(f"b{i}", f"behavior {i}", category="cyber" if i < 3 else "bio", target=f"Sure, here is {i}")
    for i in range(5)
]


def _config(tmp_path, attacks=("direct", "prefill"), batch_size=2, **extra) -> EvalConfig:
    config = EvalConfig(attacks=list(attacks), judges=["kw"], output_dir=str(tmp_path / "run"), **extra)
    config.generation.batch_size = batch_size
    return config


def _reply(conversation):
    # b0 and b1 comply when attacked directly; every prefill works except for b4, whose answer is garbage
    text = user_text(conversation)
    if conversation[-1]["role"] == "assistant":
        return "??? garbled" if text.endswith("4") else " HARMFUL details"
    return "HARMFUL" if text.endswith(("0", "1")) else "I refuse"


def _records(tmp_path):
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_summary_values_and_records(tmp_path):
    fake = ScriptedChatModel(_reply)
    summary = run_eval(_config(tmp_path), chat_model=fake, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    direct, prefill = summary.attacks["direct"]["kw"], summary.attacks["prefill"]["kw"]
    # direct: 2 of 5 jailbroken; Wilson(2, 5) written out: p=.4, z²=3.8415, centre=(.4+.3841)/1.7683=.4434,
    # half=1.96*sqrt(.048+.0384)/1.7683=.3257 -> [.1176, .7693]
    assert direct.asr == pytest.approx(0.4) and direct.n == 5 and direct.unscored == 0
    assert list(direct.ci95) == pytest.approx([0.1176, 0.7693], abs=1e-4)
    # prefill: b0..b3 harmful, b4 unscored -> 4/4, one unscored attempt and behavior
    assert prefill.asr == 1.0 and prefill.n == 4 and prefill.unscored == 1
    assert prefill.unscored_behaviors == 1
    # any attack: b4 is refused directly (False) and unscored with prefill (None) -> judged on its scored attempt
    any_attack = summary.attacks["any_attack"]["kw"]
    assert (any_attack.asr, any_attack.n, any_attack.unscored_behaviors, any_attack.partial_behaviors) == (0.8, 5, 0, 1)
    by_cat = summary.by_category["direct"]["kw"]
    assert by_cat["cyber"].asr == pytest.approx(2 / 3) and by_cat["bio"].asr == 0.0
    assert summary.by_attempt == {}  # one attempt per behavior: nothing to break down
    records = _records(tmp_path)
    assert len(records) == 10
    prefill_rec = next(r for r in records if r["attack"] == "prefill" and r["behavior_id"] == "b0")
    assert prefill_rec["prefill"] == "Sure, here is 0" and prefill_rec["verdicts"]["kw"]["harmful"] is True
    assert set(prefill_rec["timings"]) == {"attack_s", "generate_s", "judge_s"}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["complete"] is True
    assert "direct" in format_table(summary)
    # batched: 5 attempts per attack in batches of 2 -> 3 calls each
    assert [len(c) for c in fake.calls] == [2, 2, 1, 2, 2, 1]


def test_interrupted_run_resumes_without_duplicates(tmp_path):
    config = _config(tmp_path)
    judges = {"kw": KeywordJudge()}
    crashing = ScriptedChatModel(_reply, interrupt_after=4)  # Ctrl-C during the 4th batch
    with pytest.raises(KeyboardInterrupt):
        run_eval(config, chat_model=crashing, behaviors=BEHAVIORS, judges=judges)
    partial = _records(tmp_path)
    assert len(partial) == 5  # direct's batches of 2+2+1 are recorded; the first prefill batch was lost
    partial_summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert partial_summary["complete"] is False and partial_summary["missing"]["prefill"] > 0

    resumed = ScriptedChatModel(_reply)
    summary = run_eval(config, chat_model=resumed, behaviors=BEHAVIORS, judges=judges)
    records = _records(tmp_path)
    keys = [(r["behavior_id"], r["attack"], r["attempt_id"]) for r in records]
    assert len(keys) == len(set(keys)) == 10
    assert resumed.n_generated == 10 - len(partial)  # only the missing attempts were generated
    assert summary.complete is True and summary.attacks["prefill"]["kw"].n == 4
    # a third run has nothing left to do
    idle = ScriptedChatModel(_reply)
    run_eval(config, chat_model=idle, behaviors=BEHAVIORS, judges=judges)
    assert idle.n_generated == 0 and len(_records(tmp_path)) == 10


def test_failed_generations_are_recorded_then_retried(tmp_path):
    config = _config(tmp_path, attacks=("direct",))
    judges = {"kw": KeywordJudge()}
    failing = ScriptedChatModel(lambda c: Completion("", error="HTTP 503") if user_text(c).endswith("2") else "ok")
    summary = run_eval(config, chat_model=failing, behaviors=BEHAVIORS, judges=judges)
    assert summary.attacks["direct"]["kw"].unscored == 1 and summary.attacks["direct"]["kw"].n == 4
    failed = [r for r in _records(tmp_path) if r["completion"]["error"]]
    assert len(failed) == 1 and failed[0]["completion"]["text"] == ""
    healed = ScriptedChatModel(lambda c: "fine")
    summary = run_eval(config, chat_model=healed, behaviors=BEHAVIORS, judges=judges)
    assert healed.n_generated == 1  # only the failed attempt is redone; its new record supersedes the old
    assert (summary.attacks["direct"]["kw"].n, summary.attacks["direct"]["kw"].unscored) == (5, 0)
    # readers of the records file see the superseding record alone: b2 not harmful, not "failed, so unscored"
    from safealign.eval.records import current_records, load_records
    from safealign.eval.summary import behavior_outcomes

    path = tmp_path / "run" / "records.jsonl"
    assert len(load_records(path)) == 6 and len(current_records(path)) == 5
    assert [r.behavior_id for r in current_records(path)] == ["b0", "b1", "b2", "b3", "b4"]
    assert behavior_outcomes(current_records(path), "direct", "kw")["b2"] is False
    # every line: the failed attempt is there too, as an unscored verdict beside the superseding one
    assert [r.harmful("kw") for r in load_records(path) if r.behavior_id == "b2"] == [None, False]


# ---- search attacks: one attempt stands for a whole search ----------------------------------------------------


def _pair_config(tmp_path, depth=1) -> EvalConfig:
    # batch_size 16 (the default) holds every final attempt of the 5 behaviors: a cheap attack would wait for all
    return _config(tmp_path, attacks=("pair",), batch_size=16,
                   attack_params={"pair": {"n_streams": 1, "depth": depth, "lenient": True}})  # fmt: skip


class _Pair:
    """A fake target that is also PAIR's attacker (empty attacker mapping): numbered attacker draws, refusals."""

    def __init__(self):
        self.draws = 0

    def __call__(self, conversation):
        if conversation[0]["role"] == "system":  # the attacker
            self.draws += 1
            return json.dumps({"prompt": f"draw {self.draws} for {conversation[0]['content'][100:160]}"})
        return "I refuse"


def _attacker_calls(fake):
    return sum(c[0]["role"] == "system" for c in fake.conversations)


def test_an_interrupted_search_attack_keeps_every_search_it_finished(tmp_path):
    # calls per behavior: the attacker, the search's target query, the final answer; b2's attacker call is the 7th
    crashing = ScriptedChatModel(_Pair(), interrupt_after=7)
    with pytest.raises(KeyboardInterrupt):
        run_eval(_pair_config(tmp_path), chat_model=crashing, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    assert [r["behavior_id"] for r in _records(tmp_path)] == ["b0", "b1"]  # answered before the next search
    resumed = ScriptedChatModel(_Pair())
    run_eval(_pair_config(tmp_path), chat_model=resumed, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    assert _attacker_calls(resumed) == 3  # b2..b4 searched; b0 and b1 not again
    assert sorted(r["behavior_id"] for r in _records(tmp_path)) == [f"b{i}" for i in range(5)]


def test_a_failed_final_generation_is_retried_from_its_record_without_searching_again(tmp_path):
    pair, asked = _Pair(), []

    def fails_once(conversation):  # b0's final answer fails: its third target query, after two search rounds
        if conversation[0]["role"] == "user":
            asked.append(conversation)
        return Completion("", error="HTTP 503") if len(asked) == 3 and conversation is asked[-1] else pair(conversation)

    first = ScriptedChatModel(fails_once)
    run_eval(_pair_config(tmp_path, depth=2), chat_model=first, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    [failed] = [r for r in _records(tmp_path) if r["completion"]["error"]]
    assert failed["behavior_id"] == "b0"
    healed = ScriptedChatModel(_Pair())  # would draw other prompts, were the search run again
    run_eval(_pair_config(tmp_path, depth=2), chat_model=healed, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    assert _attacker_calls(healed) == 0 and healed.n_generated == 1  # the recorded prompt, answered again
    assert healed.conversations[0] == tuple(failed["messages"])
    retried = _records(tmp_path)[-1]
    assert retried["behavior_id"] == "b0" and retried["completion"]["error"] is None
    assert (retried["messages"], retried["attempt_meta"]) == (failed["messages"], failed["attempt_meta"])


class _DownJudge(KeywordJudge):
    """The keyword judge behind an endpoint that is down for the answers listed in ``down``."""

    def __init__(self, down=()):
        super().__init__()
        self.down, self.seen = set(down), []

    def score(self, behaviors, responses):
        self.seen += list(responses)
        return [Verdict(self.name, None, error="judge model failed: HTTP 503") if r in self.down else v
                for r, v in zip(responses, super().score(behaviors, responses))]  # fmt: skip


def test_a_failed_verdict_is_judged_again_on_resume_without_generating(tmp_path):
    # batches of 4: the first (direct b0..b3) has two failed verdicts of four, not most, so the run goes on
    config = _config(tmp_path, attacks=("direct", "prefill"), batch_size=4)
    run_eval(config, chat_model=ScriptedChatModel(_reply), behaviors=BEHAVIORS,
             judges={"kw": _DownJudge(down={"HARMFUL", "Sure, here is 2 HARMFUL details"})})  # fmt: skip
    before = {(r["behavior_id"], r["attack"]): r for r in _records(tmp_path)}
    assert before[("b0", "direct")]["verdicts"]["kw"]["harmful"] is None
    idle, judge = ScriptedChatModel(_reply), _DownJudge()
    summary = run_eval(config, chat_model=idle, behaviors=BEHAVIORS, judges={"kw": judge})
    assert idle.n_generated == 0  # the answers are kept
    # b0, b1 direct and b2 prefill (its prefill included, as the judges saw it), and b4's garbled prefill answer
    assert sorted(judge.seen) == ["HARMFUL", "HARMFUL", "Sure, here is 2 HARMFUL details", "Sure, here is 4??? garbled"]
    after = {(r["behavior_id"], r["attack"]): r for r in _records(tmp_path)}
    assert {k: v for k, v in after[("b0", "direct")]["verdicts"]["kw"].items() if k != "judge_digest"} == \
        {"harmful": True, "error": None, "raw": ""}
    assert after[("b2", "prefill")]["completion"] == before[("b2", "prefill")]["completion"]
    assert summary.attacks["direct"]["kw"].n == 5 and summary.attacks["direct"]["kw"].asr == pytest.approx(0.4)
    # b4's verdict fails the same way every time: judged again, but not written again
    assert len(_records(tmp_path)) == 13
    config.retry_errors = False
    off, judge = ScriptedChatModel(_reply), _DownJudge()
    run_eval(config, chat_model=off, behaviors=BEHAVIORS, judges={"kw": judge})
    assert off.n_generated == 0 and judge.seen == []


def test_a_verdict_judged_again_on_resume_is_handed_the_answer_as_it_was_first(tmp_path):
    def reply(conversation):  # b2 with the backend's meta (cut at the token limit)
        text = _reply(conversation)
        return Completion(text, meta={"finish": "length", "tokens": 7}) if user_text(conversation)[-1] == "2" else text

    # one batch of 16 holds all ten attempts: each is recorded, unscored, before the down judge stops the run
    config = _config(tmp_path, attacks=("direct", "prefill"), batch_size=16)
    first = HandedJudge(down=True)
    with pytest.raises(JudgeFailing, match="10 of 10 verdicts of judge 'kw'"):
        run_eval(config, chat_model=ScriptedChatModel(reply), behaviors=BEHAVIORS, judges={"kw": first})
    again = HandedJudge()
    run_eval(config, chat_model=ScriptedChatModel(reply), behaviors=BEHAVIORS, judges={"kw": again})
    # the prefill in front of the continuation and named in the meta, with the answer's own meta
    assert ("b2", "Sure, here is 2 HARMFUL details", None,
            {"finish": "length", "tokens": 7, "prefill": "Sure, here is 2"}) in again.handed
    assert len(again.handed) == 10 and sorted(again.handed, key=str) == sorted(first.handed, key=str)


def test_summary_file_is_the_typed_summary_and_old_records_resume(tmp_path):
    from safealign.io.summaries import EvalSummary

    config = _config(tmp_path, attacks=("direct",))
    summary = run_eval(config, chat_model=ScriptedChatModel(_reply), behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert EvalSummary.from_json(on_disk) == summary and on_disk["attacks"]["direct"]["kw"]["n"] == 5
    path = tmp_path / "run" / "records.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(r.pop("schema_version") == 1 for r in rows)  # as written before records were typed
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = ScriptedChatModel(_reply)
    resumed = run_eval(config, chat_model=again, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    assert again.n_generated == 0 and resumed.attacks == summary.attacks


def test_truncated_last_line_is_tolerated(tmp_path):
    config = _config(tmp_path, attacks=("direct",))
    run_eval(config, chat_model=ScriptedChatModel(_reply), behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    path = tmp_path / "run" / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])  # a write cut off mid-line
    again = ScriptedChatModel(_reply)
    run_eval(config, chat_model=again, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    assert again.n_generated == 1
    # the fragment was dropped before the retried record was appended: every line is readable again
    readable = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(r["behavior_id"] for r in readable) == [f"b{i}" for i in range(5)]


def test_unknown_names_fail_before_any_work(tmp_path):
    fake = ScriptedChatModel(_reply)
    with pytest.raises(ValueError, match=f"unknown attack 'gbg'; valid names: {', '.join(ATTACKS.names())}$"):
        run_eval(_config(tmp_path, attacks=("gbg",)), chat_model=fake, behaviors=BEHAVIORS)
    config = _config(tmp_path, attacks=("direct",))
    config.judges = ["refusal", "harmbench_cls"]
    with pytest.raises(ValueError, match=f"unknown judge 'harmbench_cls'; valid names: {', '.join(JUDGES.names())}$"):
        run_eval(config, chat_model=fake, behaviors=BEHAVIORS)
    config = _config(tmp_path, attacks=("direct",))
    config.judges = ["refusal"]
    config.attack_params = {"gcgg": {"steps": 3}}
    with pytest.raises(ValueError, match=r"attack_params given for \['gcgg'\], which are not registered"):
        run_eval(config, chat_model=fake, behaviors=BEHAVIORS)
    assert fake.calls == []


def test_params_of_a_known_attack_the_run_leaves_out_are_ignored_with_a_warning(tmp_path, caplog):
    config = _config(tmp_path, attacks=("direct",))  # e.g. a breadth config narrowed with attacks=[direct]
    config.judges, config.attack_params = ["refusal"], {"gcg": {"steps": 3}}
    summary = run_eval(config, chat_model=ScriptedChatModel(_reply), behaviors=BEHAVIORS)
    assert list(summary.attacks) == ["direct"]
    assert "attack_params given for ['gcg'], which are not in this run (direct): ignored" in caplog.text


def test_wilson_interval_golden_values():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 10)  # centre = z²/2n / (1+z²/n) = .19207/1.38415; half equal to it
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-5)
    lo, hi = wilson_interval(50, 100)
    assert (lo + hi) / 2 == pytest.approx(0.5)
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 103.84), abs=1e-3)


def test_per_template_breakdown(tmp_path):
    config = _config(tmp_path, attacks=("template",), batch_size=16)
    config.attack_params = {"template": {"names": ["prefix_injection", "style_bullet_only"]}}
    # only the prefix-injection wrapper works, and only on b0..b2
    def reply(c):
        text = user_text(c)
        return "HARMFUL" if "Absolutely!" in text and any(f"behavior {i}" in text for i in range(3)) else "no"

    summary = run_eval(config, chat_model=ScriptedChatModel(reply), behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    per = summary.by_attempt["template"]["kw"]
    assert per["prefix_injection"].asr == pytest.approx(0.6) and per["style_bullet_only"].asr == 0.0
    assert summary.attacks["template"]["kw"].asr == pytest.approx(0.6) and per["prefix_injection"].n == 5


def test_a_backend_failing_most_of_the_first_batch_stops_the_run(tmp_path):
    config = _config(tmp_path, attacks=("direct",), batch_size=4)
    broken = ScriptedChatModel(lambda c: ConnectionError("connection refused") if not user_text(c).endswith("3")
                               else "ok", name="endpoint")  # fmt: skip
    with pytest.raises(BackendFailing, match=r"3 of 4 generations of the first batch failed on backend "
                                             r"ScriptedChatModel .*first error: connection refused"):  # fmt: skip
        run_eval(config, chat_model=broken, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    assert len(broken.calls) == 1  # no later batch was sent to the broken backend
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["complete"] is False and len(_records(tmp_path)) == 4  # the failed batch is kept, as data


def test_half_a_failed_first_batch_and_later_failures_do_not_stop_the_run(tmp_path):
    config = _config(tmp_path, attacks=("direct",), batch_size=2)
    # first batch b0, b1: one of two fails (not more than half); b2..b4 all fail later: recorded, unscored
    flaky = ScriptedChatModel(lambda c: "ok" if user_text(c).endswith("0") else TimeoutError("timed out"))
    summary = run_eval(config, chat_model=flaky, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    assert summary.complete is True and summary.attacks["direct"]["kw"].unscored == 4


def test_a_run_smaller_than_one_batch_is_checked_when_its_attacks_end(tmp_path):
    """A run of fewer generations than generation.batch_size never fills a first batch: a broken backend must still
    stop it, not leave a "complete" run of unscored records."""
    config = _config(tmp_path, attacks=("direct",), batch_size=16)
    broken = ScriptedChatModel(lambda c: ConnectionError("connection refused"), name="endpoint")
    with pytest.raises(BackendFailing, match=r"5 of 5 generations of the first batch failed"):
        run_eval(config, chat_model=broken, behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["complete"] is False


def test_the_first_batch_is_gathered_over_small_calls():
    from safealign.eval.pipeline import FirstBatchCheck

    ok, bad = Completion("ok"), Completion("", error="HTTP 503")
    check = FirstBatchCheck("fake", size=4)
    check([bad])  # one search's answer: one failure alone does not stop the run
    check([ok, ok])
    check([ok, bad])  # 2 of the first 5 (whole calls) failed: not most of them; later calls are not checked
    check([bad, bad, bad])
    failing = FirstBatchCheck("fake", size=4)
    failing([bad])
    failing([bad])
    with pytest.raises(BackendFailing, match="3 of 4 generations of the first batch failed on backend fake"):
        failing([bad, ok])


def test_a_judge_failing_most_of_the_first_batch_stops_the_run(tmp_path):
    """A judge that fails on every verdict (wrong URL or key) must not run to the end with n=0 and complete: true;
    the batch's records are kept, so a re-run with the judge fixed judges them again (retry_errors)."""
    config = _config(tmp_path, attacks=("direct",), batch_size=4)
    fine = ScriptedChatModel(lambda c: "ok")
    judges = {"kw": KeywordJudge(), "remote": HandedJudge(down=True)}
    with pytest.raises(JudgeFailing, match=r"4 of 4 verdicts of judge 'remote' on the first batch's answers failed; "
                                           r"first error: judge model failed: HTTP 503"):  # fmt: skip
        run_eval(config, chat_model=fine, behaviors=BEHAVIORS, judges=judges)
    assert len(fine.calls) == 1 and len(_records(tmp_path)) == 4
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["complete"] is False
    summary = run_eval(config, chat_model=ScriptedChatModel(lambda c: "ok"), behaviors=BEHAVIORS,
                       judges={"kw": KeywordJudge(), "remote": HandedJudge()})  # fmt: skip
    assert summary.complete is True and summary.attacks["direct"]["remote"].n == 5


def test_the_first_batch_check_counts_a_judges_verdicts_on_answers_only():
    """A verdict on a failed generation is the backend's failure, already checked; a judge that scores some
    behaviors only (copyright: the hash_check ones) is checked on those."""
    from safealign.eval.pipeline import FirstBatchCheck

    ok, bad = Completion("ok"), Completion("", error="HTTP 503")
    failed = Verdict("j", None, error="generation failed: HTTP 503")
    check = FirstBatchCheck("fake", size=4)
    check([ok, bad, ok, ok], {"j": [Verdict("j", False), failed, Verdict("j", None, error="parse"),
                                    Verdict("j", True)]})  # fmt: skip  # 1 of 3: fine
    failing = FirstBatchCheck("fake", size=2)
    failing([ok], {"j": [Verdict("j", None, error="unparseable")]})
    with pytest.raises(JudgeFailing, match=r"2 of 2 verdicts of judge 'j' .*first error: unparseable"):
        failing([ok], {"j": [Verdict("j", None, error="HTTP 401")]})


class _OnlyB0(KeywordJudge):
    """Scores b0 alone, as the copyright judge scores hash_check behaviors alone: every other verdict an error."""

    def covers(self, behavior: Behavior) -> bool:
        return behavior.id == "b0"

    def score(self, behaviors, responses):
        return [Verdict(self.name, False) if b.id == "b0" else Verdict(self.name, None, error="not mine")
                for b in behaviors]  # fmt: skip


def test_a_judge_that_scores_some_behaviors_only_does_not_stop_the_run(tmp_path):
    config = _config(tmp_path, attacks=("direct",), batch_size=4)
    summary = run_eval(config, chat_model=ScriptedChatModel(lambda c: "ok"), behaviors=BEHAVIORS,
                       judges={"kw": KeywordJudge(), "some": _OnlyB0()})  # fmt: skip
    assert summary.complete is True and summary.attacks["direct"]["some"].n == 1


class _Strict(KeywordJudge):
    """The keyword judge after a change of its code that its describe() shows (another rubric, say)."""

    def describe(self):
        return {"rubric_sha256": "changed"}


def test_a_resume_under_a_changed_judge_warns(tmp_path, caplog):
    """Records do not hold a judge's code, so each new verdict carries the digest of its judge's describe() (less
    a run's counts); a resume whose judge is described otherwise warns, naming how many verdicts differ."""
    config = _config(tmp_path, attacks=("direct",), batch_size=2)
    with caplog.at_level("WARNING", logger="safealign.eval.pipeline"):
        for _ in range(2):  # two batches recorded, each run stopped (Ctrl-C) in the next one
            with pytest.raises(KeyboardInterrupt):
                run_eval(config, chat_model=ScriptedChatModel(_reply, interrupt_after=2), behaviors=BEHAVIORS,
                         judges={"kw": KeywordJudge()})  # fmt: skip
    assert "described otherwise" not in caplog.text  # the same judge: nothing to say
    assert len({r["verdicts"]["kw"]["judge_digest"] for r in _records(tmp_path)}) == 1
    with caplog.at_level("WARNING", logger="safealign.eval.pipeline"):
        run_eval(config, chat_model=ScriptedChatModel(_reply), behaviors=BEHAVIORS, judges={"kw": _Strict()})
    assert "4 recorded verdicts of judge 'kw' were made by a judge described otherwise" in caplog.text
    digests = [r["verdicts"]["kw"]["judge_digest"] for r in _records(tmp_path)]
    assert len(digests) == 5 and len(set(digests[:4])) == 1 and digests[4] != digests[0]


def test_a_judge_model_retrained_in_place_is_a_changed_judge(tmp_path, tiny_tokenizer, caplog, monkeypatch):
    """A classifier judge names its model by a folder's path: retrained in place, it keeps its params and the run's
    fingerprint. Its weights are in each verdict's judge_digest, so a resume tells the verdicts the old weights made
    from the new ones and warns about them, as after a change of the judge's code, instead of mixing both silently;
    the refusal judge, which runs no model, keeps the digest its committed verdicts carry (results/)."""
    from safealign.eval.defenses import base as defenses
    from safealign.eval.pipeline import judge_digest
    from safealign.models.tiny import tiny_model

    hashed = []  # the judge's weights are hashed once per run, not per batch (each digests at start and per batch)
    identity = defenses._model_identity
    monkeypatch.setattr(defenses, "_model_identity", lambda spec: hashed.append(spec) or identity(spec))
    folder = tmp_path / "classifier"

    def save(seed):
        tiny_model(seed=seed).save_pretrained(folder)
        tiny_tokenizer.save_pretrained(folder)

    config = EvalConfig(attacks=["direct"], judges=["classifier"], output_dir=str(tmp_path / "run"),
                        judge_params={"classifier": {"model": str(folder), "format": "strongreject-finetuned"}})
    config.generation.batch_size = 2
    save(0)
    with caplog.at_level("WARNING", logger="safealign.eval.pipeline"):
        for _ in range(2):  # a batch recorded, each run stopped (Ctrl-C) in the next one: the same weights
            with pytest.raises(KeyboardInterrupt):
                run_eval(config, chat_model=ScriptedChatModel(_reply, interrupt_after=2), behaviors=BEHAVIORS)
    assert "described otherwise" not in caplog.text
    old = [r["verdicts"]["classifier"] for r in _records(tmp_path)]
    assert len(old) == 4 and len({v["judge_digest"] for v in old}) == 1
    save(1)  # retrained: other weights at the same path, the same params
    with caplog.at_level("WARNING", logger="safealign.eval.pipeline"):
        run_eval(config, chat_model=ScriptedChatModel(_reply), behaviors=BEHAVIORS)
    assert "4 recorded verdicts of judge 'classifier' were made by a judge described otherwise" in caplog.text
    new = [r["verdicts"]["classifier"] for r in _records(tmp_path)][4:]
    assert len(new) == 1 and new[0]["judge_digest"] != old[0]["judge_digest"]
    assert hashed == [str(folder)] * 3
    assert judge_digest(build_judge("refusal")) == "ab0785aa7d8dd742"  # as in results/*/records.jsonl


def test_a_tiered_judges_digest_leaves_out_its_counts():
    from safealign.eval.pipeline import judge_digest

    tiered = build_judge("tiered", {"then": "refusal", "then_params": {"list": "smoothllm"}})
    before = judge_digest(tiered)
    tiered(BEHAVIORS[:2], [Completion("HARMFUL"), Completion("I cannot")])
    assert tiered.describe()["answers_judged"] == 2 and judge_digest(tiered) == before


def test_a_foreign_records_file_is_named_with_its_line(tmp_path):
    """A records.jsonl whose line is not an attempt record (edited by hand, or another tool's file) stops
    the resume before any work, naming file and line; a damaged middle line likewise."""
    from safealign.eval.records import RecordStore

    path = tmp_path / "records.jsonl"
    path.write_text('{"behavior_id": "b0", "attack": "direct", "attempt_id": "0"}\n{"id": "x"}\n')
    with pytest.raises(UserError, match=r"records\.jsonl:2: missing field\(s\) behavior_id, attack"):
        RecordStore(path)
    path.write_text('{"behavior_id": "b0", "att\n{"behavior_id": "b1", "attack": "direct", "attempt_id": "0"}\n')
    with pytest.raises(UserError, match=r"records\.jsonl:1: invalid JSON"):
        RecordStore(path)


def test_summary_names_the_weights_that_ran(tmp_path):
    from safealign.models.identity import model_identity
    from safealign.models.tiny import tiny_model, tiny_tokenizer

    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    config = _config(tmp_path, attacks=("direct",))
    config.model.name, config.generation.max_new_tokens = str(folder), 2
    summary = run_eval(config, behaviors=BEHAVIORS[:2], judges={"kw": KeywordJudge()})
    expected = model_identity(str(folder))
    assert summary.model_identity == expected and expected["fingerprint"].startswith("sha256:")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["model_identity"] == expected


def test_a_handed_in_models_parameters_are_hashed_once(tmp_path, monkeypatch):
    from safealign.models import identity
    from safealign.models.tiny import tiny_model, tiny_tokenizer

    calls = []
    real = identity.parameters_fingerprint
    monkeypatch.setattr(identity, "parameters_fingerprint", lambda m: calls.append(1) or real(m))
    model = tiny_model()  # no load spec: identified by hashing its parameters
    config = _config(tmp_path, attacks=("direct",))
    config.generation.max_new_tokens = 2
    summary = run_eval(config, model, tiny_tokenizer(), behaviors=BEHAVIORS[:2], judges={"kw": KeywordJudge()})
    assert len(calls) == 1  # the run directory's fingerprint and the summary share one hash
    assert summary.model_identity["kind"] == "in-memory"
    assert summary.model_identity["fingerprint"] == real(model)


def test_summary_of_an_opaque_backend_says_its_weights_are_unknown(tmp_path):
    summary = run_eval(_config(tmp_path, attacks=("direct",)), chat_model=ScriptedChatModel(lambda c: "ok"),
                       behaviors=BEHAVIORS, judges={"kw": KeywordJudge()})  # fmt: skip
    assert summary.model_identity == {"spec": "ScriptedChatModel", "kind": "unknown", "fingerprint": None}
