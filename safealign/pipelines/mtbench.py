"""``safealign eval-mtbench``: MT-Bench single-answer grading of one model by a judge model, end to end.

By default the 80 FastChat MT-Bench questions, GPT-4's reference answers for the math, reasoning and
coding questions, and FastChat's judge prompts (:mod:`safealign.eval.helpfulness.mtbench_fastchat`).
Writes ``records.jsonl``, ``fingerprint.json`` and ``summary.json`` in the output folder (a re-run with the same
model, judge, questions and settings resumes; with others it is refused unless ``overwrite``) and returns the
summary; :func:`format_mtbench` renders the per-category table the paper reports.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from safealign.eval.backends.base import ChatModel, GenerationParams
from safealign.io.summaries import MTBenchSummary, ScoreStats


def run_mtbench(model: ChatModel, judge: ChatModel, out_dir: str | Path, *, questions: str | Path | None = None,
                references: str | Path | None = None, judge_format: str = "fastchat", judge_name: str | None = None,
                params: GenerationParams | None = None, limit: int | None = None,
                fastchat_temperatures: bool = False, progress: bool = True, overwrite: bool = False) -> MTBenchSummary:
    """Questions default to FastChat's file; references default to FastChat's GPT-4 file for those questions
    (a user file replaces them). For any other question file without ``references``: the project format uses
    the questions' own ``reference`` fields; FastChat's format never reads those fields (as FastChat), so its
    math/reasoning/coding questions need ``references``.
    ``params``: the answers' settings, default greedy with 1024 new tokens per turn (FastChat's).
    ``limit``: only the first ``limit`` questions (at least 1).
    ``fastchat_temperatures``: answer each category at FastChat's temperature instead of ``params``'.
    ``overwrite``: delete another run's records and summary in ``out_dir`` first (:func:`mtbench_eval`)."""
    from safealign.eval.helpfulness.mtbench import mtbench_eval

    rows, refs = _questions(questions, references, limit)
    return mtbench_eval(model, judge, rows, params, out_dir, judge_name=judge_name, progress=progress,
                        judge_format=judge_format, references=refs,
                        answer_temperatures=_temperatures(fastchat_temperatures), overwrite=overwrite)


def run_mtbench_configs(model: Any, judge: Any, out_dir: str | Path, *, questions: str | Path | None = None,
                        references: str | Path | None = None, judge_format: str = "fastchat",
                        judge_name: str | None = None, params: GenerationParams | None = None,
                        limit: int | None = None, fastchat_temperatures: bool = False, progress: bool = True,
                        overwrite: bool = False) -> MTBenchSummary:
    """:func:`run_mtbench` with the model and the judge given as ``ModelConfig``s (``safealign eval-mtbench``):
    the question and reference files, the settings and the output directory are checked, and the directory
    claimed, before either model loads, so a mistake there fails in seconds, not after loading two models."""
    from safealign.eval.backends import build_chat_model, chat_model_identity, config_identity
    from safealign.eval.helpfulness.mtbench import prepare_mtbench, run_prepared

    rows, refs = _questions(questions, references, limit)
    judge_identity = config_identity(judge)
    run = prepare_mtbench(rows, params, out_dir, identity=config_identity(model), system_prompt=model.system_prompt,
                          judge=judge_name or judge_identity.get("spec") or judge.name, judge_identity=judge_identity,
                          judge_format=judge_format, references=refs,
                          answer_temperatures=_temperatures(fastchat_temperatures), overwrite=overwrite)
    answering = build_chat_model(model)
    grading = build_chat_model(judge)
    # the summary records what answered: a hub model fetched by its load has its weights' fingerprint only now
    return run_prepared(dataclasses.replace(run, identity=chat_model_identity(answering)), answering, grading,
                        progress=progress)


def _questions(questions: str | Path | None, references: str | Path | None,
               limit: int | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The first ``limit`` questions (FastChat's by default) and the reference answers given for them: a file's,
    else FastChat's GPT-4 answers for FastChat's own questions, else none."""
    from safealign.checks import at_least
    from safealign.eval.helpfulness import mtbench_fastchat as fastchat
    from safealign.eval.helpfulness.mtbench import load_questions

    # 0 would summarise no question (rewriting summary.json so), a negative one slice from the end
    at_least("limit", limit, 1, "the number of questions to run, from the first")
    rows = load_questions(questions or fastchat.data_path("question.jsonl"))[:limit]
    if references is not None:
        return rows, fastchat.load_references(references)
    return rows, fastchat.builtin_references() if questions is None else None


def _temperatures(fastchat_temperatures: bool) -> dict[str, float] | None:
    from safealign.eval.helpfulness import mtbench_fastchat as fastchat

    return fastchat.TEMPERATURES if fastchat_temperatures else None


def _cell(s: ScoreStats | None) -> str:
    if s is None or s.mean is None:
        return f"{'-':>6}  {'':<15} {s.n if s else 0:>4} {s.unscored if s else 0:>8}"
    ci = f"[{s.ci95[0]:.2f}, {s.ci95[1]:.2f}]" if s.ci95 else ""
    return f"{s.mean:>6.2f}  {ci:<15} {s.n:>4} {s.unscored:>8}"


def format_mtbench(summary: MTBenchSummary) -> str:
    """Mean rating (1–10) per category, per turn and overall, with its 95% interval over questions, n (questions
    with a scored rating) and unscored (turns without a rating)."""
    fmt = summary.extra.get("judge_format", "project")
    lines = [f"MT-Bench single-answer grading, judge {summary.judge} ({fmt} prompts), {summary.questions} questions",
             f"{'':<14} {'mean':>6}  {'95% CI':<15} {'n':>4} {'unscored':>8}"]
    lines += [f"{k:<14} {_cell(v)}" for k, v in summary.by_category.items()]
    lines += [f"{'turn ' + k:<14} {_cell(v)}" for k, v in summary.by_turn.items()]
    lines.append(f"{'overall':<14} {_cell(summary.overall)}")
    lines.append("mean over scored ratings; 95% CI over questions; n = questions with a scored rating; "
                 "unscored = turns without one")
    return "\n".join(lines)
