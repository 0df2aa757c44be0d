"""Over-refusal as part of ``safealign eval``: benign prompts from the ``benign:`` section or the behaviors
file's benign split, answered by the same target and scored by the refusal detector (docs/benchmarks.md).

The generation, records and resume are :func:`safealign.eval.helpfulness.overrefusal.overrefusal_eval`'s,
written under ``<output_dir>/benign/``. XSTest's unsafe contrast prompts are run with the safe ones, so
the summary can put the two refusal rates side by side: a model that refuses both equally is matching
keywords, not judging the request. ``refusal_rate`` (``all`` and per type) covers the benign prompts only, the
contrast pair XSTest's own safe and unsafe prompts only.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from safealign.errors import UserError
from safealign.eval.benchmarks.loaders import BenchmarkSet, read_benchmark
from safealign.eval.helpfulness.overrefusal import HelpfulnessPrompt, latest_answers, summarize_overrefusal
from safealign.io import read_jsonl
from safealign.types import Behavior

# files that say which rows are benign (loaders.py): XSTest's safe rows, JailbreakBench's benign file, WildJailbreak's
# *_benign rows, OR-Bench's 80k and hard-1k files (its toxic file holds none)
SPLIT_LAYOUTS = ("xstest", "jailbreakbench", "wildjailbreak", "or_bench")
# files whose every row is a benign prompt: a user's own list (JSON/CSV with behavior|prompt|goal|instruction, or
# a .txt file, one prompt a line, which reads as that layout). Every other layout (StrongREJECT, HarmBench, AdvBench,
# SORRY-Bench, Do-Not-Answer, SimpleSafetyTests) holds harmful prompts only, never over-refusal prompts
WHOLE_FILE_LAYOUTS = ("generic",)


@dataclasses.dataclass(frozen=True)
class BenignSet:
    """Benign prompts and, for XSTest, the unsafe contrast prompts run beside them; ``safe`` are XSTest's own
    safe prompts (also in ``benign``), the other side of the contrast pair, kept apart so that benign prompts
    from another file never enter it."""

    benign: tuple[HelpfulnessPrompt, ...] = ()
    contrast: tuple[HelpfulnessPrompt, ...] = ()
    safe: tuple[HelpfulnessPrompt, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.benign)


def _prompts(behaviors: Sequence[Behavior], default_kind: str) -> tuple[HelpfulnessPrompt, ...]:
    return tuple(HelpfulnessPrompt(b.id, b.behavior, b.category or default_kind) for b in behaviors)


def from_file(loaded: BenchmarkSet, *, whole_file: bool) -> BenignSet:
    """A file with a benign split gives that split (XSTest also its unsafe contrast prompts); with
    ``whole_file`` a generic or plain-text file's rows are all benign prompts (a user's own list reads as
    behaviors). A harmful-only benchmark gives none: its refusals are not over-refusal."""
    if loaded.layout in SPLIT_LAYOUTS:
        benign = _prompts(loaded.benign, "benign")
        if loaded.layout == "xstest":
            return BenignSet(benign, _prompts(loaded.harmful, "unsafe"), safe=benign)
        return BenignSet(benign)
    if whole_file and loaded.layout in WHOLE_FILE_LAYOUTS:
        return BenignSet(_prompts(loaded.harmful, "benign"))
    return BenignSet()


def named_benign_file(path: str, what: str = "benign.path") -> BenignSet:
    """The prompts of a benign file the user names (``what``: its setting, e.g. ``benign.path`` or a perplexity
    filter's ``calibration``): a file that gives none is an error, never a silently skipped evaluation, nor a
    harmful benchmark's prompts scored as over-refusal or calibrated on as benign (e.g. or-bench-toxic.csv,
    JailbreakBench's harmful file, StrongREJECT, HarmBench)."""
    loaded = read_benchmark(path, what=what)
    found = from_file(loaded, whole_file=True)
    if not found:
        raise UserError(
            f"{what} {path}: no benign prompts: read as the {loaded.layout} layout, it holds "
            f"{len(loaded.harmful)} harmful prompts and no benign ones (harmful prompts belong in behaviors.path). "
            f"Point {what} at benign prompts (e.g. or-bench-hard-1k.csv, xstest_prompts.csv, a JSONL of prompts)"
        )
    return found


def benign_set(config: Any, behaviors_file: BenchmarkSet | None) -> BenignSet:
    """The prompts of ``config.benign`` (a :class:`~safealign.eval.config.BenignConfig`), with the behaviors
    file's benign split when ``benign.from_behaviors``; ids must not repeat across the two."""
    parts = []
    if config.benign.path:
        parts.append(named_benign_file(config.benign.path))
    if config.benign.from_behaviors and behaviors_file is not None:
        parts.append(from_file(behaviors_file, whole_file=False))
    benign, contrast, safe = (tuple(p for part in parts for p in getattr(part, kind))
                              for kind in ("benign", "contrast", "safe"))  # fmt: skip
    counts = Counter(p.id for p in benign + contrast)  # one pass: WildJailbreak has ~129k benign rows
    dupes = sorted(i for i, n in counts.items() if n > 1)
    if dupes:
        raise UserError(f"benign prompts: ids {dupes[:5]} appear in both benign.path and behaviors.path; "
                        "set benign.from_behaviors=false or use different files")  # fmt: skip
    return _limited(BenignSet(benign, contrast, safe), config.benign.limit)


def _limited(prompts: BenignSet, limit: int | None) -> BenignSet:
    """The first ``limit`` benign prompts (benign.path's before the behaviors file's) and at most as many of
    XSTest's unsafe contrast prompts as of its safe prompts kept, so that the pair compares XSTest's own first
    prompts of each kind (none when the limit keeps no safe one), never the user's prompts with XSTest's."""
    if not limit:
        return prompts
    benign = prompts.benign[:limit]
    kept = {p.id for p in benign}
    safe = tuple(p for p in prompts.safe if p.id in kept)
    return BenignSet(benign, prompts.contrast[: len(safe)], safe)


def run_benign(target: Any, prompts: BenignSet, params: Any, judge: Any, out: Path,
               overwrite_flag: str = "--overwrite") -> dict[str, Any]:  # fmt: skip
    """Generate and judge (resuming ``out/records.jsonl`` when ``out`` recorded the same model and settings); the
    over-refusal block of the eval summary. ``overwrite_flag``: the calling command's, named in a refusal."""
    from safealign.eval.helpfulness.overrefusal import overrefusal_run

    result, records = overrefusal_run(target, [*prompts.benign, *prompts.contrast], params, judge, out, progress=True,
                                      overwrite_flag=overwrite_flag)
    return benign_summary(records, prompts, result.judge)


def benign_answers(out: Path, prompts: BenignSet) -> list[dict[str, Any]]:
    """The latest record in ``out/records.jsonl`` of each prompt :func:`run_benign` answers, for the eval's cost
    block: the file is append-only (an answer judged again by another refusal detector is appended again in full, a
    prompt since left out of the set keeps its lines), while attack records are read one per key (RecordStore), so
    that each answer's cost counts once."""
    ids = [p.id for p in (*prompts.benign, *prompts.contrast)]
    return latest_answers(read_jsonl(out / "records.jsonl"), ids) if ids else []


def benign_summary(records: Sequence[dict[str, Any]], prompts: BenignSet, judge: str) -> dict[str, Any]:
    """Refusal rate over the benign prompts (``all``) and per benign type, each with its Wilson interval; for
    XSTest, ``contrast`` = {"safe": rate on its safe prompts, "unsafe": rate on their unsafe contrasts}. The
    unsafe contrast types (``contrast_*``) are only there: refusing them is right, not over-refusal."""
    summary = summarize_overrefusal(records, [p.id for p in prompts.benign + prompts.contrast], judge)
    benign = summarize_overrefusal(records, [p.id for p in prompts.benign], judge).refusal_rate
    kinds = {p.kind for p in prompts.benign}
    rates = {k: v for k, v in benign.items() if k in kinds}  # not the helper's fixed kinds
    out: dict[str, Any] = {
        "judge": judge, "prompts": len(prompts.benign), "missing": summary.missing,
        "refusal_rate": {"all": benign["all"].to_json(), **{k: v.to_json() for k, v in rates.items()}},
        "full_vs_partial": "not distinguished: the refusal detector is a substring match",
    }  # fmt: skip
    if prompts.safe and prompts.contrast:  # XSTest's safe prompts only, not benign.path's beside them
        safe, unsafe = (summarize_overrefusal(records, [p.id for p in side], judge).refusal_rate["all"]
                        for side in (prompts.safe, prompts.contrast))  # fmt: skip
        out["contrast"] = {"safe": safe.to_json(), "unsafe": unsafe.to_json()}
    return out


def refusal_detector(judges: dict[str, Any]) -> Any:
    """The run's own refusal judge when it has one (same substring list as its ASR), else the default."""
    from safealign.eval.helpfulness.overrefusal import default_detector

    return next((j for j in judges.values() if callable(getattr(j, "refusal_match", None))), None) or default_detector()
