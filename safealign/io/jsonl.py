"""The one JSONL writer and reader of run files (records, pairs, metrics, diagnostics).

Run files grow by appends while a job runs, so a crash (kill -9, power loss, full disk) can leave the
last line cut off. The rules, shared by every run file:

- :func:`append_jsonl` first repairs the file: a last line without its newline is kept (newline added)
  when it is a complete JSON object, else dropped, so the next record starts on a line of its own and
  the file never holds a broken line in the middle. Each call is one batch: written, flushed, fsynced.
- :func:`load_jsonl` skips (and counts) a cut-off last line; any other unreadable line is a
  :class:`~safealign.errors.UserError` naming file and line, because it means the file was edited or
  damaged, and guessing would mix a broken run into results.
- Lines are split on ``\\n`` only: records written with ``ensure_ascii=False`` may hold U+2028 or
  U+0085, which ``str.splitlines`` would treat as line breaks.

:func:`parse_jsonl` is the strict variant for user input files (templates, questions, data), where a
cut-off last line is not an interrupted write of ours but a broken file to report; :func:`read_user_jsonl` reads
such a file by its path (a missing one is not found, not empty).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from safealign.errors import UserError
from safealign.files import read_text
from safealign.io.jsonfile import dumps_json, write_atomic

logger = logging.getLogger(__name__)

_TAIL_BLOCK = 1 << 16


@dataclass(frozen=True)
class JsonlRows:
    """What :func:`load_jsonl` read: the rows, and what it skipped."""

    rows: list[dict[str, Any]]
    cut_off: bool = False  # the last line was cut off by an interrupted write and skipped
    skipped: tuple[int, ...] = ()  # line numbers of other unreadable lines (only with ``strict=False``)
    lines: tuple[int, ...] = ()  # the line number of each row, for messages about a row's content

    def numbered(self) -> list[tuple[int, dict[str, Any]]]:
        """``(line number, row)`` pairs."""
        return list(zip(self.lines, self.rows))


def dumps_line(row: Any) -> str:
    """One JSONL line (with its newline): strict JSON, non-finite floats as null, non-ASCII text kept readable
    (a row holding a lone surrogate is written with \\u escapes; :func:`~safealign.io.jsonfile.dumps_json`)."""
    return dumps_json(row) + "\n"


def append_jsonl(path: str | Path, rows: Iterable[Any], *, fsync: bool = True) -> int:
    """Append ``rows`` as one batch after repairing a cut-off last line; returns the number written."""
    path = Path(path)
    text = "".join(dumps_line(row) for row in rows)  # serialise first: a bad row must not half-write
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        if fh.tell():
            _repair_tail(path, fh)
        fh.write(text.encode("utf-8"))
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
    return text.count("\n")


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Replace ``path`` with ``rows`` atomically (write a temporary file, fsync, rename)."""
    write_atomic(path, "".join(dumps_line(row) for row in rows).encode("utf-8"))


def _repair_tail(path: Path, fh) -> None:
    """Make the file end with a newline: keep a complete last object, drop a cut-off fragment."""
    size = fh.tell()
    with path.open("rb") as reader:
        reader.seek(size - 1)
        if reader.read(1) == b"\n":
            return
        start = _last_line_start(reader, size)
        reader.seek(start)
        fragment = reader.read(size - start)
    if _parses_as_object(fragment):
        fh.write(b"\n")
        return
    logger.warning("%s: dropping a cut-off last line (%d bytes, an interrupted write) before appending",
                   path, len(fragment))
    fh.truncate(start)
    fh.seek(start)


def _last_line_start(reader, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 if none), read backwards in blocks."""
    end = size
    while end > 0:
        begin = max(0, end - _TAIL_BLOCK)
        reader.seek(begin)
        found = reader.read(end - begin).rfind(b"\n")
        if found >= 0:
            return begin + found + 1
        end = begin
    return 0


def _parses_as_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def load_jsonl(path: str | Path, *, strict: bool = True) -> JsonlRows:
    """Every JSON object in ``path`` (no rows when it does not exist); see the module docstring.

    ``strict=False`` (for the report, which shows what it can) skips other bad lines too and lists
    their numbers in ``skipped`` instead of raising."""
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise UserError(f"{path}: expected a JSONL file, found a directory")
        return JsonlRows([])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    lines = raw.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    unterminated = lines.pop()  # b"" when the file ends with a newline
    rows, skipped, numbers = [], [], []
    for lineno, line in enumerate(lines, 1):
        row = _parse_line(line, path, lineno, strict)
        if row is _BAD:
            skipped.append(lineno)
        elif row is not _BLANK:
            rows.append(row)
            numbers.append(lineno)
    cut_off = False
    if unterminated.strip():
        row = _parse_line(unterminated, path, len(lines) + 1, strict=False)
        if row is _BAD:
            cut_off = True
            logger.warning("%s:%d: skipping a cut-off last line (interrupted write?)", path, len(lines) + 1)
        else:
            rows.append(row)
            numbers.append(len(lines) + 1)
    return JsonlRows(rows, cut_off, tuple(skipped), tuple(numbers))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of :func:`load_jsonl` (strict)."""
    return load_jsonl(path).rows


_BAD, _BLANK = object(), object()


def _parse_line(line: bytes, path: Path, lineno: int, strict: bool) -> Any:
    if not line.strip():
        return _BLANK
    try:
        row = json.loads(line.decode("utf-8"))
        problem = None if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except json.JSONDecodeError as exc:
        problem = f"invalid JSON ({exc.msg} at column {exc.colno})"
    if problem is None:
        return row
    if strict:
        raise UserError(f"{path}:{lineno}: {problem}; the file was edited or damaged: fix or delete that line")
    return _BAD


def parse_jsonl(text: str, source: str | Path) -> list[Any]:
    """Every JSON value in ``text`` (a user's input file named ``source``); any unreadable line,
    the last one included, is a UserError naming ``source`` and the line. Blank lines are skipped."""
    return [value for _, value in numbered_jsonl(text, source)]


def numbered_jsonl(text: str, source: str | Path) -> list[tuple[int, Any]]:
    """:func:`parse_jsonl` with each value's 1-based line number: ``(line, value)`` pairs."""
    values = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            values.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
    return values


def read_user_jsonl(path: str | Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line, object)`` for each row of a user's JSONL input file, read strictly: a missing file, a directory or
    text that is not UTF-8 is a UserError naming ``path`` and ``what`` (say which key or option named it), as is any
    unreadable line (the last one included) or a line that holds no JSON object. :func:`read_jsonl` is for run
    files, where a missing file is no rows yet and a cut-off last line an interrupted write to skip."""
    numbered = numbered_jsonl(read_text(path, what), path)
    for lineno, value in numbered:
        if not isinstance(value, dict):
            raise UserError(f"{path}: line {lineno}: expected a JSON object, got {type(value).__name__}")
    return numbered
