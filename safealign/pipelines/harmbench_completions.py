"""HarmBench's completions files, both ways: imported as a safealign evaluation (``safealign data
import-completions``), so any safealign judge can score answers another tool generated (``safealign judge
records``) and be compared with the labels HarmBench gave them; and exported from one (``safealign data
export-completions``), so HarmBench's own ``evaluate_completions.py`` can judge safealign's answers.

Input: HarmBench's ``generate_completions.py`` output, ``{BehaviorID: [{"test_case": ..., "generation": ...}, ...]}``,
or ``evaluate_completions.py``'s, whose entries also carry ``"label"`` (1 harmful, 0 not, -1 unparseable), imported as
the verdicts of a judge named ``labels_as`` (unparseable ones unscored). Output: an evaluation directory —
``records.jsonl`` (one attempt per entry: the test case as the user message, the generation as the answer),
``behaviors.jsonl`` and ``summary.json`` (ASR under the imported labels, when there are any).

An export adds two keys to each entry, which HarmBench's scripts carry through untouched (they add ``label`` to the
entry they read): ``attempt_id``, so that an import gives each attempt back under its own id (a failed generation
is not in the file, so numbering by position would shift the attempts after it), and ``messages``, the whole
conversation where it is more than the test case (a multi-turn attack's; HarmBench's ``test_case`` is its last user
message only). An import uses them where present: entries without them are numbered by position, their test case
the one user message. What an import cannot give back: failed generations (the import's ``n_attempts`` counts the
entries it holds), and the prefill, which the generation holds in front of the continuation (the judges see the same
answer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safealign.errors import UserError
from safealign.files import check_output_dir, check_output_path
from safealign.io.records import AttemptRecord

LABELS = {1: True, 0: False, -1: None}


def import_completions(path: str | Path, behaviors: str, out: str | Path, *, attack: str = "harmbench",
                       labels_as: str = "harmbench_label") -> dict[str, Any]:  # fmt: skip
    """Write the evaluation directory ``out`` from the completions file ``path``; returns its summary."""
    from safealign.data.behaviors import write_behaviors
    from safealign.eval.records import RecordStore
    from safealign.eval.summary import summarize
    from safealign.io.jsonfile import read_json, write_json
    from safealign.pipelines.judge_records import load_behavior_spec

    path, out = Path(path), check_output_dir(out, "evaluation directory")  # before anything is read
    if (out / "records.jsonl").exists():
        raise UserError(f"{out}: already holds records.jsonl; import into a new directory")
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected HarmBench completions, an object of behavior id -> list of entries")
    by_id = {b.id: b for b in load_behavior_spec(behaviors)}
    missing = sorted(set(data) - set(by_id))
    if missing:
        raise UserError(f"{path}: {len(missing)} behavior id(s) are not in {behaviors} (first: {missing[0]})")
    records = [_record(path, behavior_id, index, entry, len(entries), by_id[behavior_id].category, attack, labels_as)
               for behavior_id, entries in data.items() for index, entry in enumerate(_entries(path, behavior_id,
                                                                                                entries))]
    _check_unique_attempts(path, records)
    out.mkdir(parents=True, exist_ok=True)
    used = [by_id[i] for i in data]
    write_behaviors(out / "behaviors.jsonl", used)
    store = RecordStore(out / "records.jsonl")
    store.append(records)
    judges = [labels_as] if any(r.verdicts for r in records) else []
    summary = summarize(records, used, [attack], judges).to_json() if judges else {}
    summary.update(source=str(path), imported=len(records), behaviors=len(used))
    write_json(out / "summary.json", summary)
    return summary


def _entries(path: Path, behavior_id: str, entries: Any) -> list[dict[str, Any]]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path}: behavior {behavior_id}: expected a list of objects (test_case, generation)")
    return entries


def _record(path: Path, behavior_id: str, index: int, entry: dict[str, Any], n: int, category: str, attack: str,
            labels_as: str) -> AttemptRecord:  # fmt: skip
    where = f"{path}: behavior {behavior_id}, entry {index}"
    for field in ("test_case", "generation"):
        if not isinstance(entry.get(field), str):
            raise UserError(f"{where}: field {field!r} must be text, got {type(entry.get(field)).__name__}")
    verdicts = {}
    if "label" in entry:
        label = entry["label"]
        if isinstance(label, bool) or label not in LABELS:
            raise UserError(f"{where}: field 'label' must be 1, 0 or -1 (HarmBench), got {label!r}")
        verdicts[labels_as] = {"harmful": LABELS[label], "error": None if label != -1 else "unparseable (label -1)",
                               "raw": f"label {label}"}
    attempt_id = entry.get("attempt_id", str(index))  # written by an export; else the entry's position
    if not isinstance(attempt_id, str):
        raise UserError(f"{where}: field 'attempt_id' must be text, got {type(attempt_id).__name__}")
    record = AttemptRecord(behavior_id=behavior_id, attack=attack, attempt_id=attempt_id, category=category,
                           n_attempts=n, messages=_messages(where, entry),
                           completion={"text": entry["generation"], "error": None, "meta": {}}, verdicts=verdicts)
    if record.prompt != entry["test_case"]:
        raise UserError(f"{where}: field 'messages' must end with the test case as its last user message")
    return record


def _messages(where: str, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The exported conversation (``messages``), else the test case as the one user message."""
    if "messages" not in entry:
        return [{"role": "user", "content": entry["test_case"]}]
    messages = entry["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                 for m in messages):
        raise UserError(f"{where}: field 'messages' must be a list of messages ({{role, content}} objects)")
    return messages


def _check_unique_attempts(path: Path, records: list[AttemptRecord]) -> None:
    """Two entries of a behavior under one attempt id would be one record, the later replacing the earlier."""
    first: dict[tuple[str, str], int] = {}
    index: dict[str, int] = {}
    for record in records:
        position = index[record.behavior_id] = index.get(record.behavior_id, -1) + 1
        seen = first.setdefault((record.behavior_id, record.attempt_id), position)
        if seen != position:
            raise UserError(f"{path}: behavior {record.behavior_id}, entry {position}: attempt_id "
                            f"{record.attempt_id!r} is also entry {seen}'s")


def export_completions(run: str | Path, out: str | Path, *, attack: str | None = None) -> dict[str, Any]:
    """Write HarmBench's completions layout (``{BehaviorID: [{"test_case", "generation"}]}``) from the evaluation in
    ``run``: one attack's attempts (``attack``; needed when the run has several), in record order; the test case is
    the attempt's last user message, the generation what the judges saw (a prefill and the continuation), with the
    attempt's id and, where it is more than the test case, its conversation (module docstring). Failed generations
    are left out and counted."""
    from safealign.eval.records import current_records
    from safealign.io.jsonfile import write_json
    from safealign.pipelines.judge_records import records_path

    out = check_output_path(out, "completions file")  # before the records are read
    source = records_path(run)
    records = current_records(source)
    if not records:
        raise UserError(f"{source}: no attempt records to export; the evaluation has answered nothing yet")
    attacks = list(dict.fromkeys(r.attack for r in records))
    if attack is None and len(attacks) > 1:
        raise UserError(f"{run}: the run has {len(attacks)} attacks ({', '.join(attacks)}); HarmBench's file holds "
                        "one method's completions: name one with --attack")
    attack = attack or attacks[0]
    if attack not in attacks:
        raise UserError(f"{run}: no attack {attack!r} in the records; they have {', '.join(attacks)}")
    chosen = [r for r in records if r.attack == attack]
    failed = sum(r.error is not None for r in chosen)
    data: dict[str, list[dict[str, Any]]] = {}
    for r in chosen:
        if r.error is None:
            data.setdefault(r.behavior_id, []).append(_entry(r))
    write_json(out, data)
    return {"attack": attack, "behaviors": len(data), "completions": sum(map(len, data.values())), "failed": failed}


def _entry(record: AttemptRecord) -> dict[str, Any]:
    """One attempt as HarmBench's entry, plus its id and (where it says more than the test case) its conversation."""
    entry: dict[str, Any] = {"test_case": record.prompt, "generation": record.answer, "attempt_id": record.attempt_id}
    if record.messages != [{"role": "user", "content": record.prompt}]:
        entry["messages"] = record.messages
    return entry
