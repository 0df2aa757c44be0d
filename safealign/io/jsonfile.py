"""Whole-file JSON (summaries, configs of a run) and the JSON form of a float.

A summary is rewritten as a run progresses; :func:`write_json` replaces it atomically so a crash
leaves the old summary or the new one, never half of one.

Every JSON text safealign writes (these files and JSONL lines) comes from :func:`dumps_json`: strict
JSON, so a NaN or infinite float is written as ``null`` (never ``NaN``/``Infinity``, which other tools
reject), and always encodable as UTF-8: a string holding a lone UTF-16 surrogate (``"\\ud83d"`` in a
behaviors file or a remote model's answer) is written with ``\\u`` escapes, which read back unchanged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from safealign.errors import UserError
from safealign.files import write_atomic


def finite_or_none(value: Any) -> Any:
    """``None`` for a NaN or infinite float (JSON has no such numbers), any other value unchanged."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finite_json(value: Any) -> Any:
    """``value`` with :func:`finite_or_none` applied to every float in it, through dicts, lists and tuples
    (a non-finite float dict key becomes its ``str``, as ``json.dumps`` would write it)."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {(str(k) if isinstance(k, float) and not math.isfinite(k) else k): finite_json(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def dumps_json(data: Any, *, indent: int | None = None) -> str:
    """``data`` as strict JSON text that encodes as UTF-8; see the module docstring.

    Non-ASCII text is kept readable; only a text holding a lone surrogate is written all-ASCII."""
    try:
        text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        data = finite_json(data)
        text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: \u escapes keep it, losslessly
        text = json.dumps(data, indent=indent, ensure_ascii=True, allow_nan=False)
    return text


def write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (:func:`dumps_json`) to ``path`` atomically (temporary file, fsync, rename)."""
    write_atomic(path, (dumps_json(data, indent=indent) + "\n").encode("utf-8"))


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path``; an unreadable file is a UserError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError as exc:
        raise UserError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
