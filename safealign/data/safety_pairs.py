"""Self-generated safety preference pairs: the row shape and the file (``safealign data build-safety``).

For a harmful prompt, *rejected* is the model's own completion and *chosen* a refusal; for a benign
prompt, *chosen* is the model's own answer and *rejected* an unnecessary refusal. Rows carry the
``harmful`` flag the E-RLHF transform uses, and are ordinary ``standard``-format preference JSONL
that ``safealign train`` reads. Rows are appended as they are generated; a re-run skips ids already
in the file, so an interrupted build loses at most one batch.

Prompts the model already refuses (harmful) or already refuses wrongly (benign) make no useful pair
of this shape and are skipped; the counts are returned and logged.

Answers cut at the generation limit (``Completion.meta["finish"] == "length"``) end mid-sentence, and a
trained response ends with the template's end-of-turn token, so keeping them teaches the model to stop
there. ``cut_answers`` (:data:`CUT_ANSWERS`) chooses what to do with a pair whose own answer was cut:
``keep`` (the default, and the only behaviour before the option existed) writes it as before, byte for
byte; ``drop`` leaves it out (its prompt is settled, reason ``harmful_cut``/``benign_cut``); ``open`` writes
it with ``chosen_cut``/``rejected_cut`` flags, and the encoder trains a flagged side without the template's
end-of-turn tokens (safealign/data/tokenize.py). ``drop`` and ``open`` write both flags on every row; ``keep``
writes none, so pairs built before stay valid byte for byte (a sweep's cells key on the file's digest).
A standalone build (``safealign data build-safety``) adds each row's ``split`` (``train``/``test``: which of the
built-in prompts' splits it came from), an extra column every pair reader ignores; its settings record holds the
split, so a file of one split refuses another. The demo's and the sweep's pairs (train prompts only) carry none.
Cut answers are counted in every mode. Generating and judging the
answers is a pipeline (:mod:`safealign.pipelines.build_safety`); this module stays free of model calls.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from safealign.errors import UserError
from safealign.io import read_jsonl

# what a build does with a pair whose own answer was cut at the generation limit (module docstring)
CUT_ANSWERS = ("keep", "drop", "open")


@dataclass(frozen=True)
class SafetyBuildReport:
    path: Path
    written: int
    reused: int
    skipped_already_refused: int
    skipped_benign_refused: int
    skipped_errors: int
    cut: int = 0  # new pairs whose own answer was cut at the generation limit (kept, or opened)
    skipped_cut: int = 0  # prompts left out because their answer was cut (cut_answers=drop)
    cut_answers: str = "keep"

    def describe(self) -> str:
        text = (
            f"{self.written} new + {self.reused} existing pairs in {self.path}; skipped: "
            f"{self.skipped_already_refused} harmful prompts the model already refuses, "
            f"{self.skipped_benign_refused} benign prompts it refused, {self.skipped_errors} generation errors"
        )
        if self.cut_answers == "drop":
            return text + f", {self.skipped_cut} answers cut at the token limit (cut_answers=drop)"
        if self.written:
            how = ("trained without the end-of-turn token" if self.cut_answers == "open"
                   else "trained as if finished; cut_answers=drop or open avoids that")
            text += f"; {self.cut} of the {self.written} new pairs hold an answer cut at the token limit ({how})"
        return text


def existing_ids(path: Path) -> set[str]:
    """Ids of the pairs already in ``path``; a line cut off by an interrupted build is regenerated."""
    return {row["id"] for row in read_jsonl(path) if "id" in row}


def settled_ids(path: Path) -> set[str]:
    """Ids of the prompts a build of ``path`` asked about that made no pair (the model refused a harmful one, or a
    benign one), listed in :func:`settled_path`. A resumed build never asks the model about them again: asked in
    another batch, it could answer otherwise and change the pairs that finished runs trained on."""
    return existing_ids(settled_path(path))


def settings_path(path: Path) -> Path:
    """``pairs.jsonl`` → ``pairs.jsonl.settings.json``: what a standalone build generated with (model, tokens,
    seed, refusals), so that a re-run with other settings is refused instead of appending different pairs. Named
    after the whole file name: ``pairs.json`` and ``pairs.jsonl`` beside each other keep their own records."""
    return path.with_name(f"{path.name}.settings.json")


def settled_path(path: Path) -> Path:
    """``pairs.jsonl`` → ``pairs.unpaired.jsonl``: the prompts of a build that made no pair, with the reason."""
    return path.with_name(f"{path.stem}.unpaired{path.suffix or '.jsonl'}")


def check_cut_answers(value: str, key: str = "cut_answers") -> str:
    if value not in CUT_ANSWERS:
        raise UserError(f"{key} must be one of {', '.join(CUT_ANSWERS)}, got {value!r}")
    return value


def pair_row(prompt: Any, own: str, refused: bool, refusals: Sequence[str], seed: int, *, cut: bool = False,
             cut_answers: str = "keep", split: str | None = None) -> dict[str, Any] | None:
    """The preference row for ``prompt`` given the model's own answer ``own`` (``refused``: judged a refusal;
    ``cut``: it stopped at the generation limit), or None when the answer makes no pair of this shape. The
    refusal side is picked per prompt id and seed, so a re-run builds the same rows. ``cut_answers`` other than
    ``keep`` records which side was cut (``drop`` is applied by the caller, which settles the prompt). ``split``,
    where given, is written as the row's ``split`` (module docstring)."""
    if refused:
        return None
    refusal = random.Random(f"{seed}:{prompt.id}").choice(list(refusals))
    chosen, rejected = (refusal, own) if prompt.harmful else (own, refusal)
    row = {"id": prompt.id, "prompt": prompt.prompt, "chosen": chosen, "rejected": rejected,
           "harmful": bool(prompt.harmful), "category": prompt.category, "kind": prompt.kind}
    if check_cut_answers(cut_answers) != "keep":  # keep: today's rows byte for byte (module docstring)
        row["chosen_cut"], row["rejected_cut"] = (False, cut) if prompt.harmful else (cut, False)
    if split is not None:
        row["split"] = split
    return row
