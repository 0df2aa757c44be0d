"""Built-in, project-written prompt sets: harmful and benign requests, refusals, MT-Bench-style questions,
and the untuned benign set (plain instructions the demo only evaluates on).

The files live beside this module and are read with `importlib.resources`, so they work from an editable
install and from a wheel alike. See README.md in this folder for the sets, the split rule and the licence.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from safealign.errors import UserError
from safealign.io import parse_jsonl
from safealign.types import Behavior

__all__ = [
    "BuiltinPrompt",
    "PROMPT_SETS",
    "SPLITS",
    "categories",
    "HARMFUL_BEHAVIORS",
    "harmful_behaviors",
    "load_mtbench_questions",
    "load_prompts",
    "load_refusals",
    "load_untuned_benign",
    "mtbench_questions_path",
    "split_for_position",
    "UNTUNED_BENIGN",
]

PROMPT_SETS = ("harmful", "benign")
SPLITS = ("train", "test")
KINDS = {"harmful": ("harmful",), "benign": ("ordinary", "borderline")}
# plain instructions never used to build pairs or choose a setting: the demo's over-refusal check on requests
# unlike its benign training prompts (README.md, "untuned_benign.jsonl"); every row is an evaluation row
UNTUNED_BENIGN = "untuned_benign"
TEST_EVERY = 3  # every third row of a (kind, category) group is held out; see README.md


@dataclass(frozen=True)
class BuiltinPrompt:
    """One built-in request; `kind` is "harmful" for the harmful set, "ordinary"/"borderline" for benign."""

    id: str
    prompt: str
    category: str
    split: str
    kind: str
    harmful: bool


def split_for_position(position: int) -> str:
    """The documented split rule, given a row's 0-based `position` in its (kind, category) group."""
    return "test" if position % TEST_EVERY == TEST_EVERY - 1 else "train"


def _resource(filename: str):
    return resources.files(__name__).joinpath(filename)


def _read_jsonl(filename: str) -> list[dict[str, Any]]:
    text = _resource(filename).read_text(encoding="utf-8")
    return parse_jsonl(text, filename)


def _check_choice(field: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise UserError(f"{field}={value!r} is not valid; choose one of {', '.join(choices)} (or None)")


@lru_cache(maxsize=None)
def _all_prompts(name: str) -> tuple[BuiltinPrompt, ...]:
    harmful = name == "harmful"
    return tuple(
        BuiltinPrompt(
            id=row["id"],
            prompt=row["prompt"],
            category=row["category"],
            split=row["split"],
            kind="harmful" if harmful else row["kind"],
            harmful=harmful,
        )
        for row in _read_jsonl(f"{name}.jsonl")
    )


def load_prompts(
    name: str,
    *,
    split: str | None = None,
    kind: str | None = None,
    category: str | None = None,
) -> list[BuiltinPrompt]:
    """Prompts of the `name` set ("harmful" or "benign"), optionally filtered by split, kind and category."""
    _check_choice("name", name, PROMPT_SETS)
    _check_choice("split", split, SPLITS)
    _check_choice("kind", kind, KINDS[name])
    _check_choice("category", category, tuple(categories(name)))
    return [
        p
        for p in _all_prompts(name)
        if (split is None or p.split == split)
        and (kind is None or p.kind == kind)
        and (category is None or p.category == category)
    ]


HARMFUL_BEHAVIORS = "builtin:harmful"  # the source of these behaviors, and how a command line names them


def harmful_behaviors(prompts: Sequence[BuiltinPrompt] | None = None) -> list[Behavior]:
    """Built-in harmful prompts (all of them by default) as behaviors to attack, source ``builtin:harmful``."""
    chosen = load_prompts("harmful") if prompts is None else prompts
    return [Behavior(id=p.id, behavior=p.prompt, category=p.category, source=HARMFUL_BEHAVIORS) for p in chosen]


def categories(name: str) -> list[str]:
    """The categories of the `name` set, in file order."""
    _check_choice("name", name, PROMPT_SETS)
    return list(dict.fromkeys(p.category for p in _all_prompts(name)))


def load_untuned_benign() -> list[BuiltinPrompt]:
    """The 60 untuned benign instructions (kind ``untuned``, split ``test``), in file order."""
    return list(_all_prompts(UNTUNED_BENIGN))


def load_refusals() -> list[str]:
    """Varied short refusals: `chosen` for harmful prompts, `rejected` (over-refusal) for benign ones."""
    return [row["text"] for row in _read_jsonl("refusals.jsonl")]


def mtbench_questions_path() -> Path:
    """Filesystem path of the MT-Bench-style question file (`question_id`, `category`, `turns`)."""
    return Path(str(_resource("mtbench_questions.jsonl")))


def load_mtbench_questions() -> list[dict[str, Any]]:
    """The two-turn MT-Bench-style questions as dicts; math/reasoning/coding rows carry `reference`."""
    return _read_jsonl("mtbench_questions.jsonl")
