"""Judge an evaluation's recorded answers again with another judge (``safealign judge records``), without
generating anything: HarmBench's generate-then-evaluate split. The answers an attack took hours to get (GCG,
PAIR, a sweep's 120 cells) are judged later, e.g. by a classifier on a GPU, or by a judge validated since.

The output is an evaluation run directory of its own, ``RUN/judged/<label>/``: ``records.jsonl`` (every source
record with one more verdict, under ``label``), ``behaviors.jsonl`` and ``summary.json`` (ASR per attack for the
recorded judges and the new one on the same attempts, and their pairwise agreement), so everything that reads
an evaluation (``safealign report``, the demo's and the sweep's tables) reads it too. Records are appended batch
by batch as they are judged; a re-run judges only what is missing, and re-judges an attempt whose answer changed
in the source (a retried generation) or whose verdict is an error (a judge endpoint's HTTP 429). Only the
label's verdict belongs to the copy: every run takes each record from the source as it is now, so a source verdict
that changed without its answer changing (retried when the evaluation resumed, a judge added) is the one shown
and compared (records whose source verdicts changed are written again). The label is one plain folder name. The
judge, its parameters and the weights of the models it runs are the directory's fingerprint: other parameters
or a model retrained at the same path under the same label are refused (``--fresh`` starts over).

The judge needs each behavior's text (and context): read from ``RUN/behaviors.jsonl`` (written by every
evaluation since this command existed), else from the behaviors file the run's ``config.yaml`` names, else from
``behaviors=`` (behaviors files or ``builtin:harmful``, the demo's and sweep's prompts; several are one pool),
which fills in only ids the run's own record lacks and may not give one of them another text. A judged copy is
resumed only under the behavior texts it was judged against (its own ``behaviors.jsonl``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from safealign.data.builtin import HARMFUL_BEHAVIORS
from safealign.errors import UserError
from safealign.io.records import AttemptRecord
from safealign.types import Behavior

logger = logging.getLogger(__name__)

JUDGED = "judged"  # RUN/judged/<label>/
OUTPUTS = ("records.jsonl", "summary.json", "behaviors.jsonl")


def judged_dir(run: str | Path, label: str) -> Path:
    return Path(run) / JUDGED / check_label(label)


def check_label(label: str) -> str:
    """``label`` when it is one plain folder name: ``..`` would make ``RUN/judged/..`` the evaluation itself (its
    fingerprint, records and summary overwritten), a path would write the copy anywhere."""
    if label in ("", ".", "..") or "/" in label or "\\" in label:
        raise UserError(f"--label {label!r}: a label must be a single plain name (the folder RUN/{JUDGED}/<label>/), "
                        "without '/' or '\\', and not empty, '.' or '..'")
    return label


def judge_records(run: str | Path, judge: str, params: dict[str, Any] | None = None, *, label: str | None = None,
                  behaviors: str | Sequence[str] | None = None, batch_size: int = 32, fresh: bool = False,
                  judge_obj: Any = None) -> dict[str, Any]:  # fmt: skip
    """Judge every recorded answer of the evaluation in ``run`` with ``judge`` (built from ``params``, or
    ``judge_obj`` as given); returns the summary written to ``RUN/judged/<label>/summary.json``."""
    from safealign.data.behaviors import write_behaviors
    from safealign.eval.judges.base import build_judge
    from safealign.eval.records import RecordStore, current_records, recorded_answer
    from safealign.io.jsonfile import write_json
    from safealign.io.rundir import claim_run_dir, make_fingerprint

    run, label, params = Path(run), check_label(judge if label is None else label), dict(params or {})
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    source = records_path(run)
    records = current_records(source)  # the last record of each attempt: a retried generation supersedes
    if not records:
        raise UserError(f"{source}: no records to judge")
    recorded = list(dict.fromkeys(name for r in records for name in r.verdicts))
    if label in recorded:
        raise UserError(f"{source}: its records already carry verdicts named {label!r}; give this judge another "
                        f"name with --label")
    by_id = _behaviors(run, behaviors, {r.behavior_id for r in records})
    out = judged_dir(run, label)
    fingerprint = make_fingerprint("judge-records", {"judge": judge, "params": params},
                                   extra=_judge_weights(judge, params, judge_obj))
    claim_run_dir(out, fingerprint, outputs=OUTPUTS, overwrite=fresh, overwrite_flag="--fresh",
                  check=lambda continues: continues and _check_same_texts(out, by_id))  # fmt: skip
    scorer = judge_obj if judge_obj is not None else build_judge(judge, params)
    scorer.reset_counts()  # a judge reused for several directories: each summary counts its own answers
    write_behaviors(out / "behaviors.jsonl", by_id.values())
    store = RecordStore(out / "records.jsonl")
    done = {r.key: r for r in store}
    pending = [r for r in records if _to_judge(done.get(r.key), r, label)]
    started = time.perf_counter()
    for start in range(0, len(pending), batch_size):
        batch = pending[start:start + batch_size]
        tick = time.perf_counter()
        verdicts = scorer([by_id[r.behavior_id] for r in batch], [recorded_answer(r) for r in batch])
        per_answer = (time.perf_counter() - tick) / len(batch)
        store.append([_with_verdict(r, label, v, per_answer) for r, v in zip(batch, verdicts)])
        logger.info("judged %d of %d pending answers", min(start + batch_size, len(pending)), len(pending))
    stored = {r.key: r for r in store}
    judged = _current(records, stored, label)
    stale = [r for r in judged if r.to_json() != stored[r.key].to_json()]
    if stale:  # the source's own verdicts changed since they were copied (a failed verdict retried, a judge added)
        logger.info("%d records take the source's current verdicts", len(stale))
        store.append(stale)
    summary = _summary(run, store.path, judged, list(by_id.values()), [*recorded, label], judge, params, scorer,
                       judged_now=len(pending), seconds=time.perf_counter() - started)
    write_json(out / "summary.json", summary)
    return summary


def _judge_weights(judge: str, params: dict[str, Any], judge_obj: Any) -> dict[str, Any]:
    """The fingerprint's ``judge.weights``: the weights of the models the judge runs (a classifier retrained in
    place keeps its name and params; its verdicts would mix with the old weights'), hashed once per judge object
    (``safealign judge records`` reuses one for every directory) and before a judge built here loads. No key for
    a judge that runs no model, whose copies keep their fingerprint; a copy judged before the key existed resumes
    (compared only when both recorded it, safealign.io.rundir.WHEN_KNOWN)."""
    from safealign.eval.judges.base import judge_models, model_identities

    weights = judge_obj.weights() if judge_obj is not None else model_identities(judge_models(judge, params))
    return {"judge.weights": weights} if weights else {}


def judged_records(run: str | Path, label: str) -> list[AttemptRecord] | None:
    """The records of ``RUN/judged/<label>/`` when they judge every answer the evaluation holds now; None when
    the copy is behind its source (judged while the evaluation was still running, or before a retry changed an
    answer): then a metric read from it would cover other prompts than the evaluation's own (re-run
    ``safealign judge records`` to bring it up to date)."""
    from safealign.eval.records import current_records

    run = Path(run)
    judged = {r.key: r for r in current_records(judged_dir(run, label) / "records.jsonl")}
    source = current_records(records_path(run))
    behind = sum(not _judged(judged.get(r.key), r, label) for r in source)
    if behind:
        logger.warning("%s: %d of %d answers are not judged under %r yet (the copy is behind the evaluation); its "
                       "metrics are left out until `safealign judge records %s --label %s ...` catches up", run,
                       behind, len(source), label, run, label)
        return None
    return _current(source, judged, label)


def evaluation_dirs(root: str | Path) -> list[Path]:
    """Every evaluation directory at or below ``root`` (records.jsonl and an eval fingerprint; judged copies not
    counted): a demo's or a sweep's stages, each jailbreak and extra set."""
    from safealign.io.rundir import read_fingerprint

    found = sorted(p.parent for p in Path(root).rglob("records.jsonl") if JUDGED not in p.relative_to(root).parts)
    return [d for d in found if (fp := read_fingerprint(d)) is not None and fp.kind == "eval"]


def records_path(run: str | Path) -> Path:
    """``RUN/records.jsonl``; a directory without one is named in a UserError."""
    source = Path(run) / "records.jsonl"
    if not source.is_file():
        raise UserError(f"{run}: no records.jsonl; name an evaluation run directory (e.g. runs/eval/x, or a "
                        "demo's or sweep cell's eval/<stage>/jailbreak)")
    return source


def _judged(previous: AttemptRecord | None, record: AttemptRecord, label: str) -> bool:
    """Whether ``previous`` (this label's record of the attempt) judged the answer the source holds now."""
    return (previous is not None and label in previous.verdicts and previous.answer == record.answer
            and previous.error == record.error)


def _to_judge(previous: AttemptRecord | None, record: AttemptRecord, label: str) -> bool:
    """Whether this run judges the attempt: no verdict yet on the answer the source holds now, or a verdict that
    is an error on an answer that was generated. The judge's failure (an endpoint's HTTP 429, a classifier out of
    memory) is passing, so a re-run tries again; an unparseable judge answer is asked again too, since the
    verdict cannot tell the two apart and costs only the unscored answers. A failed generation's verdict
    ("generation failed") is final: judging it again cannot score it."""
    if previous is None or not _judged(previous, record, label):
        return True
    return record.error is None and previous.verdicts[label].get("error") is not None


def _current(source: Sequence[AttemptRecord], judged: dict[Any, AttemptRecord], label: str) -> list[AttemptRecord]:
    """Each source record as it is now with this label's verdict (and judging time) from its judged copy: only
    the label's verdict belongs to the copy; the source's own verdicts change without its answer changing (a
    judge's HTTP 429 retried when the evaluation resumes, a judge added to it later), and a copy that kept the
    ones it first copied would compare the judges on other verdicts than the evaluation's."""
    out = []
    for record in source:
        mine = judged[record.key]
        seconds = (mine.timings.get("judge_s") or {}).get(label)
        timings = record.timings if seconds is None else _judge_time(record, label, seconds)
        out.append(dataclasses.replace(record, verdicts={**record.verdicts, label: mine.verdicts[label]},
                                       timings=timings))
    return out


def _judge_time(record: AttemptRecord, label: str, seconds: Any) -> dict[str, Any]:
    """The record's timings with this label's judging time (per answer) added to its ``judge_s``."""
    return {**record.timings, "judge_s": {**(record.timings.get("judge_s") or {}), label: seconds}}


def _with_verdict(record: AttemptRecord, label: str, verdict: Any, seconds: float) -> AttemptRecord:
    entry = {"harmful": verdict.harmful, "error": verdict.error, "raw": verdict.raw,
             **({"score": verdict.score} if verdict.score is not None else {})}
    return dataclasses.replace(record, verdicts={**record.verdicts, label: entry},
                               timings=_judge_time(record, label, seconds))


def _behaviors(run: Path, specs: str | Sequence[str] | None, ids: set[str]) -> dict[str, Behavior]:
    """behavior id -> Behavior for every id the records name: the run's own record of what it evaluated first
    (``RUN/behaviors.jsonl``, else the file its ``config.yaml`` names), then ``specs`` for ids it lacks. A
    ``specs`` text that differs from the run's own under one id is refused: the judge would be shown another
    behavior than the one the answer was given to."""
    specs = [specs] if isinstance(specs, str) else list(specs or [])
    given = {b.id: b for b in pooled_behaviors(specs)} if specs else {}
    where = " + ".join(specs)
    if (run / "behaviors.jsonl").is_file():
        from safealign.data.behaviors import load_behaviors

        own_where, own = str(run / "behaviors.jsonl"), load_behaviors(run / "behaviors.jsonl")
    else:
        own_where, own = _configured_behaviors(run, required=not specs) or ("", [])
    own_by_id = {b.id: b for b in own}
    for i in sorted(ids & set(own_by_id) & set(given)):
        if _text(own_by_id[i]) != _text(given[i]):
            raise UserError(f"{run}: behavior {i!r} has another text in {where} than in {own_where}, what the run "
                            "evaluated; pass --behaviors files that agree with it, or judge this directory without "
                            "--behaviors (its own texts are used)")  # fmt: skip
    by_id = {**given, **own_by_id}
    missing = sorted(ids - set(by_id))
    if missing:
        where = " + ".join(w for w in (own_where, where) if w)
        raise UserError(f"{run}: {len(missing)} recorded behavior(s) are not in {where} (first: {missing[0]}); "
                        f"pass the behaviors the run evaluated with --behaviors FILE or {HARMFUL_BEHAVIORS}")
    return {i: by_id[i] for i in sorted(ids)}


def _text(behavior: Behavior) -> tuple[str, str]:
    """What a judge is shown of a behavior."""
    return behavior.behavior, behavior.context


def _check_same_texts(out: Path, by_id: dict[str, Behavior]) -> None:
    """A judged copy being resumed was judged against the behavior texts in its behaviors.jsonl; judging the
    rest against other texts under the same ids would mix two judgings in one set of verdicts."""
    from safealign.data.behaviors import load_behaviors

    path = out / "behaviors.jsonl"
    if not path.is_file():  # stopped before writing it: nothing judged against other texts
        return
    before = {b.id: b for b in load_behaviors(path)}
    changed = sorted(i for i in set(before) & set(by_id) if _text(before[i]) != _text(by_id[i]))
    if changed:
        raise UserError(f"{out}: {len(changed)} behavior(s) have other texts than when these answers were judged "
                        f"(first: {changed[0]}, see {path}); pass --fresh to judge every answer again against the "
                        "texts given now")  # fmt: skip


def pooled_behaviors(specs: Sequence[str]) -> list[Behavior]:
    """The behaviors of several specs as one pool (e.g. the built-in prompts and a HarmBench file, for a demo's
    jailbreak and extra-set evaluations at once); an id two of them give different texts is an error."""
    pool: dict[str, tuple[str, Behavior]] = {}
    for spec in specs:
        for behavior in load_behavior_spec(spec):
            seen = pool.setdefault(behavior.id, (spec, behavior))
            if (seen[1].behavior, seen[1].context) != (behavior.behavior, behavior.context):
                raise UserError(f"behaviors: id {behavior.id!r} is in {seen[0]} and {spec} with different texts")
    return [behavior for _, behavior in pool.values()]


def load_behavior_spec(spec: str) -> list[Behavior]:
    """A behaviors file (HarmBench/AdvBench CSV, JSON/JSONL) or ``builtin:harmful``."""
    if spec == HARMFUL_BEHAVIORS:
        from safealign.data.builtin import harmful_behaviors

        return harmful_behaviors()
    if spec.startswith("builtin:"):
        raise UserError(f"behaviors {spec!r}: the built-in behaviors are {HARMFUL_BEHAVIORS}")
    from safealign.data.behaviors import load_behaviors

    return load_behaviors(spec)


def _configured_behaviors(run: Path, *, required: bool) -> tuple[str, list[Behavior]] | None:
    """The harmful behaviors of the file the run's config.yaml names (all of them: records pick by id). None when
    there is none to read and not ``required`` (``--behaviors`` given): a run without config.yaml, one whose
    behaviors were handed in (the demo's and sweep's built-in prompts), or a named file that does not load from
    here (a relative path from another working directory; a warning says so)."""
    from safealign.config import load_config
    from safealign.eval.benchmarks import load_benchmark_set
    from safealign.eval.config import EvalConfig

    config_path = run / "config.yaml"
    hint = f"pass the behaviors it evaluated with --behaviors FILE or {HARMFUL_BEHAVIORS}"
    if not config_path.is_file():
        if required:
            raise UserError(f"{run}: no behaviors.jsonl and no config.yaml to find the behaviors in; {hint}")
        return None
    config = load_config(EvalConfig, config_path)
    if not config.behaviors.path:
        if required:
            raise UserError(f"{run}: the behaviors were handed to the evaluation (its config names no file) and the "
                            f"run predates behaviors.jsonl; {hint}")  # fmt: skip
        return None
    try:
        return config.behaviors.path, load_benchmark_set(config.behaviors).including_copyright().harmful
    except UserError as err:
        if required:
            raise
        logger.warning("%s (named by %s); taking the behaviors from --behaviors", err, config_path)
        return None


def _summary(run: Path, path: Path, records: list[AttemptRecord], behaviors: Sequence[Behavior], judges: list[str],
             judge: str, params: dict[str, Any], scorer: Any, *, judged_now: int, seconds: float) -> dict[str, Any]:
    """An evaluation summary (safealign.io.summaries.EvalSummary) of the judged records (one per source attempt,
    written to ``path``), for every judge."""
    from safealign.eval.judges.agreement import pairwise_agreement
    from safealign.eval.summary import summarize

    label = judges[-1]
    attacks = list(dict.fromkeys(r.attack for r in records))
    source = _source_summary(run)
    described = {**(source.judges if source else {}), label: {"class": type(scorer).__name__, "name": judge,
                                                              "params": params, **scorer.describe()}}
    summary = dataclasses.replace(
        summarize(records, behaviors, attacks, judges), complete=source.complete if source else None,
        wall_s=seconds, judges=described,
        records=str(path), judge_agreement=pairwise_agreement(records, attacks, judges),
        extra={"source": str(run), "label": label, "n_records": len(records), "judged_now": judged_now,
               "answers_digest": _answers_digest(records)})
    return summary.to_json()


def _source_summary(run: Path) -> Any:
    """The evaluation's own summary (whether it completed, how it described its judges); None when it has none."""
    from safealign.io.jsonfile import read_json
    from safealign.io.summaries import EvalSummary

    path = run / "summary.json"
    try:
        return EvalSummary.from_json(read_json(path), str(path)) if path.is_file() else None
    except UserError as err:  # a damaged summary costs only these facts, not the judging
        logger.warning("%s", err)
        return None


def _answers_digest(records: Sequence[AttemptRecord]) -> str:
    """Which answers were judged (sorted keys and answers), to tell two judgings of the same records apart."""
    text = "\n".join(f"{r.key}\t{r.answer}" for r in sorted(records, key=lambda r: r.key))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def format_judged(summary: dict[str, Any]) -> str:
    """The console view: ASR per attack for every judge on the same attempts, then the new judge's agreement."""
    from safealign.eval.judges.agreement import ALL_ATTEMPTS
    from safealign.eval.summary import format_table
    from safealign.io.summaries import EvalSummary

    label = summary["label"]
    lines = [f"{summary['source']}: {summary['n_records']} recorded answers, {summary['judged_now']} judged now by "
             f"{label} ({summary['wall_s']:.1f} s); written to {judged_dir(summary['source'], label)}",
             format_table(EvalSummary.from_json(summary, 'judged summary'))]
    for pair, stats in (summary.get("judge_agreement") or {}).get(ALL_ATTEMPTS, {}).items():
        if label in pair.split("|"):
            rate, kappa = (stats.get("agreement") or {}).get("value"), stats.get("kappa")
            lines.append(f"agreement {pair}: {'-' if rate is None else f'{rate:.3f}'} over {stats['n']} scored "
                         f"attempts, kappa {'-' if kappa is None else f'{kappa:.3f}'}; harmful only by "
                         f"{pair.split('|')[0]}: {stats['a_only']}, only by {pair.split('|')[1]}: {stats['b_only']}")
    return "\n".join(lines)
