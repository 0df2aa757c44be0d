"""Build self-generated safety pairs: generate with the model, judge refusals, append the pairs.

The row shape and the file live in :mod:`safealign.data.safety_pairs` (no model calls); this module
adds the generation backend and the refusal judge from ``eval``, which ``data`` may not import.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from tqdm.auto import tqdm

from safealign.data.safety_pairs import (
    SafetyBuildReport, check_cut_answers, existing_ids, pair_row, settings_path, settled_ids, settled_path,
)
from safealign.errors import UserError
from safealign.io import append_jsonl, write_json
from safealign.io.rundir import Fingerprint, describe_changes, differing_keys, make_fingerprint, read_fingerprint_file

logger = logging.getLogger(__name__)


def build_safety_pairs(
    chat_model: Any,
    prompts: Sequence[Any],
    refusals: Sequence[str],
    out_path: str | Path,
    *,
    params: Any = None,
    judge: Any = None,
    seed: int = 0,
    cut_answers: str = "keep",
    with_split: bool = False,
) -> SafetyBuildReport:
    """Generate, pair and append. ``prompts`` have ``id``, ``prompt``, ``category``, ``kind``, ``harmful``.
    ``cut_answers``: what a pair whose own answer was cut at ``max_new_tokens`` becomes (keep, drop, open;
    safealign/data/safety_pairs.py). ``with_split``: each row names its prompt's ``split`` too (the prompts have one),
    as a standalone build's do; the demo's and the sweep's rows stay as they were (their cells key on the file)."""
    from safealign.eval.backends.base import GenerationParams, with_seeds
    from safealign.eval.helpfulness.overrefusal import default_detector

    check_cut_answers(cut_answers)
    if not refusals:
        raise UserError("build-safety needs at least one refusal response")
    params = params or GenerationParams(max_new_tokens=48)
    judge = judge or default_detector()
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done, settled = existing_ids(path), settled_ids(path)
    todo = [p for p in prompts if p.id not in done | settled]
    counts = {"written": 0, "harmful_refused": 0, "benign_refused": 0, "errors": 0, "cut": 0, "skipped_cut": 0}
    with tqdm(total=len(todo), desc="building safety pairs", unit="prompt") as bar:
        for start in range(0, len(todo), params.batch_size):
            chunk = todo[start : start + params.batch_size]
            # a sampled answer is drawn from its prompt's own seed: a resumed build draws what a whole one would
            completions = chat_model.generate([({"role": "user", "content": p.prompt},) for p in chunk],
                                              with_seeds(params, [(p.id,) for p in chunk]))
            judged = [(p, _judged_row(p, c, refusals, judge, seed, counts, cut_answers, with_split))
                      for p, c in zip(chunk, completions)]
            rows = [row for _, row in judged if isinstance(row, dict)]
            append_jsonl(path, rows)
            append_jsonl(settled_path(path), [{"id": p.id, "reason": row} for p, row in judged if isinstance(row, str)])
            counts["written"] += len(rows)
            bar.update(len(chunk))
    report = SafetyBuildReport(path, counts["written"], len(done), counts["harmful_refused"],
                               counts["benign_refused"], counts["errors"], counts["cut"], counts["skipped_cut"],
                               cut_answers)
    (logger.warning if counts["cut"] and cut_answers == "keep" else logger.info)("%s", report.describe())
    return report


def _judged_row(prompt: Any, completion: Any, refusals: Sequence[str], judge: Any, seed: int,
                counts: dict[str, int], cut_answers: str = "keep",
                with_split: bool = False) -> dict[str, Any] | str | None:
    """The pair row; or why the prompt makes none (``harmful_refused``/``benign_refused``, or with
    ``cut_answers=drop`` ``harmful_cut``/``benign_cut``: settled, not asked again); or None for a generation
    error (asked again on the next run)."""
    from safealign.eval.helpfulness.overrefusal import refusal_verdict

    if completion.error:
        counts["errors"] += 1
        return None
    own = completion.text.strip()
    refused, _ = refusal_verdict(judge, own)
    cut = (completion.meta or {}).get("finish") == "length"  # stopped by max_new_tokens, not by the model
    row = pair_row(prompt, own, refused, refusals, seed, cut=cut, cut_answers=cut_answers,
                   split=prompt.split if with_split else None)
    if row is None:
        reason = "harmful_refused" if prompt.harmful else "benign_refused"
        counts[reason] += 1
        return reason
    if cut and cut_answers == "drop":
        counts["skipped_cut"] += 1
        return "harmful_cut" if prompt.harmful else "benign_cut"
    counts["cut"] += int(cut)
    return row


