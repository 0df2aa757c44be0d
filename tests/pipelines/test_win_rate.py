"""``safealign diagnose win-rate`` over two evaluations' over-refusal records."""

from __future__ import annotations

import json

import pytest

from eval.fakes import ScriptedChatModel

from safealign.errors import UserError
from safealign.pipelines.win_rate import format_win_rate, win_rate


def _eval_dir(root, name, answers):
    folder = root / name / "helpfulness" / "overrefusal"
    folder.mkdir(parents=True)
    rows = [{"id": pid, "prompt": f"question {pid}", "completion": text, "error": None} for pid, text in answers]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / name


def test_scripted_judge_prefers_the_longer_answer_in_both_orders(tmp_path):
    before = _eval_dir(tmp_path, "before", [("a", "short"), ("b", "a long and useful answer"), ("c", "same")])
    after = _eval_dir(tmp_path, "after", [("a", "a much longer answer"), ("b", "no"), ("c", "same")])

    def judge(conversation):
        text = conversation[-1]["content"]
        first = text.split("[Answer A]\n<<<\n")[1].split("\n>>>")[0]
        second = text.split("[Answer B]\n<<<\n")[1].split("\n>>>")[0]
        return "[[C]]" if len(first) == len(second) else "[[A]]" if len(first) > len(second) else "[[B]]"

    summary = win_rate(before, after, ScriptedChatModel(judge), judge_name="length")
    # a: win (1), b: loss (0), c: tie (½) -> (1 + 0 + 0.5) / 3 = 0.5
    assert summary.win_rate.mean == pytest.approx(0.5) and (summary.wins, summary.ties, summary.losses) == (1, 1, 1)
    written = json.loads((after / "helpfulness" / "pairwise" / "summary.json").read_text())
    assert written["judge"] == "length" and written["win_rate"]["n"] == 3
    records = (after / "helpfulness" / "pairwise" / "records.jsonl").read_text().splitlines()
    assert [json.loads(r)["outcome"] for r in records] == ["win", "loss", "tie"]
    assert format_win_rate(summary).startswith("win rate vs base: 0.500 [")


def test_missing_records_name_the_file(tmp_path):
    with pytest.raises(UserError, match="no over-refusal records"):
        win_rate(tmp_path / "nope", tmp_path / "nope", ScriptedChatModel(lambda c: "[[A]]"))


def test_cli_with_a_random_model_as_judge_counts_every_verdict_unscored(tmp_path, capsys):
    from safealign.cli import main

    before = _eval_dir(tmp_path, "before", [("a", "Mix flour and water."), ("b", "Run kill PID.")])
    after = _eval_dir(tmp_path, "after", [("a", "I can't help."), ("b", "Use kill -9.")])
    argv = ["diagnose", "win-rate", "--before", str(before), "--after", str(after), "--judge-backend", "hf",
            "--judge-model", "tiny-random", "--max-new-tokens", "4"]
    assert main(argv) == 0
    summary = json.loads((after / "helpfulness" / "pairwise" / "summary.json").read_text())
    # 4 random tokens never spell [[A]]/[[B]]/[[C]]: both prompts unscored, no win rate
    assert summary["win_rate"] == {"mean": None, "ci95": None, "n": 0, "unscored": 2}
    assert "2 unscored" in capsys.readouterr().out


