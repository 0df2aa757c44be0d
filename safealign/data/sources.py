"""Read tabular rows from local files or HF dataset ids.

Supported local files: ``.jsonl`` / ``.ndjson`` (one JSON object per line), ``.json`` (a list of
objects, or an object holding exactly one such list, e.g. ``{"data": [...]}``), ``.csv`` / ``.tsv``,
``.txt`` (one prompt per non-blank line; lines end at ``\\n`` or ``\\r\\n`` only, so a form feed or U+2028 inside
a prompt stays in it) and ``.parquet``; any of the text formats may be gzipped (``.gz``). A ``.tsv`` cell follows
CSV quoting, as pandas and HF ``datasets`` read WildJailbreak's TSVs (``delimiter="\\t"``): a cell in double
quotes may hold tabs, newlines and doubled quotes, and those quotes are not part of its text. A source that
is not an existing path is treated as a Hugging Face dataset id (``owner/name``) and loaded with ``datasets``
at ``split`` (default ``train``).

Every reader yields ``(row, record)`` pairs: ``row`` is the 0-based index of the record in the source
(data rows, not counting a CSV header), used in error messages, drop reports and cache keys.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from safealign.errors import UserError
from safealign.io import parse_jsonl

log = logging.getLogger(__name__)

Record = dict[str, Any]
TEXT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt")  # .txt: one prompt per line
SUFFIXES = TEXT_SUFFIXES + (".parquet",)


def source_name(source: str | Path) -> str:
    """The name used for a source in messages: the path as given, or the dataset id."""
    return str(source)


def file_kind(path: Path) -> str:
    """The format of a local file from its suffix (``.gz`` stripped): jsonl, json, csv, tsv, parquet."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return "jsonl" if suffix == ".ndjson" else suffix[1:]
    raise UserError(f"{path}: unsupported file type; expected one of {', '.join(SUFFIXES)} (optionally .gz)")


def read_rows(
    source: str | Path, *, split: str | None = None, limit: int | None = None, what: str | None = None
) -> Iterator[tuple[int, Record]]:
    """Yield ``(row, record)`` from a local file or an HF dataset id; at most ``limit`` records.

    Raises UserError naming the file (and line) when it cannot be read; ``what``, the config key that named the
    source (``behaviors.path``), is named too when there is no such file.
    """
    path = Path(source).expanduser()  # "~/x.jsonl" as a shell would read it
    if path.exists():
        if path.is_dir():
            raise UserError(f"{path}: is a directory; pass a data file (jsonl, json, csv, parquet) or a dataset id")
        if split is not None:
            log.warning("%s: --split %r ignored for a local file", path, split)
        rows = _read_file(path)
    else:
        rows = _read_hub(str(source), split or "train", what)
    for row, record in rows:
        if limit is not None and row >= limit:
            return
        yield row, record


def _read_file(path: Path) -> Iterator[tuple[int, Record]]:
    kind = file_kind(path)
    if kind == "parquet":
        yield from _read_parquet(path)
        return
    try:
        text = _read_text(path, newline="" if kind == "txt" else None)
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"{path}: cannot read file: {exc}") from exc
    if kind == "txt":  # e.g. MaliciousInstruct.txt: each non-blank line a prompt; row = its 0-based line
        # read untranslated and split at "\n" only (a "\r\n" loses its "\r" to strip()): universal newlines would
        # end a line at a lone "\r" too, and splitlines() at \f, \x85, U+2028, ...
        yield from ((row, {"prompt": line.strip()}) for row, line in enumerate(text.split("\n")) if line.strip())
    elif kind == "jsonl":
        yield from _parse_jsonl(path, text)
    elif kind == "json":
        yield from _parse_json(path, text)
    else:
        yield from _parse_csv(path, text, delimiter="\t" if kind == "tsv" else ",")


def _read_text(path: Path, newline: str | None = None) -> str:
    """The file's text, line ends translated to "\\n" unless ``newline=""`` (as :func:`open`'s)."""
    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8-sig", newline=newline) as f:  # a BOM is dropped as for plain files
            return f.read()
    with open(path, encoding="utf-8-sig", newline=newline) as f:
        return f.read()


def _parse_jsonl(path: Path, text: str) -> Iterator[tuple[int, Record]]:
    for row, record in enumerate(parse_jsonl(text, path)):
        yield row, _as_record(path, row, record)


