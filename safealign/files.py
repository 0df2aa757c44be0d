"""Reading a user's text file (config, template, targets) and checking an output file, with named errors.

Every failure is a UserError that names the path and what was expected: a missing file, a directory,
a binary file, bytes that are not UTF-8 (with the line), a BOM is dropped. Data files with rows have
their own readers (``safealign.data.sources``); this module is for the small files around them.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import yaml

from safealign.errors import UserError, brief, reading

_BOOL, _INT, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_YAML_1_2_FLOAT = re.compile(r"^(?:[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
                             r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class ConfigLoader(yaml.SafeLoader):
    """YAML as a config's author means it, the YAML 1.2 core schema's plain scalars: ``true``/``false`` are the
    only booleans, ``5e-2`` and ``1e-8`` are numbers, and ``10:50`` (base 60 in YAML 1.1), ``0123`` (octal),
    ``No``/``on``/``off`` (booleans), ``2024-01-01`` (a date) and ``=`` are text. PyYAML's ``safe_load`` reads
    YAML 1.1, so a row range became 650, a model name 83, a prompt False and an epsilon a string. Every config
    file, data file of YAML and ``key=value`` value safealign reads goes through this one loader (:func:`load_yaml`)."""


_DROPPED = (_BOOL, _INT, _FLOAT, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")  # `=` is text too
ConfigLoader.yaml_implicit_resolvers = {  # YAML 1.1's booleans, numbers and dates dropped; null and `<<` kept
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
ConfigLoader.add_implicit_resolver(  # decimal without a leading zero, and hexadecimal (as YAML 1.1 read it)
    _INT, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|[-+]?0x[0-9a-fA-F]+)$"), list("-+0123456789"))
ConfigLoader.add_implicit_resolver(_FLOAT, _YAML_1_2_FLOAT, list("-+.0123456789"))


class ConfigDumper(yaml.SafeDumper):
    """Writes text that either YAML version would read as something else (``5e-2``, ``No``, ``10:50``) quoted, so
    a saved config reads back the same through :class:`ConfigLoader` and through a plain ``yaml.safe_load``."""


ConfigDumper.add_implicit_resolver(_FLOAT, _YAML_1_2_FLOAT, list("-+.0123456789"))


def load_yaml(text: str) -> Any:
    """``text`` read by :class:`ConfigLoader`; raises ``yaml.YAMLError`` for text that is not YAML."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader


class TextChanged(ValueError):
    """A ``key=value`` value that YAML would read as other than the text written (:func:`load_value`)."""


def load_value(text: str) -> Any:
    """A command line's ``key=value`` value read by :func:`load_yaml` (``5e-4``, ``true``, ``null``, ``'quoted'``,
    ``[a, b]``, ``{k: v}``); a TextChanged saying how YAML would read it where that changes the text: an unquoted
    `` #...`` is a comment and was dropped (a template ``Sure #1 {target}`` became ``Sure``), text not opening with
    ``{``/``[`` read as a mapping or list (``Sure: {target}``), unquoted text that loses spaces or line breaks.
    Raises ``yaml.YAMLError`` for text that is not YAML."""
    value = load_yaml(text)
    scalars = [t for t in yaml.scan(text, Loader=ConfigLoader) if isinstance(t, yaml.ScalarToken)]
    for index in (i for i, char in enumerate(text) if char == "#"):
        if not any(t.start_mark.index <= index < t.end_mark.index for t in scalars):  # not inside a text: a comment
            comment = text[index:].partition("\n")[0]
            raise TextChanged(f"YAML would read {comment!r} as a comment and drop it")
    if isinstance(value, (dict, list)) and not text.lstrip().startswith(("{", "[")):
        kind, form = ("mapping", "{key: value}") if isinstance(value, dict) else ("list", "[a, b]")
        raise TextChanged(f"YAML would read it as a {kind} {brief(value)} (a {kind} is written {form})")
    quoted = len(scalars) == 1 and scalars[0].style in ("'", '"')
    if isinstance(value, str) and value != text and not quoted:
        raise TextChanged(f"YAML would read it as {brief(value)}")
    return value


def yaml_quoted(text: str) -> str:
    """``text`` as a single-quoted YAML scalar, which :func:`load_yaml` reads back as ``text``."""
    return "'" + text.replace("'", "''") + "'"


def dump_yaml(data: Any) -> str:
    """``data`` as YAML that :func:`load_yaml` (and YAML 1.1) reads back as it is, keys in their order."""
    return yaml.dump(data, Dumper=ConfigDumper, sort_keys=False, allow_unicode=False)


def read_text(path: str | Path, what: str = "text file") -> str:
    """The UTF-8 text of ``path`` (a leading BOM dropped); UserError naming the path when it cannot be."""
    path = Path(path)
    with reading(path, what):  # missing, a directory, no permission
        data = path.read_bytes()
    return decode_text(data, path, what)


def decode_text(data: bytes, path: str | Path, what: str = "text file") -> str:
    if b"\x00" in data[:65536]:  # UTF-8 text never holds NUL; a zip, pickle or model file does
        raise UserError(f"{path}: is a binary file, not a {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            f"save the {what} as UTF-8"
        ) from None


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """An output file a run appends to: not a directory, inside a directory, and (if present) UTF-8 text."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; expected an {what} path (e.g. {path / 'pairs.jsonl'})")
    _check_folders_above(path)
    if path.exists():
        read_text(path, what)  # appending to a binary or non-UTF-8 file would leave it unreadable
    return path


def check_output_path(path: str | Path, what: str = "output file") -> Path:
    """A file a command writes whole (or replaces): not a directory, and no file where a folder above it must be.
    Checked before the work, which otherwise ended in a traceback from the write after it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; name the {what} to write (a file path)")
    _check_folders_above(path)
    return path


def check_output_dir(path: str | Path, what: str = "output directory") -> Path:
    """A directory a command writes into: not an existing file, and no file where a folder above it must be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file; name the {what} to write (a directory)")
    _check_folders_above(path)
    return path


def _check_folders_above(path: Path) -> None:
    """The nearest existing folder above ``path`` must be a folder: a file there makes every write under it fail."""
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.exists() and not above.is_dir():
        raise UserError(f"{path}: {above} is a file, not a directory")


def check_jsonl_output(path: str | Path, option: str = "--out") -> Path:
    """An output a command writes as JSON lines must be named so: safealign reads a file by its suffix
    (safealign.data.sources.file_kind), so JSON lines written to ``p.json``, ``p.jsonl.gz`` or ``p.csv`` could not
    be read back. Checked before a model loads."""
    path = Path(path)
    if not path.name.lower().endswith((".jsonl", ".ndjson")):
        raise UserError(f"{option} {path}: this command writes JSON lines, which safealign reads back only from a "
                        f".jsonl (or .ndjson) file; name it e.g. {_plain(path).with_suffix('.jsonl')}")
    return path


def _plain(path: Path) -> Path:
    return path.with_name(path.name[:-3]) if path.name.lower().endswith(".gz") else path


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a temporary file beside it, fsynced, then renamed over it, so a
    reader sees the old file or the new one, never half of one. A failed write (a full disk) removes its
    temporary file; after the rename the folder is fsynced too, so the new name survives a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one temporary name per writer: two processes rewriting the same summary (sweep workers) must not share it
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: str | Path) -> None:
    """Flush ``folder``'s entries (a name just created or renamed there) to disk; best effort: a platform or
    file system that cannot open or sync a folder (Windows, some network mounts) is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