def test_reward_win_rate_by_a_scripted_reward_with_ties_and_unscored():
    from safealign.eval.helpfulness.pairwise import reward_win_rate
    from safealign.eval.helpfulness.retention import AnswerPair

    pairs = [AnswerPair("a", "q", base="ok", trained="a longer answer"),
             AnswerPair("b", "q", base="long base", trained="no"),
             AnswerPair("c", "q", base="abc", trained="abd"), AnswerPair("d", "q", base="nan", trained="x")]

    def score(conversations, answers):  # reward = length, NaN for the answer "nan"
        assert len(conversations) == len(answers) == 8 and conversations[0][-1]["content"] == "q"
        return [float("nan") if a == "nan" else float(len(a)) for a in answers]

    summary, records = reward_win_rate(score, pairs, judge_name="length", tie_margin=0.5)
    assert [r["outcome"] for r in records] == ["win", "loss", "tie", None]
    assert (summary.wins, summary.losses, summary.ties) == (1, 1, 1) and summary.win_rate.unscored == 1
    assert summary.win_rate.mean == pytest.approx(0.5)  # (1 + 0 + ½) / 3
    difference = summary.extra["mean_reward_difference"]  # (15 − 2) + (2 − 9) + (3 − 3) over 3
    assert difference["mean"] == pytest.approx(2.0) and difference["n"] == 3 and difference["unscored"] == 1


def test_the_same_answer_from_both_models_is_a_tie_whatever_its_two_rewards():
    """Both answers are scored in one call but in different batches, whose padding can move a bf16 model's
    reward by more than any small margin; the same text is the same answer, so it is a tie."""
    from safealign.eval.helpfulness.pairwise import reward_win_rate
    from safealign.eval.helpfulness.retention import AnswerPair

    pairs = [AnswerPair("a", "q", base="Paris.", trained="Paris."), AnswerPair("b", "q", base="no", trained="yes")]

    def score(conversations, answers):  # the second scoring of a text comes out 0.01 lower
        seen, rewards = set(), []
        for answer in answers:
            rewards.append(len(answer) - (0.01 if answer in seen else 0.0))
            seen.add(answer)
        return rewards

    summary, records = reward_win_rate(score, pairs, judge_name="noisy", tie_margin=1e-4)
    assert [r["outcome"] for r in records] == ["tie", "win"]
    assert records[0]["reward_base"] < records[0]["reward_trained"]  # the rewards recorded as they came
    assert (summary.wins, summary.ties, summary.losses) == (1, 1, 0)


def test_an_empty_answer_is_unscored_by_a_reward_model_not_scored_at_the_generation_header():
    """An empty answer encoded as "" is read at the prompt's assistant header, a sequence no reward model was trained
    on: such a prompt is unscored (counted), and the empty answer never reaches the scorer."""
    from safealign.eval.helpfulness.pairwise import reward_win_rate
    from safealign.eval.helpfulness.retention import AnswerPair

    pairs = [AnswerPair("a", "q", base="ok", trained="a longer answer"), AnswerPair("b", "q", base="fine", trained=""),
             AnswerPair("c", "q", base="  ", trained="yes")]
    seen = []

    def score(conversations, answers):
        seen.extend(answers)
        return [float(len(a)) for a in answers]

    summary, records = reward_win_rate(score, pairs, judge_name="length")
    assert [r["outcome"] for r in records] == ["win", None, None] and summary.win_rate.unscored == 2
    assert records[1]["reward_trained"] is None and records[1]["unscored"] == "empty trained answer"
    assert records[2]["reward_base"] is None and records[2]["unscored"] == "empty base answer"
    assert sorted(seen) == ["a longer answer", "ok"] and summary.win_rate.n == 1
    assert summary.extra["mean_reward_difference"]["unscored"] == 2


