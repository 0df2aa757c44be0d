"""Self-generated safety preference pairs (``safealign data build-safety``).

For a harmful prompt, *rejected* is the model's own completion and *chosen* a refusal; for a benign
prompt, *chosen* is the model's own answer and *rejected* an unnecessary refusal. Rows carry the
``harmful`` flag the E-RLHF transform uses, and are ordinary ``standard``-format preference JSONL
that ``safealign train`` reads. Rows are appended as they are generated; a re-run skips ids already
in the file, so an interrupted build loses at most one batch.

Prompts the model already refuses (harmful) or already refuses wrongly (benign) make no useful pair
of this shape and are skipped; the counts are returned and logged.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from safealign.io import append_jsonl, read_jsonl

logger = logging.getLogger(__name__)


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


def build_safety_pairs(
    chat_model: Any,
    prompts: Sequence[Any],
    refusals: Sequence[str],
    out_path: str | Path,
    *,
    params: Any = None,
    judge: Any = None,
    seed: int = 0,
) -> SafetyBuildReport:
    """Generate, pair and append. ``prompts`` have ``id``, ``prompt``, ``category``, ``kind``, ``harmful``."""
    from safealign.eval.backends.base import GenerationParams
    from safealign.eval.helpfulness.overrefusal import default_detector, refusal_verdict

    if not refusals:
        raise ValueError("build-safety needs at least one refusal response")
    params = params or GenerationParams(max_new_tokens=48)
    judge = judge or default_detector()
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = existing_ids(path)
    todo = [p for p in prompts if p.id not in done]
    counts = {"written": 0, "harmful_refused": 0, "benign_refused": 0, "errors": 0}
    with tqdm(total=len(todo), desc="building safety pairs", unit="prompt") as bar:
        for start in range(0, len(todo), params.batch_size):
            chunk = todo[start : start + params.batch_size]
            completions = chat_model.generate([({"role": "user", "content": p.prompt},) for p in chunk], params)
            rows = []
            for p, completion in zip(chunk, completions):
                row = _pair_row(p, completion, refusals, judge, refusal_verdict, seed, counts)
                if row is not None:
                    rows.append(row)
            append_jsonl(path, rows)
            counts["written"] += len(rows)
            bar.update(len(chunk))
    report = SafetyBuildReport(path, counts["written"], len(done), counts["harmful_refused"],
                               counts["benign_refused"], counts["errors"])
    logger.info("%s", report.describe())
    return report


def _pair_row(prompt, completion, refusals, judge, refusal_verdict, seed, counts) -> dict[str, Any] | None:
    if completion.error:
        counts["errors"] += 1
        return None
    own = completion.text.strip()
    refused, _ = refusal_verdict(judge, own)
    refusal = random.Random(f"{seed}:{prompt.id}").choice(list(refusals))
    if prompt.harmful:
        if refused:
            counts["harmful_refused"] += 1
            return None
        chosen, rejected = refusal, own
    else:
        if refused:
            counts["benign_refused"] += 1
            return None
        chosen, rejected = own, refusal
    return {"id": prompt.id, "prompt": prompt.prompt, "chosen": chosen, "rejected": rejected,
            "harmful": bool(prompt.harmful), "category": prompt.category, "kind": prompt.kind}
