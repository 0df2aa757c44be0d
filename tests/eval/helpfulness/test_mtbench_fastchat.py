"""MT-Bench with FastChat's files, judge prompts and parser, against a scripted judge (garbage included)."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import pytest

from safealign.errors import UserError
from safealign.eval.backends.base import GenerationParams
from safealign.eval.helpfulness import mtbench_fastchat as fastchat
from safealign.eval.helpfulness.mtbench import load_questions, mtbench_eval
from safealign.pipelines.mtbench import format_mtbench, run_mtbench

# SHA-256 of the files at lm-sys/FastChat@0e6d3e4beaab66f4d3f93db72541a4abab8af28d (git show HEAD:<path>).
FASTCHAT = {
    "question.jsonl": ("fastchat/llm_judge/data/mt_bench/question.jsonl",
                       "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),
    "reference_answer_gpt-4.jsonl": ("fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl",
                                     "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f"),
    "judge_prompts.jsonl": ("fastchat/llm_judge/data/judge_prompts.jsonl",
                            "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FASTCHAT))
def test_shipped_files_are_fastchats_bytes(name):
    upstream, sha = FASTCHAT[name]
    assert hashlib.sha256(fastchat.data_path(name).read_bytes()).hexdigest() == sha, upstream


def test_questions_and_references_cover_mtbench():
    from safealign.eval.helpfulness.mtbench import load_questions

    rows = load_questions(fastchat.data_path("question.jsonl"))
    assert len(rows) == 80 and all(len(q["turns"]) == 2 for q in rows)
    assert set(Counter(q["category"] for q in rows).values()) == {10} and len({q["category"] for q in rows}) == 8
    refs = fastchat.builtin_references()
    need = {str(q["question_id"]) for q in rows if fastchat.needs_reference(q)}
    assert len(need) == 30 and need <= set(refs) and all(len(refs[k]) == 2 for k in need)
    fastchat.check_references(rows, refs)  # no question of a reference category is left without one
    assert {"single-v1", "single-v1-multi-turn", "single-math-v1", "single-math-v1-multi-turn"} <= set(
        fastchat.judge_prompts())


@pytest.mark.parametrize("text, expected", [
    ("Good answer.\nRating: [[7]]", 7),
    ("Rating: [[7.5]]", 7.5),  # FastChat reads the number with ast.literal_eval: decimals count
    ("Rating: [[3]] ... later [[9]]", 3),  # the first match, as re.search
    ("no double brackets, score [8]", 8),  # the backup pattern
    ("Rating: [[10]]", 10),
])
def test_fastchat_parser_reads_ratings_like_fastchat(text, expected):
    assert fastchat.parse_fastchat_rating(text) == (expected, None)


@pytest.mark.parametrize("text, reason", [
    ("I would give it a seven.", "no '[[rating]]'"),
    ("", "no '[[rating]]'"),
    ("Rating: [[N]]", "no '[[rating]]'"),
    ("\x00\ufffd garbage", "no '[[rating]]'"),
    ("Rating: [[0]]", "outside 1..10"),
    ("Rating: [[11]]", "outside 1..10"),
    ("as reported in [2023], fine", "outside 1..10"),  # FastChat would average in 2023
])
def test_fastchat_parser_leaves_garbage_unscored(text, reason):
    rating, why = fastchat.parse_fastchat_rating(text)
    assert rating is None and reason in why


QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a blog post.", "Start every sentence with A."]},
    {"question_id": 111, "category": "math", "turns": ["Area of the triangle?", "Area of the circle?"]},
    {"question_id": 121, "category": "coding", "turns": ["Write a function.", "Make it faster."]},
]
REFS = {"111": ["Area is 3", "Area is 5pi"], "121": ["def f(): ...", "use a set"]}


def judge_script(conversation):
    user = conversation[-1]["content"]
    if "Write a function." in user:
        return "I cannot decide."  # garbage -> unscored, both turns of Q121
    if "Start every sentence with A." in user:
        return "Follows the instruction. Rating: [[7.5]]"
    return "Rating: [[6]]"


def test_end_to_end_uses_fastchats_prompts_and_references(tmp_path, scripted):
    model = scripted(lambda c: f"answer to {c[-1]['content']}")
    judge = scripted(judge_script, name="gpt-4")
    summary = mtbench_eval(model, judge, QUESTIONS, GenerationParams(batch_size=3), tmp_path, progress=False,
                           judge_format="fastchat", references=REFS)
    prompts = fastchat.judge_prompts()
    by_user = {c[-1]["content"]: c for c in judge.conversations}
    assert len(judge.conversations) == 6
    # Turn 1 of a writing question: single-v1 with its own system prompt, filled exactly.
    t1 = prompts["single-v1"]
    want = t1["prompt_template"].format(question="Write a blog post.", answer="answer to Write a blog post.")
    assert by_user[want][0] == {"role": "system", "content": t1["system_prompt"]}
    # Turn 2 of a math question: the multi-turn math prompt shows both turns and both reference answers.
    t2 = prompts["single-math-v1-multi-turn"]
    want = t2["prompt_template"].format(question_1="Area of the triangle?", question_2="Area of the circle?",
                                        answer_1="answer to Area of the triangle?",
                                        answer_2="answer to Area of the circle?",
                                        ref_answer_1="Area is 3", ref_answer_2="Area is 5pi")
    assert by_user[want][0]["content"] == t2["system_prompt"]
    assert judge.calls and len(judge.calls) == 1  # one batch: every judge prompt in one generate call
    records = {r["question_id"]: r for r in map(json.loads, (tmp_path / "records.jsonl").read_text().splitlines())}
    assert records[81]["judge_prompts"] == ["single-v1", "single-v1-multi-turn"]
    assert records[111]["judge_prompts"] == ["single-math-v1", "single-math-v1-multi-turn"]
    assert records[121]["ratings"] == [None, None] and "no '[[rating]]'" in records[121]["parse_errors"][0]
    assert records[81]["ratings"] == [6, 7.5] and records[81]["judge_format"] == "fastchat"
    assert summary.by_category["writing"].mean == pytest.approx(6.75)
    assert summary.by_category["coding"].n == 0 and summary.by_category["coding"].unscored == 2
    assert summary.overall.n == 2 and summary.overall.unscored == 2  # n: questions (81, 111), not ratings
    assert summary.extra["judge_format"] == "fastchat"
    table = format_mtbench(summary)
    assert "coding" in table and "overall" in table and "turn 2" in table and "fastchat prompts" in table


def test_judge_runs_at_fastchats_settings(tmp_path, scripted):
    seen = []

    class Recording:
        name = "judge"

        def generate(self, conversations, params):
            seen.append(params)
            return scripted(lambda c: "Rating: [[5]]").generate(conversations, params)

    mtbench_eval(scripted(lambda c: "ok"), Recording(), QUESTIONS[:1], out_dir=tmp_path, progress=False,
                 judge_format="fastchat")
    assert seen[0].max_new_tokens == 2048 and seen[0].temperature == 0 and not seen[0].do_sample


def test_missing_reference_is_refused_before_anything_runs(tmp_path, scripted):
    model = scripted(lambda c: "ok")
    with pytest.raises(UserError, match="question 121 .coding. needs a reference"):
        mtbench_eval(model, scripted(lambda c: "Rating: [[5]]"), QUESTIONS, out_dir=tmp_path, progress=False,
                     judge_format="fastchat", references={"111": REFS["111"]})
    assert model.calls == []
    with pytest.raises(UserError, match="judge_format"):
        mtbench_eval(model, model, QUESTIONS, out_dir=tmp_path, progress=False, judge_format="gpt")


def test_fastchat_format_never_reads_a_questions_own_reference_field(tmp_path, scripted):
    # FastChat's question.jsonl has one-line hints in 'reference' (q102: 'The answer is "Washington, DC".');
    # FastChat's judge never reads them, so a references file lacking 102 must refuse it, not grade against the hint.
    rows = [q for q in load_questions(fastchat.data_path("question.jsonl")) if q["question_id"] in (101, 102)]
    assert rows[1]["reference"][0] == 'The answer is "Washington, DC".'
    refs = {"101": fastchat.builtin_references()["101"]}
    model = scripted(lambda c: "ok")
    with pytest.raises(UserError, match="question 102 .reasoning. needs a reference.*own 'reference' field"):
        mtbench_eval(model, scripted(lambda c: "Rating: [[5]]"), rows, out_dir=tmp_path, progress=False,
                     judge_format="fastchat", references=refs)
    assert model.calls == []
    # With a reference for 102 the judge is shown that one, never the hint; 101's GPT-4 reference replaces its hint.
    refs["102"] = ["White House is at 1600 Pennsylvania Avenue", "No"]
    judge = scripted(lambda c: "Rating: [[5]]")
    mtbench_eval(scripted(lambda c: "ok"), judge, rows, out_dir=tmp_path, progress=False, judge_format="fastchat",
                 references=refs)
    shown = "\n".join(c[-1]["content"] for c in judge.conversations)
    assert "1600 Pennsylvania" in shown and refs["101"][0] in shown
    assert 'The answer is "Washington, DC".' not in shown and rows[0]["reference"][0] not in shown
    # run_mtbench with a question file and no --references: the file's own fields are not read either.
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in rows) + "\n")
    with pytest.raises(UserError, match="question 101 .reasoning. needs a reference"):
        run_mtbench(scripted(lambda c: "ok"), judge, tmp_path / "run", questions=path, progress=False)


def test_project_format_still_shows_a_questions_own_reference(tmp_path, scripted):
    judge = scripted(lambda c: "Rating: [[5]]")
    mtbench_eval(scripted(lambda c: "ok"), judge, [{**QUESTIONS[1], "reference": ["own 3", "own 5pi"]}],
                 out_dir=tmp_path, progress=False, judge_format="project")
    assert any("[Reference answer]\nown 3" in c[-1]["content"] for c in judge.conversations)


def test_reference_files_in_both_layouts(tmp_path):
    path = tmp_path / "refs.jsonl"
    path.write_text(json.dumps({"question_id": 1, "choices": [{"index": 0, "turns": ["a", "b"]}]}) + "\n"
                    + json.dumps({"question_id": 2, "reference": ["c", "d"]}) + "\n")
    assert fastchat.load_references(path) == {"1": ["a", "b"], "2": ["c", "d"]}
    path.write_text(json.dumps({"question_id": 3, "choices": []}) + "\n")
    with pytest.raises(UserError, match="row 0: no reference turns"):
        fastchat.load_references(path)
    path.write_text(json.dumps({"reference": ["x"]}) + "\n")
    with pytest.raises(UserError, match="row 0: missing field 'question_id'"):
        fastchat.load_references(path)


@pytest.mark.parametrize("row", [
    {"question_id": 4, "choices": ["a", "b"]},  # the turns without FastChat's {"turns": [...]} around them
    {"question_id": 5, "choices": {"turns": ["a", "b"]}},  # one choice, not a list of them
    {"question_id": 6, "choices": "a"},
])
def test_a_malformed_choices_field_is_a_user_error_naming_file_row_and_field(tmp_path, row):
    path = tmp_path / "refs.jsonl"
    path.write_text(json.dumps({"question_id": 1, "reference": ["a", "b"]}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}: row 1: field 'choices' must be a list of objects"):
        fastchat.load_references(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(UserError, match="row 0: not a JSON object"):
        fastchat.load_references(path)


def test_run_mtbench_defaults_to_fastchats_questions_and_gpt4_references(tmp_path, scripted):
    judge = scripted(lambda c: "Rating: [[4]]")
    summary = run_mtbench(scripted(lambda c: "ok"), judge, tmp_path, limit=80, progress=False,
                          params=GenerationParams(batch_size=40))
    assert summary.questions == 80 and summary.overall.n == 80 and summary.overall.mean == 4
    assert set(summary.by_category) == {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem",
                                        "humanities"}
    refs = fastchat.builtin_references()
    assert any(refs["101"][0] in c[-1]["content"] for c in judge.conversations)  # GPT-4's reference is shown


def test_answers_default_to_fastchats_1024_new_tokens(tmp_path, scripted):
    """docs/judges.md: answers default to 1024 new tokens per turn, FastChat's max_new_token; without params the
    library answered with 256 (only the CLI passed 1024)."""
    model = scripted(lambda c: "ok")
    run_mtbench(model, scripted(lambda c: "Rating: [[4]]"), tmp_path / "pipeline", limit=1, progress=False)
    mtbench_eval(model, scripted(lambda c: "Rating: [[4]]"), QUESTIONS[:1], out_dir=tmp_path / "eval", progress=False)
    assert model.params and {p.max_new_tokens for p in model.params} == {1024}


def test_cli_eval_mtbench_runs_against_an_endpoint_stand_in(tmp_path, monkeypatch, capsys, scripted):
    import safealign.eval.backends as backends
    from safealign.cli import main

    def fake_build(config, **_):
        if config.name == "the-judge":
            return scripted(lambda c: "garbage" if "every sentence" in c[-1]["content"] else "Rating: [[9]]")
        return scripted(lambda c: "an answer")

    monkeypatch.setattr(backends, "build_chat_model", fake_build)
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in QUESTIONS[:1]) + "\n")
    rc = main(["eval-mtbench", "--model", "m", "--backend", "openai", "--judge-model", "the-judge",
               "--questions", str(questions), "--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0 and "writing" in out and "overall" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["judge"] == "the-judge" and summary["overall"]["n"] == 1 and summary["overall"]["unscored"] == 1


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys, scripted, limit):
    """0 would rewrite summary.json as 0 questions and -1 would run all but the last: both are mistakes."""
    import safealign.eval.backends as backends
    from safealign.cli import main

    model, judge = scripted(lambda c: "ok"), scripted(lambda c: "Rating: [[5]]")
    with pytest.raises(UserError, match=f"limit must be >= 1, got {limit}"):
        run_mtbench(model, judge, tmp_path / "out", limit=limit, progress=False)
    built = []
    monkeypatch.setattr(backends, "build_chat_model", lambda config, **_: built.append(config) or model)
    assert main(["eval-mtbench", "--model", "m", "--judge-model", "j", "--limit", str(limit),
                 "--output-dir", str(tmp_path / "out")]) == 2
    assert f"--limit must be >= 1, got {limit}" in capsys.readouterr().err
    assert model.calls == [] and judge.calls == [] and built == [] and not (tmp_path / "out").exists()


def test_rerun_with_the_other_judge_format_is_refused_until_overwrite(tmp_path, scripted):
    judge = scripted(lambda c: "Rating: [[5]]")
    mtbench_eval(scripted(lambda c: "ok"), judge, QUESTIONS[:1], out_dir=tmp_path, progress=False)
    with pytest.raises(UserError, match="judge.format: \"project\" -> \"fastchat\""):
        mtbench_eval(scripted(lambda c: "ok"), judge, QUESTIONS[:1], out_dir=tmp_path, progress=False,
                     judge_format="fastchat")
    assert len(judge.conversations) == 2  # the two scales are not comparable: nothing graded under the other one
    summary = mtbench_eval(scripted(lambda c: "ok"), judge, QUESTIONS[:1], out_dir=tmp_path, progress=False,
                           judge_format="fastchat", overwrite=True)
    assert len(judge.conversations) == 4  # two turns under each format
    assert summary.overall.n == 1 and summary.extra["judge_format"] == "fastchat"  # one question
    records = [json.loads(x) for x in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert [r["judge_format"] for r in records] == ["fastchat"]


def test_cli_refuses_another_model_or_judge_in_an_output_dir_and_records_no_key(tmp_path, monkeypatch, capsys,
                                                                                 scripted):
    from safealign.cli import main
    from safealign.eval.backends.openai_http import OpenAIChatModel

    secret = "sk-never-in-a-fingerprint"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", secret)

    def generate(self, conversations, params):  # the real endpoint models, answering without a network
        judging = self.model.startswith("judge")
        return scripted(lambda c: "Rating: [[8]]" if judging else f"{self.model} says").generate(conversations, params)

    monkeypatch.setattr(OpenAIChatModel, "generate", generate)
    questions, out = tmp_path / "q.jsonl", tmp_path / "out"
    questions.write_text(json.dumps(QUESTIONS[0]) + "\n")
    args = ["eval-mtbench", "--backend", "openai", "--questions", str(questions), "--output-dir", str(out)]
    assert main([*args, "--model", "model-a", "--judge-model", "judge-1"]) == 0
    recorded = (out / "records.jsonl").read_text()
    capsys.readouterr()
    assert main([*args, "--model", "model-b", "--judge-model", "judge-1"]) == 2
    err = capsys.readouterr().err
    assert 'model.spec: "model-a" -> "model-b"' in err and "--overwrite" in err
    assert main([*args, "--model", "model-a", "--judge-model", "judge-2"]) == 2
    assert 'judge.name: "judge-1" -> "judge-2"' in capsys.readouterr().err
    assert (out / "records.jsonl").read_text() == recorded
    assert main([*args, "--model", "model-a", "--judge-model", "judge-1", "--max-new-tokens", "1024",
                 "--batch-size", "2"]) == 0  # the same settings resume
    assert (out / "records.jsonl").read_text() == recorded
    assert main([*args, "--model", "model-b", "--judge-model", "judge-1", "--overwrite"]) == 0
    assert json.loads((out / "records.jsonl").read_text())["answers"] == ["model-b says", "model-b says"]
    assert all(secret not in (out / name).read_text() for name in ("fingerprint.json", "records.jsonl",
                                                                   "summary.json"))


def test_cli_judge_endpoint_can_come_from_its_own_environment_variables(tmp_path, monkeypatch, capsys, scripted):
    """With --backend openai --judge-backend openai the model and the judge need not share one endpoint: the judge's
    URL and key come from the variables --judge-base-url-env/--judge-api-key-env name (their names, never values)."""
    from safealign.cli import main
    from safealign.eval.backends.openai_http import OpenAIChatModel

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/model/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-model")
    monkeypatch.setenv("JUDGE_URL", "http://127.0.0.1:9/judge/v1")
    monkeypatch.setenv("JUDGE_KEY", "sk-judge")
    seen = {}

    def generate(self, conversations, params):  # the real endpoint models, answering without a network
        seen[self.model] = (self.url, self._api_key)
        return scripted(lambda c: "Rating: [[8]]" if self.model == "judge-1" else "ok").generate(conversations, params)

    monkeypatch.setattr(OpenAIChatModel, "generate", generate)
    questions, out = tmp_path / "q.jsonl", tmp_path / "out"
    questions.write_text(json.dumps(QUESTIONS[0]) + "\n")
    assert main(["eval-mtbench", "--backend", "openai", "--model", "model-a", "--judge-model", "judge-1",
                 "--judge-base-url-env", "JUDGE_URL", "--judge-api-key-env", "JUDGE_KEY",
                 "--questions", str(questions), "--output-dir", str(out)]) == 0
    assert seen == {"model-a": ("http://127.0.0.1:9/model/v1/chat/completions", "sk-model"),
                    "judge-1": ("http://127.0.0.1:9/judge/v1/chat/completions", "sk-judge")}
    assert all("sk-" not in (out / name).read_text() for name in ("fingerprint.json", "records.jsonl", "summary.json"))


def test_fastchat_temperatures_answer_each_category_at_its_own(tmp_path, scripted):
    seen = {}

    class Recording:
        name = "target"

        def generate(self, conversations, params):
            for c in conversations:
                seen.setdefault(c[0]["content"], set()).add((params.do_sample, params.temperature))
            return scripted(lambda c: "ok").generate(conversations, params)

    questions = QUESTIONS + [{"question_id": 131, "category": "stem", "turns": ["Why is the sky blue?"]},
                             {"question_id": 132, "category": "unlisted", "turns": ["Hm?"]}]
    summary = mtbench_eval(Recording(), scripted(lambda c: "Rating: [[5]]"), questions, GenerationParams(batch_size=8),
                           tmp_path, progress=False, judge_format="fastchat", references=REFS,
                           answer_temperatures=fastchat.TEMPERATURES)
    assert seen["Write a blog post."] == {(True, 0.7)} and seen["Area of the triangle?"] == {(False, 1.0)}
    assert seen["Why is the sky blue?"] == {(True, 0.1)} and seen["Hm?"] == {(True, 0.7)}  # FastChat's default
    assert summary.extra["answer_temperatures"]["writing"] == 0.7 and summary.overall.n == 5


def _tiny_cli_args(tmp_path):
    """eval-mtbench with a tiny-random model and judge (hf), the project format and one one-turn question."""
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "category": "writing", "turns": ["Say hi."]}) + "\n")
    return ["eval-mtbench", "--model", "tiny-random", "--judge-backend", "hf", "--judge-model", "tiny-random",
            "--judge-format", "project", "--questions", str(questions), "--output-dir", str(tmp_path / "out")]


@pytest.mark.parametrize("case", ["references", "max-new-tokens", "questions", "output-dir"])
def test_cli_checks_files_settings_and_the_output_dir_before_a_model_loads(tmp_path, capsys, scripted,
                                                                          no_model_load, case):
    """Both models used to load first: a missing --references file or --max-new-tokens 0 failed only after."""
    from safealign.cli import main

    args = _tiny_cli_args(tmp_path)
    if case == "references":
        args += ["--references", str(tmp_path / "nonexistent.jsonl")]
        message = "nonexistent.jsonl"
    elif case == "max-new-tokens":
        args += ["--max-new-tokens", "0"]
        message = "max_new_tokens must be >= 1, got 0"
    elif case == "questions":
        args[args.index("--questions") + 1] = str(tmp_path / "missing.jsonl")
        message = "missing.jsonl"
    else:  # the directory holds another model's run
        mtbench_eval(scripted(lambda c: "ok"), scripted(lambda c: "Rating: [[5]]"), args[args.index("--questions") + 1],
                     out_dir=tmp_path / "out", judge_name="tiny-random", progress=False)
        message = "holds an earlier mtbench run with different settings"
    assert main(args) == 2  # no_model_load: a load would fail the test, not return 2
    assert message in capsys.readouterr().err


def test_cli_claims_from_the_configs_what_the_loaded_models_resume(tmp_path, capsys, monkeypatch):
    """The output directory is claimed from the configs' identities before the models load; the library, handed
    the loaded models, finds the same fingerprint and resumes instead of refusing the directory."""
    import safealign.models.load
    from safealign.cli import main
    from safealign.eval.backends import build_chat_model
    from safealign.eval.config import ModelConfig

    out, load, loads = tmp_path / "out", safealign.models.load.load_model, []

    def spy(spec, **kwargs):  # the hf backend's load: was the directory claimed by then?
        loads.append((spec, (out / "fingerprint.json").is_file()))
        return load(spec, **kwargs)

    monkeypatch.setattr(safealign.models.load, "load_model", spy)
    args = _tiny_cli_args(tmp_path)
    assert main([*args, "--max-new-tokens", "2"]) == 0
    assert loads == [("tiny-random", True)] * 2  # the model and the judge, each after the claim
    recorded = (out / "records.jsonl").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"] == "tiny-random" and summary["model_identity"]["kind"] == "tiny"
    model, judge = (build_chat_model(ModelConfig(backend="hf", name="tiny-random")) for _ in range(2))
    mtbench_eval(model, judge, args[args.index("--questions") + 1], GenerationParams(max_new_tokens=2), out,
                 judge_name="tiny-random", progress=False)
    assert (out / "records.jsonl").read_text() == recorded  # resumed: nothing answered or judged again
