"""MT-Bench single-answer grading with FastChat's own judge prompts, reference answers and score parser.

The judge prompts (``single-v1``, ``single-math-v1`` and their ``-multi-turn`` forms), the 80 questions
and GPT-4's reference answers are FastChat's files, shipped byte for byte in
``safealign/data/builtin/mtbench_fastchat/`` (source, commit and licence in that folder's README.md;
``tests/eval/helpfulness/test_mtbench_fastchat.py`` checks their SHA-256). What this module follows from
FastChat's ``fastchat/llm_judge/{common.py,gen_judgment.py}``:

- turn 1 is graded with ``single-v1``; turn 2 with ``single-v1-multi-turn``, which shows both turns
  and asks about the second answer;
- categories ``math``, ``reasoning`` and ``coding`` (``NEED_REF_CATS``) use the ``single-math-v1``
  forms, which show the reference answer(s), taken only from a reference-answer file (FastChat's
  ``reference_answer/gpt-4.jsonl`` or ``--references``), never from a question's own ``reference`` field
  (in FastChat's ``question.jsonl`` that field holds one-line hints its judge never reads); a question of
  those categories without a reference is refused before anything runs, as FastChat's ``check_data`` asserts
  every reference before judging starts. Deviation: FastChat takes the reference answers from the *judge
  model's own* file (``gen_judgment.py`` ``make_match_single``: ``ref_answers[judge.model_name]``, i.e.
  ``reference_answer/<judge>.jsonl``); here they are GPT-4's whatever the judge (unless ``--references``), so
  another judge is graded against GPT-4's answers where FastChat would need (and refuse without) its own;
- the judge's system message is the template's ``system_prompt``, the user message its
  ``prompt_template`` filled with ``str.format``; temperature 0, up to 2048 new tokens;
- the rating is the first ``[[x]]`` in the judgment, else the first ``[x]`` (``one_score_pattern`` and
  its backup), read as a number, so 7.5 counts. Deviations: FastChat stores −1 for "no match" and
  drops it when averaging; here it is *unscored* and counted. A number outside 1..10 (``[[0]]``,
  ``[[11]]``, or a citation like ``[2023]`` caught by the backup pattern) is unscored too, where FastChat
  would average it in.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from safealign.errors import UserError
from safealign.files import read_text
from safealign.io import parse_jsonl

NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")  # FastChat common.py
ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")  # FastChat one_score_pattern
ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")  # FastChat one_score_pattern_backup
# FastChat common.py temperature_config: the temperature gen_model_answer.py answers each category at
# (greedy below 1e-4); a category not listed gets 0.7.
TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
                "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}
DEFAULT_TEMPERATURE = 0.7
JUDGE_MAX_NEW_TOKENS = 2048  # FastChat chat_completion_openai(..., temperature=0, max_tokens=2048)
ANSWER_MAX_NEW_TOKENS = 1024  # FastChat gen_model_answer.py --max-new-token (default 1024): per answered turn
DATA = "mtbench_fastchat"


def data_path(name: str) -> Path:
    """A shipped FastChat file: ``question.jsonl``, ``reference_answer_gpt-4.jsonl`` or ``judge_prompts.jsonl``."""
    return Path(str(resources.files("safealign.data.builtin").joinpath(DATA, name)))


@lru_cache(maxsize=None)
def judge_prompts() -> dict[str, dict[str, Any]]:
    """FastChat's judge prompts by name (``single-v1``, ``single-math-v1-multi-turn``, ...)."""
    rows = parse_jsonl(data_path("judge_prompts.jsonl").read_text(encoding="utf-8"), "judge_prompts.jsonl")
    return {row["name"]: row for row in rows}


def needs_reference(question: Mapping[str, Any]) -> bool:
    return question.get("category") in NEED_REF_CATS


def prompt_name(question: Mapping[str, Any], turn: int) -> str:
    """The FastChat judge prompt for 0-based ``turn`` of ``question``."""
    base = "single-math-v1" if needs_reference(question) else "single-v1"
    return base if turn == 0 else f"{base}-multi-turn"