@pytest.mark.parametrize("kind", ["sequence-classifier", "safealign-reward-folder"])
def test_cli_reward_model_win_rate(tmp_path, capsys, kind):
    import torch
    from transformers import LlamaForSequenceClassification

    from safealign.cli import main
    from safealign.eval.reward_scorer import load_reward_scorer
    from safealign.models.tiny import tiny_model, tiny_tokenizer
    from safealign.eval.reward_model import ScalarRewardModel, save_reward_model

    model_dir = tmp_path / "rm"
    if kind == "sequence-classifier":
        torch.manual_seed(0)
        config = tiny_model().config
        config.num_labels = 1
        LlamaForSequenceClassification(config).save_pretrained(model_dir)
        tiny_tokenizer().save_pretrained(model_dir)
    else:
        save_reward_model(ScalarRewardModel(tiny_model()), tiny_tokenizer(), model_dir, kind="reward",
                          base="tiny-random")
    before = _eval_dir(tmp_path, "before", [("a", "Mix flour and water."), ("b", "Run kill PID."), ("c", "Yes.")])
    after = _eval_dir(tmp_path, "after", [("a", "I can't help."), ("b", "Use kill -9."), ("c", "Yes.")])
    assert main(["diagnose", "win-rate", "--before", str(before), "--after", str(after),
                 "--reward-model", str(model_dir)]) == 0
    out = after / "helpfulness" / "pairwise_reward"
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    score = load_reward_scorer(str(model_dir))  # the rewards recomputed one answer at a time
    for record, (pid, trained, base) in zip(records, [("a", "I can't help.", "Mix flour and water."),
                                                      ("b", "Use kill -9.", "Run kill PID."), ("c", "Yes.", "Yes.")]):
        conversation = [({"role": "user", "content": f"question {pid}"},)]
        assert record["reward_trained"] == pytest.approx(score(conversation, [trained])[0], abs=1e-4)
        assert record["reward_base"] == pytest.approx(score(conversation, [base])[0], abs=1e-4)
    assert records[2]["outcome"] == "tie"  # the same answer
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"] == f"reward model {model_dir}" and summary["win_rate"]["n"] == 3
    assert "mean reward difference (trained − base)" in capsys.readouterr().out
    assert not (after / "helpfulness" / "pairwise").exists()  # an LLM judge's results are left alone


def test_reward_model_that_cannot_load_is_a_user_error(tmp_path, capsys):
    from safealign.cli import main

    before = _eval_dir(tmp_path, "before", [("a", "x")])
    after = _eval_dir(tmp_path, "after", [("a", "y")])
    assert main(["diagnose", "win-rate", "--before", str(before), "--after", str(after),
                 "--reward-model", str(tmp_path / "no_such_model")]) == 2
    assert "--reward-model: cannot load" in capsys.readouterr().err


def test_runs_over_different_prompt_files_with_overlapping_ids_are_refused(tmp_path):
    before = _eval_dir(tmp_path, "before", [("a", "short"), ("b", "long")])
    after = _eval_dir(tmp_path, "after", [("a", "longer"), ("b", "no")])
    records = after / "helpfulness" / "overrefusal" / "records.jsonl"
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    rows[1]["prompt"] = "another file's question b"
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = ScriptedChatModel(lambda c: "[[A]]")
    with pytest.raises(UserError) as raised:
        win_rate(before, after, judge)
    message = str(raised.value)
    assert str(before / "helpfulness" / "overrefusal" / "records.jsonl") in message and str(records) in message
    assert "id 'b'" in message and "'prompt'" in message
    assert not (after / "helpfulness" / "pairwise").exists()  # nothing judged, nothing written


def test_a_cost_model_is_refused_as_the_reward_model(tmp_path, capsys):
    """A cost model scores unsafe answers high: judged by it, the more harmful evaluation would win."""
    from safealign.cli import main

    folder = tmp_path / "cost_rm"
    folder.mkdir()
    (folder / "reward_model.json").write_text(json.dumps({"kind": "cost", "base": "tiny-random"}))
    before = _eval_dir(tmp_path, "before", [("a", "x")])
    after = _eval_dir(tmp_path, "after", [("a", "y")])
    assert main(["diagnose", "win-rate", "--before", str(before), "--after", str(after),
                 "--reward-model", str(folder)]) == 2
    assert f"--reward-model: {folder} is a cost model" in capsys.readouterr().err
    assert not (after / "helpfulness" / "pairwise_reward").exists()


def _longer(conversation):
    text = conversation[-1]["content"]
    first = text.split("[Answer A]\n<<<\n")[1].split("\n>>>")[0]
    second = text.split("[Answer B]\n<<<\n")[1].split("\n>>>")[0]
    return "[[C]]" if len(first) == len(second) else "[[A]]" if len(first) > len(second) else "[[B]]"


