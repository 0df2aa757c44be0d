"""Whole-file JSON (summaries, configs of a run) and the JSON form of a float.

A summary is rewritten as a run progresses; :func:`write_json` replaces it atomically so a crash
leaves the old summary or the new one, never half of one.
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


def write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file, fsync, rename)."""
    write_atomic(path, (json.dumps(data, indent=indent, ensure_ascii=False) + "\n").encode("utf-8"))


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
