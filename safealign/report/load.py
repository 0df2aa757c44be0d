"""Read a run directory (demo, training run, evaluation, defense comparison or sweep) into plain data for the report.

Everything is optional: a missing or unreadable file becomes an entry in ``RunData.missing`` /
``RunData.problems`` and the report renders what exists. A directory of none of these layouts (:data:`LAYOUTS`) is
a UserError naming them and a subfolder that holds a run, so no empty report is written. Summaries and attempt
records are read into the typed run records of :mod:`safealign.io`; a jailbreak summary written under the older ASR
rule (:attr:`safealign.io.records.AsrStats.older_rule`) gets its ASRs recomputed from the records beside it, where
kept. Nothing here formats or escapes text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from safealign.errors import UserError
from safealign.eval.records import latest_per_key
from safealign.eval.summary import resummarize, written_under_older_rule
from safealign.files import load_yaml
from safealign.io import load_jsonl, read_json
from safealign.io.records import AttemptRecord
from safealign.io.summaries import DemoSummary, EvalSummary, MTBenchSummary, OverRefusalSummary

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRun:
    name: str
    path: Path
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    diagnostics: list[dict[str, Any]]
    diagnostic_files: dict[str, Any]


@dataclass(frozen=True)
class Stage:
    """One evaluated model: ``before`` (the base model) or a trained variant."""

    name: str
    path: Path
    jailbreak_summary: EvalSummary | None
    jailbreak_records: list[AttemptRecord]  # the current record of each attempt
    overrefusal: OverRefusalSummary | None
    mtbench: MTBenchSummary | None
    # its summary.json was written under the older ASR rule (AsrStats.older_rule): the ASR blocks of
    # jailbreak_summary are recomputed from jailbreak_records (eval.summary.resummarize)
    recomputed: bool = False


@dataclass
class RunData:
    root: Path
    kind: str  # "demo" | "train" | "eval" | "defenses" | "sweep" ("unknown" only while load_run looks)
    demo_summary: DemoSummary | None = None
    trainings: list[TrainingRun] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    configs: dict[str, str] = field(default_factory=dict)  # relative path -> raw YAML text
    sweep_tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # grid name -> tables/<grid>.json
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _read_json(path: Path, data: RunData, *, required: bool = False) -> Any:
    if not path.is_file():
        if required:
            data.missing.append(relative(path, data.root))
        return None
    try:
        value = read_json(path)  # a byte order mark is read past, as everywhere else
    except UserError as exc:  # invalid JSON, or the file cannot be read (permissions, not UTF-8, gone meanwhile)
        why = str(exc).removeprefix(f"{path}: ")  # it names the whole path; the report names it in the run
        data.problems.append(f"{relative(path, data.root)}: unreadable JSON ({why})")
        return None
    if value is None:
        data.problems.append(f"{relative(path, data.root)}: holds null, not a JSON object")
    return value


def read_run_rows(path: Path, data: RunData) -> list[dict[str, Any]]:
    """The rows of a run file; the report shows what it can, so bad lines are skipped and listed."""
    return [row for _, row in _read_numbered(path, data)]


def _read_numbered(path: Path, data: RunData) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        return []
    read = load_jsonl(path, strict=False)
    notes = [f"line(s) {', '.join(map(str, read.skipped[:5]))}{', ...' if len(read.skipped) > 5 else ''}"
             ] if read.skipped else []  # fmt: skip
    notes += ["a cut-off last line (interrupted write?)"] if read.cut_off else []
    if notes:
        count = len(read.skipped) + read.cut_off
        data.problems.append(f"{relative(path, data.root)}: skipped {count} unreadable line(s): {'; '.join(notes)}")
    return read.numbered()


def _typed(kind: type[T], value: Any, path: Path, data: RunData, where: str = "") -> T | None:
    """``kind.from_json(value)``, or None (noted in ``data.problems``) when it does not fit."""
    if value is None:
        return None
    at = relative(path, data.root) + where
    try:
        return kind.from_json(value, at)  # type: ignore[attr-defined]
    except UserError as exc:
        data.problems.append(str(exc))
        return None
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:  # from_json missed a wrong shape
        logger.error("%s: reading it as %s failed", at, kind.__name__, exc_info=exc)
        data.problems.append(f"{at}: not a {kind.__name__} this version can read ({type(exc).__name__}: {exc})")
        return None


def _records(path: Path, data: RunData) -> list[AttemptRecord]:
    """The current record of each attempt (the last one written wins, as in
    :func:`safealign.eval.records.current_records`); unreadable lines and records are skipped and noted."""
    typed = (_typed(AttemptRecord, row, path, data, f":{line}") for line, row in _read_numbered(path, data))
    return latest_per_key(r for r in typed if r is not None)


def relative(path: Path, root: Path) -> str:
    """``path`` as the report names it: relative to the run directory when inside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _load_training(name: str, path: Path, data: RunData) -> TrainingRun:
    metrics = read_run_rows(path / "metrics.jsonl", data)
    if not metrics:
        data.missing.append(relative(path / "metrics.jsonl", data.root))
    files = {}
    for file in sorted((path / "diagnostics").glob("*.json")):
        value = _read_json(file, data)
        if value is not None:
            files[file.name] = value
    summary = _read_json(path / "train_summary.json", data, required=True)
    if summary is not None and not isinstance(summary, dict):
        data.problems.append(f"{relative(path / 'train_summary.json', data.root)}: expected a JSON object, "
                             f"got {type(summary).__name__}")  # fmt: skip
        summary = None
    return TrainingRun(name=name, path=path, metrics=metrics, summary=summary,
                       diagnostics=read_run_rows(path / "diagnostics.jsonl", data), diagnostic_files=files)