def build_from_builtin(model_spec: str, out_path: str | Path, *, split: Optional[str] = "train",
                       harmful_limit: Optional[int] = None, benign_limit: Optional[int] = None,
                       max_new_tokens: int = 48, batch_size: int = 16, seed: int = 0,
                       cut_answers: str = "keep") -> SafetyBuildReport:
    """``safealign data build-safety``: pairs from the built-in prompt sets (``split`` None = all) and
    the model ``model_spec`` (any ``load_model`` spec). A file holds the pairs of one split, each row naming its
    prompt's: test prompts added to a train file would be trained on, then evaluated as held out."""
    from safealign.data.builtin import load_prompts, load_refusals
    from safealign.eval.backends.base import GenerationParams
    from safealign.eval.backends.hf import HFChatModel
    from safealign.files import check_jsonl_output, check_output_file
    from safealign.models import load_model

    check_cut_answers(cut_answers, "--cut-answers")
    check_jsonl_output(out_path, "--out")  # before the model loads: so are the checks below
    check_output_file(out_path, "output JSONL")  # a directory or binary file fails now
    harmful = load_prompts("harmful", split=split)[:harmful_limit]
    benign = load_prompts("benign", split=split)[:benign_limit]
    refusals = load_refusals()
    claim_pairs_file(Path(out_path), _build_fingerprint(model_spec, max_new_tokens, seed, refusals, cut_answers,
                                                        split))
    if split is None:
        logger.warning("--split all includes the held-out test prompts, which the demo and the sweep evaluate on: "
                       "a model trained on these pairs is no longer evaluated on held-out prompts there; each row's "
                       "'split' names its prompt's")
    model, tokenizer = load_model(model_spec)
    params = GenerationParams(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    return build_safety_pairs(HFChatModel(model, tokenizer), harmful + benign, refusals, out_path,
                              params=params, seed=seed, cut_answers=cut_answers, with_split=True)


def _build_fingerprint(model_spec: str, max_new_tokens: int, seed: int, refusals: Sequence[str],
                       cut_answers: str = "keep", split: Optional[str] = "train") -> Fingerprint:
    """What decides a pair's text: the model's weights and setup, the answer length, the seed that picks each
    refusal, the refusals, and what becomes of cut answers; and the split (None: all), so that a file of train
    pairs refuses test prompts. The limits are left out: a later run may add prompts of its split. A record from
    before ``cut_answers`` existed matches ``keep`` (its default). The split is recorded only when it is not the
    default ``train``, so a train build's record keeps its digest; a record from before the split was recorded
    therefore reads as train, and refuses ``test``/``all`` (a file of test pairs built then must be continued in
    another --out)."""
    from safealign.models.identity import model_identity, setup_fingerprint, setup_keys

    identity = model_identity(model_spec)
    return make_fingerprint("safety_pairs", {
        "model": {"spec": model_spec, "weights": identity.get("fingerprint"), "setup": setup_fingerprint(identity),
                  **setup_keys(identity)},
        "max_new_tokens": max_new_tokens, "seed": seed, "refusals": list(refusals), "cut_answers": cut_answers,
        **({} if split == "train" else {"split": split or "all"})},
        defaults={"cut_answers": "keep"})  # fmt: skip


def claim_pairs_file(out: Path, fingerprint: Fingerprint) -> None:
    """Refuse to append to pairs built with other settings; else record this build's settings beside the file.

    A file of pairs with no record (built before records were kept) is continued, with a warning; a record with
    nothing built under it (a run whose model failed to load) is simply replaced."""
    record = settings_path(out)
    built = bool(existing_ids(out) or settled_ids(out))
    previous = read_fingerprint_file(record, f"delete it (and {out}) to build anew, or write to another --out")
    if previous is not None and built:
        changed = differing_keys(previous, fingerprint)
        if changed:
            split = ("; a split unset is train. Pairs of the held-out test prompts appended to train pairs would be "
                     "trained on, then evaluated as held out" if "split" in changed else "")
            raise UserError(f"{out}: its pairs were built with other settings "
                            f"({describe_changes(previous, fingerprint, changed)}, recorded in {record}); "
                            f"appending would mix them{split}. Write to another --out, or delete {out} and {record}")
    elif built:
        logger.warning("%s: pairs built before their settings were recorded; continuing without checking them", out)
    write_json(record, fingerprint.to_json())