def test_a_second_judge_is_refused_rather_than_overwrite_the_first_judges_results(tmp_path, capsys):
    """Every judge wrote <after>/helpfulness/pairwise/: judging with X, then Y, silently lost X's records."""
    from safealign.cli import main

    before = _eval_dir(tmp_path, "before", [("a", "short"), ("b", "a long and useful answer")])
    after = _eval_dir(tmp_path, "after", [("a", "a much longer answer"), ("b", "no")])
    out = after / "helpfulness" / "pairwise"
    win_rate(before, after, ScriptedChatModel(_longer), judge_name="judge-x")
    kept = (out / "records.jsonl").read_text()
    other = ScriptedChatModel(lambda c: "[[A]]")
    with pytest.raises(UserError) as raised:
        win_rate(before, after, other, judge_name="judge-y")
    message = str(raised.value)
    assert str(out) in message and "'judge-x'" in message and "'judge-y'" in message and "--output-dir" in message
    assert other.calls == []  # refused before anything was judged
    assert json.loads((out / "summary.json").read_text())["judge"] == "judge-x"
    assert (out / "records.jsonl").read_text() == kept
    win_rate(before, after, ScriptedChatModel(_longer), judge_name="judge-x")  # the same judge again: rewritten
    elsewhere = tmp_path / "by-judge-y"
    summary = win_rate(before, after, other, judge_name="judge-y", output_dir=elsewhere)
    assert summary.judge == "judge-y" and json.loads((elsewhere / "summary.json").read_text())["judge"] == "judge-y"
    assert json.loads((out / "summary.json").read_text())["judge"] == "judge-x"
    argv = ["diagnose", "win-rate", "--before", str(before), "--after", str(after), "--judge-backend", "hf",
            "--judge-model", "tiny-random", "--max-new-tokens", "2"]
    assert main(argv) == 2 and "'judge-x'" in capsys.readouterr().err
    assert main([*argv, "--output-dir", str(tmp_path / "by-tiny")]) == 0
    assert json.loads((tmp_path / "by-tiny" / "summary.json").read_text())["judge"] == "tiny-random"


def test_a_second_reward_model_is_refused_before_it_loads(tmp_path):
    from safealign.pipelines.win_rate import reward_win_rate

    before = _eval_dir(tmp_path, "before", [("a", "x")])
    after = _eval_dir(tmp_path, "after", [("a", "y")])
    out = after / "helpfulness" / "pairwise_reward"
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"judge": "reward model rm-a", "win_rate": None}))
    with pytest.raises(UserError, match=r"pairwise_reward.*'reward model rm-a'.*'reward model .*no_such_model'"):
        reward_win_rate(before, after, str(tmp_path / "no_such_model"))  # refused, not "cannot load"


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(tmp_path, limit):
    """-1 sliced from the end (judging 2 of 3 prompts without a word), 0 was refused as 'no benign prompt both
    answered'."""
    before = _eval_dir(tmp_path, "before", [("a", "x"), ("b", "y"), ("c", "z")])
    after = _eval_dir(tmp_path, "after", [("a", "x"), ("b", "y"), ("c", "z")])
    judge = ScriptedChatModel(lambda c: "[[C]]")
    with pytest.raises(UserError, match=rf"--limit must be >= 1, got {limit}"):
        win_rate(before, after, judge, limit=limit)
    assert not judge.calls


@pytest.mark.parametrize("flag, message", [("--limit", "--limit must be >= 1, got 0"),
                                           ("--max-new-tokens", "max_new_tokens must be >= 1, got 0")])
def test_cli_refuses_a_bad_setting_before_the_judge_loads(tmp_path, capsys, no_model_load, flag, message):
    from safealign.cli import main

    before = _eval_dir(tmp_path, "before", [("a", "x")])
    after = _eval_dir(tmp_path, "after", [("a", "y")])
    assert main(["diagnose", "win-rate", "--before", str(before), "--after", str(after), "--judge-backend", "hf",
                 "--judge-model", "tiny-random", flag, "0"]) == 2
    assert message in capsys.readouterr().err