def _find(path: Path, *candidates: str) -> Path | None:
    return next((path / c for c in candidates if (path / c).is_file()), None)


def jailbreak_dir(stage: Path) -> Path:
    """Where an evaluated model's jailbreak evaluation lies: ``<stage>/jailbreak/`` (a demo) or the stage itself."""
    return stage / "jailbreak" if (stage / "jailbreak").is_dir() else stage


def helpfulness_summary(stage: Path, kind: str) -> Path | None:
    """The summary of a stage's ``overrefusal`` or ``mtbench`` evaluation: ``helpfulness/<kind>/summary.json``
    or the older ``helpfulness/<kind>_summary.json``; None when neither exists."""
    return _find(stage / "helpfulness", f"{kind}/summary.json", f"{kind}_summary.json")


def _load_stage(name: str, path: Path, data: RunData) -> Stage:
    jb = jailbreak_dir(path)
    help_dir = path / "helpfulness"
    over, mt = helpfulness_summary(path, "overrefusal"), helpfulness_summary(path, "mtbench")
    jb_summary = _typed(EvalSummary, _read_json(jb / "summary.json", data), jb / "summary.json", data)
    records = _records(jb / "records.jsonl", data)
    recomputed = False
    if jb_summary is not None and records and written_under_older_rule(jb_summary):
        # its ASRs as the current rule gives them; without records, run_warnings names the older rule
        jb_summary, recomputed = resummarize(jb_summary, records), True
    if jb_summary is None and not records and not (jb / "summary.json").is_file():  # else: a problem, noted
        data.missing.append(f"{relative(jb, data.root)}/summary.json (jailbreak evaluation)")
    # only a demo stage (its evaluation under jailbreak/) has helpfulness/, and only over-refusal (MT-Bench is a
    # command of its own); an evaluation or a defense comparison keeps its over-refusal in the jailbreak summary
    if over is None and jb != path:
        data.missing.append(f"{relative(help_dir, data.root)}/ (over-refusal results)")
    return Stage(
        name=name, path=path, jailbreak_summary=jb_summary, jailbreak_records=records,
        overrefusal=_typed(OverRefusalSummary, _read_json(over, data), over, data) if over else None,
        mtbench=_typed(MTBenchSummary, _read_json(mt, data), mt, data) if mt else None, recomputed=recomputed,
    )


def _collect_configs(data: RunData) -> None:
    patterns = ("config.yaml", "train/*/config.yaml", "eval/*/config.yaml", "eval/*/*/config.yaml")
    for pattern in patterns:
        for path in sorted(data.root.glob(pattern)):
            text = path.read_text(encoding="utf-8", errors="replace")
            try:
                load_yaml(text)
            except yaml.YAMLError as exc:
                data.problems.append(f"{relative(path, data.root)}: not valid YAML ({exc.__class__.__name__})")
            data.configs[relative(path, data.root)] = text


def _stage_order(root: Path, summary: DemoSummary | None) -> list[str]:
    names = sorted(p.name for p in (root / "eval").iterdir() if p.is_dir()) if (root / "eval").is_dir() else []
    preferred = ["before", *(summary.after if summary else ())]
    return [n for n in preferred if n in names] + [n for n in names if n not in preferred]


def _named_stages(summary: DemoSummary | None) -> list[str]:
    """The stages a demo's summary names: ``before`` and each trained one (a single stage is stored unnamed)."""
    if summary is None:
        return []
    return [*(["before"] if summary.before else []), *(summary.after if list(summary.after) != ["after"] else [])]


def _unevaluated(names: Any, data: RunData) -> None:
    """Each stage the run's summary.json names whose ``eval/<name>/`` is missing, added to ``data.missing``."""
    for name in names:
        if not (data.root / "eval" / name).is_dir():
            data.missing.append(f"eval/{name}/ (evaluation of {name}, named in summary.json)")