def _parse_json(path: Path, text: str) -> Iterator[tuple[int, Record]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise UserError(f"{path}: expected a JSON list of objects (or an object holding one such list)")
        data = lists[0]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for row, record in enumerate(data):
        yield row, _as_record(path, row, record)


def _parse_csv(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, Record]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        if not reader.fieldnames:
            raise UserError(f"{path}: empty file (no header row)")
        _check_unique_header(path, reader.fieldnames)
        start = reader.line_num  # lines read before the next record
        last_start = None
        for row, record in enumerate(reader):
            if None in record:
                extra = ", ".join(repr(value[:60]) for value in record[None])
                raise UserError(f"{path}: row {row}: more fields than the header has ({len(reader.fieldnames)}): "
                                f"{extra} after its last column {reader.fieldnames[-1]!r}; a field holding the "
                                f"delimiter ({delimiter!r}) must be quoted")
            last_start, start = start, reader.line_num
            yield row, dict(record)
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV near line {reader.line_num}: {exc}") from exc
    if last_start is not None:
        _check_closed_quotes(path, text, delimiter, last_start)


def _check_unique_header(path: Path, names: list[str]) -> None:
    """A name the header repeats: csv.DictReader keeps the last such column's value, so the others' would be lost
    without a word (``prompt,chosen,rejected,chosen`` read the fourth column as the chosen response). Unnamed
    (empty) columns may repeat: no field or mapping can name them."""
    counts = Counter(name for name in names if name)
    repeated = [(name, n) for name, n in counts.items() if n > 1]
    if repeated:
        name, n = repeated[0]
        raise UserError(f"{path}: column {name!r} appears {n} times in the header ({', '.join(names)}); the reader "
                        "would keep only the last one's values: rename or remove the others")


def _check_closed_quotes(path: Path, text: str, delimiter: str, start: int) -> None:
    """A quoted field never closed makes the (lenient) csv reader read the rest of the file into it, so the
    last record swallows every row after it without an error. Only the last record can hold such a field:
    read its lines (from line ``start + 1``) strictly, which fails at the end of the data inside the quotes.
    (A stray quote that a later quote closes joins the rows between them into one field without any error here;
    the behaviors layouts refuse a line break in a request or id, the benchmark layouts one in any field where
    their published rows have none: ``safealign.data.behaviors._line``.)"""
    lines = io.StringIO(text, newline="").readlines()
    raw = "".join(lines[start:])
    try:
        for _ in csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        if "unexpected end of data" not in str(exc):
            return  # another quirk the lenient reader tolerates (e.g. text after a closing quote): read as before
        fields = next(csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter))
        # the open field holds everything after its opening quote: its line is the record's end less its newlines
        opened = start + 1 + raw.count("\n") - fields[-1].count("\n") if fields else start + 1
        raise UserError(f"{path}: line {opened}: a quoted field opens there and is never closed, so the file "
                        f"from there to its end (line {len(lines)}) would be read as that one field; close or "
                        "remove the stray quote (a literal quote inside a quoted field is written twice: \"\")"
                        ) from None


def _read_parquet(path: Path) -> Iterator[tuple[int, Record]]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except ImportError as exc:
        raise UserError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from exc
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise UserError(f"{path}: cannot read parquet file: {exc}") from exc
    for row, record in enumerate(table.to_pylist()):
        yield row, record


def _read_hub(source: str, split: str, what: str | None = None) -> Iterator[tuple[int, Record]]:
    """``owner/name`` or ``owner/name/folder`` (a subset stored in a folder of the dataset repository, e.g.
    ``Anthropic/hh-rlhf/harmless-base``: the folder is passed to ``load_dataset`` as ``data_dir``)."""
    if not _looks_like_dataset_id(source):
        raise UserError(f"{source}: no such file{_set_by(source, what)} (and not a Hugging Face dataset id such as "
                        "'owner/name')")
    owner, _, rest = source.partition("/")
    name, _, data_dir = rest.partition("/")
    dataset_id = f"{owner}/{name}" if name else owner
    try:
        import datasets

        extra = {"data_dir": data_dir} if data_dir else {}
        dataset = datasets.load_dataset(dataset_id, split=split, **extra)
    except Exception as exc:  # datasets raises many types (network, missing split, missing repo)
        raise UserError(
            f"{source}: no such file{_set_by(source, what)}, and loading it as a Hugging Face dataset (split "
            f"{split!r}) failed: {exc}"
        ) from exc
    for row, record in enumerate(dataset):
        yield row, dict(record)


def _set_by(source: str, what: str | None) -> str:
    """`` (behaviors.path; a relative path is read from the current directory, /x)``: where to look for a missing
    file -- the key that named it and, for a relative path, the directory it was looked for in."""
    parts = [what] if what else []
    if not Path(source).expanduser().is_absolute():
        parts.append(f"a relative path is read from the current directory, {Path.cwd()}")
    return f" ({'; '.join(parts)})" if parts else ""


def _looks_like_dataset_id(source: str) -> bool:
    lowered = source.lower()
    if lowered.endswith(".gz") or lowered.endswith(SUFFIXES) or source.startswith((".", "/", "~")):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)*", source) is not None


def _as_record(path: Path, row: int, record: Any) -> Record:
    if not isinstance(record, dict):
        raise UserError(f"{path}: row {row}: expected a JSON object, got {type(record).__name__}")
    return record
