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
