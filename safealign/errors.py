"""The error boundary between a user's input and a bug.

``UserError`` is for anything the user can fix (a bad file, row, field, config value, missing
resource): the CLI prints its one-line message and exits 2. Every other exception is a bug in
safealign or a dependency and keeps its traceback. ``UserError`` subclasses ``ValueError`` so
library callers that already catch ``ValueError`` keep working.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path


class UserError(ValueError):
    """A problem with the user's input; the message names the file, row, field or key and the fix."""


def brief(value: object, limit: int = 60) -> str:
    """A value as an error message shows it: its ``repr``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def close_match(value: str, choices: Iterable[str]) -> str | None:
    """The one of ``choices`` closest to a misspelt ``value`` (difflib's ratio >= 0.6), or None."""
    import difflib

    found = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return found[0] if found else None


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the closest of ``choices`` to ``value``, or ``""`` when none is close: for a
    message that refuses an unknown name and lists the valid ones."""
    match = close_match(value, choices)
    return f" (did you mean {match!r}?)" if match else ""


@contextlib.contextmanager
def reading(path: str | Path, what: str = "file") -> Iterator[None]:
    """Turn the errors of opening or decoding a user-named ``path`` into a ``UserError`` naming it.

    Use it only around reads of paths the user gave (a config, a data file, a run directory): an
    unreadable file the program itself wrote is a bug and keeps its traceback.
    """
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a {what}") from None
    except NotADirectoryError:
        raise UserError(f"{path}: a parent of this {what} is not a directory") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied reading this {what}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
