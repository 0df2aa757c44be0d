"""The error boundary between a user's input and a bug.

``UserError`` is for anything the user can fix (a bad file, row, field, config value, missing
resource): the CLI prints its one-line message and exits 2. Every other exception is a bug in
safealign or a dependency and keeps its traceback. ``UserError`` subclasses ``ValueError`` so
library callers that already catch ``ValueError`` keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input; the message names the file, row, field or key and the fix."""