def load_references(path: str | Path) -> dict[str, list[str]]:
    """Reference answers by ``str(question_id)`` from a FastChat answer file (``choices[0].turns``, as in
    ``reference_answer/gpt-4.jsonl``) or a plain JSONL of ``question_id`` + ``reference`` (list of turns)."""
    rows = parse_jsonl(read_text(path, "reference answers (JSONL)"), path)
    out: dict[str, list[str]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(f"{path}: row {i}: not a JSON object")
        if "question_id" not in row:
            raise UserError(f"{path}: row {i}: missing field 'question_id'")
        if "choices" in row:
            choices = row["choices"] or [{}]
            if not isinstance(choices, list) or not isinstance(choices[0], dict):
                raise UserError(f"{path}: row {i}: field 'choices' must be a list of objects, the first holding "
                                f"'turns' (FastChat's answer layout), got {type(row['choices']).__name__}"
                                + (" of " + type(choices[0]).__name__ if isinstance(choices, list) else ""))
            turns = choices[0].get("turns")
        else:
            turns = row.get("reference")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise UserError(f"{path}: row {i}: no reference turns (expected 'choices[0].turns' or 'reference', "
                            "a non-empty list of strings)")
        out[str(row["question_id"])] = turns
    return out


def builtin_references() -> dict[str, list[str]]:
    """GPT-4's reference answers for the 30 math, reasoning and coding questions (FastChat's file)."""
    return load_references(data_path("reference_answer_gpt-4.jsonl"))


def check_references(questions: Sequence[Mapping[str, Any]], references: Mapping[str, list[str]]) -> None:
    """Every question that FastChat grades against a reference must have one per graded turn, and no
    question may have more than the two turns FastChat's prompts can show."""
    for q in questions:
        if not needs_reference(q):
            continue
        ref = references.get(str(q["question_id"]))
        if ref is None or len(ref) < len(q["turns"]):
            own = (" (its own 'reference' field is not read: FastChat's judge takes reference answers only from a "
                   "reference-answer file)") if q.get("reference") else ""
            raise UserError(
                f"mt-bench: question {q['question_id']} ({q.get('category')}) needs a reference answer per turn "
                f"for FastChat's single-math-v1 prompt; give a reference file (--references) that has it{own}"
            )
    for q in questions:
        if len(q["turns"]) > 2:
            raise UserError(f"mt-bench: question {q['question_id']} has {len(q['turns'])} turns; FastChat's "
                            "judge prompts grade at most two")  # fmt: skip


def judge_messages(question: Mapping[str, Any], answers: Sequence[str], turn: int,
                   reference: Sequence[str] | None) -> tuple[str, list[dict[str, str]]]:
    """(prompt name, [system, user]) for grading 0-based ``turn``, exactly as FastChat's run_judge_single."""
    name = prompt_name(question, turn)
    template = judge_prompts()[name]
    fields: dict[str, str] = {}
    if needs_reference(question):
        assert reference is not None  # check_references ran first
        fields["ref_answer_1"] = reference[0]
        if turn == 1:
            fields["ref_answer_2"] = reference[1]
    if turn == 0:
        user = template["prompt_template"].format(question=question["turns"][0], answer=answers[0], **fields)
    else:
        user = template["prompt_template"].format(
            question_1=question["turns"][0], question_2=question["turns"][1],
            answer_1=answers[0], answer_2=answers[1], **fields,
        )
    return name, [{"role": "system", "content": template["system_prompt"]}, {"role": "user", "content": user}]


def parse_fastchat_rating(text: str) -> tuple[float | None, str | None]:
    """FastChat's rating: the first ``[[x]]``, else the first ``[x]``; unscored when neither matches or the
    number is outside 1..10 (see the module docstring for the deviations)."""
    match = ONE_SCORE.search(text or "") or ONE_SCORE_BACKUP.search(text or "")
    if match is None:
        return None, "no '[[rating]]' in judge output"
    value = float(match.group(1))
    if not 1 <= value <= 10:
        return None, f"rating {match.group(1)!r} is outside 1..10"
    return (int(value) if value.is_integer() else value), None
