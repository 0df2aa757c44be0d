"""Self-generated safety preference pairs: the row shape and the file (``safealign data build-safety``).

For a harmful prompt, *rejected* is the model's own completion and *chosen* a refusal; for a benign
prompt, *chosen* is the model's own answer and *rejected* an unnecessary refusal. Rows carry the
``harmful`` flag the E-RLHF transform uses, and are ordinary ``standard``-format preference JSONL
that ``safealign train`` reads. Rows are appended as they are generated; a re-run skips ids already
in the file, so an interrupted build loses at most one batch.

Prompts the model already refuses (harmful) or already refuses wrongly (benign) make no useful pair
of this shape and are skipped; the counts are returned and logged. Generating and judging the
answers is a pipeline (:mod:`safealign.pipelines.build_safety`); this module stays free of model calls.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from safealign.io import read_jsonl


@dataclass(frozen=True)
class SafetyBuildReport:
    path: Path
    written: int
    reused: int
    skipped_already_refused: int
    skipped_benign_refused: int
    skipped_errors: int

    def describe(self) -> str:
        return (
            f"{self.written} new + {self.reused} existing pairs in {self.path}; skipped: "
            f"{self.skipped_already_refused} harmful prompts the model already refuses, "
            f"{self.skipped_benign_refused} benign prompts it refused, {self.skipped_errors} generation errors"
        )


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


def pair_row(prompt: Any, own: str, refused: bool, refusals: Sequence[str], seed: int) -> dict[str, Any] | None:
    """The preference row for ``prompt`` given the model's own answer ``own`` (``refused``: judged a refusal),
    or None when the answer makes no pair of this shape. The refusal side is picked per prompt id and seed,
    so a re-run builds the same rows."""
    if refused:
        return None
    refusal = random.Random(f"{seed}:{prompt.id}").choice(list(refusals))
    chosen, rejected = (refusal, own) if prompt.harmful else (own, refusal)
    return {"id": prompt.id, "prompt": prompt.prompt, "chosen": chosen, "rejected": rejected,
            "harmful": bool(prompt.harmful), "category": prompt.category, "kind": prompt.kind}