def _has_runs(root: Path) -> bool:
    """Whether ``root`` holds the ``eval/*/`` or ``train/*/`` folders of a demo or defense comparison."""
    return any(p.is_dir() for p in (*root.glob("eval/*"), *root.glob("train/*")))


# what load_run recognises, in the order it looks
LAYOUTS = ("a sweep (cells/)", "a defense comparison or a demo (summary.json; or eval/*/ or train/*/ folders while "
           "one runs)", "a training run (metrics.jsonl or train_summary.json)",
           "an evaluation (summary.json, records.jsonl or jailbreak/)")


def _looks_like_run(folder: Path) -> bool:
    """Whether ``folder`` holds any of :data:`LAYOUTS`' files (without reading them)."""
    names = ("cells", "summary.json", "metrics.jsonl", "train_summary.json", "records.jsonl", "jailbreak")
    return any((folder / name).exists() for name in names) or _has_runs(folder)


def _no_run(root: Path, data: RunData) -> str:
    """Why ``root`` gets no report: the layouts read, what was wrong with a file that was there, and the
    subfolders one level down that hold a run (the usual mistake: the folder above the run)."""
    runs = sorted(p for p in root.iterdir() if p.is_dir() and _looks_like_run(p))
    problems = f" ({'; '.join(data.problems)})" if data.problems else ""
    hint = f"; a subfolder holds one: safealign report {runs[0]}" if runs else ""
    if len(runs) > 1:
        hint += f" (others: {', '.join(p.name for p in runs[1:6])}{', ...' if len(runs) > 6 else ''})"
    return (f"{root}: no run of a layout the report reads{problems}; it reads {'; '.join(LAYOUTS)}{hint}. Nothing "
            "was written")


def load_run(root: str | Path) -> RunData:
    """Load whatever a run directory holds; see the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"run directory not found: {root}")
    root = root.resolve()  # "." has no name to title the report or name its stage
    data = RunData(root=root, kind="unknown")
    top = _read_json(root / "summary.json", data)
    if (root / "cells").is_dir():  # safealign sweep: one table per grid file (none yet while it first runs)
        data.kind = "sweep"
        for path in sorted((root / "tables").glob("*.json")):
            table = _read_json(path, data)
            if isinstance(table, dict) and isinstance(table.get("settings"), list):
                data.sweep_tables[path.stem] = table
            else:
                data.problems.append(f"{relative(path, root)}: not a sweep table")
        if not data.sweep_tables:
            data.missing.append("tables/*.json (run the sweep, or `safealign sweep GRID --table` to see progress)")
    elif isinstance(top, dict) and top.get("kind") == "defense_comparison":  # safealign defenses: eval/<method>/
        data.kind = "defenses"
        methods = top.get("methods", {})
        if not isinstance(methods, (dict, list)) or not all(isinstance(n, str) for n in methods):
            data.problems.append("summary.json: field methods: expected an object keyed by method name")
            methods = {}
        data.stages += [_load_stage(n, root / "eval" / n, data) for n in methods if (root / "eval" / n).is_dir()]
        _unevaluated(methods, data)
    elif isinstance(top, dict) and ("before" in top or "after" in top):
        data.kind, data.demo_summary = "demo", _typed(DemoSummary, top, root / "summary.json", data)
    elif _has_runs(root):  # a demo or defense comparison still running, stopped, or with its summary.json damaged
        data.kind = "demo"
        if top is None:
            data.missing.append("summary.json (run not finished?)")
        else:
            data.problems.append("summary.json: neither a demo's (before/after) nor a defense comparison's (kind)")
    elif (root / "metrics.jsonl").is_file() or (root / "train_summary.json").is_file():
        data.kind = "train"
        data.trainings.append(_load_training(root.name, root, data))
    elif top is not None or (root / "records.jsonl").is_file() or (root / "jailbreak").is_dir():
        data.kind = "eval"
        data.stages.append(_load_stage(root.name, root, data))
    if data.kind == "unknown":
        raise UserError(_no_run(root, data))
    if data.kind == "demo":
        train_dirs = sorted(p for p in (root / "train").glob("*") if p.is_dir()) if (root / "train").is_dir() else []
        if not train_dirs:
            data.missing.append("train/ (training runs)")
        data.trainings += [_load_training(p.name, p, data) for p in train_dirs]
        stage_names = _stage_order(root, data.demo_summary)
        _unevaluated(_named_stages(data.demo_summary), data)
        if not stage_names:
            data.missing.append("eval/ (evaluations)")
        data.stages += [_load_stage(n, root / "eval" / n, data) for n in stage_names]
    _collect_configs(data)
    return data
