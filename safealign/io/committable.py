"""A long run's results, kept in git: what ``git add`` takes of a sweep directory, and what it leaves out.

A sweep of 120 cells runs for days of CPU across many sessions and machines; its results (configs, pairs,
evaluation records, each cell's ``cell.json``, tables) are a few hundred KB per cell and are what the README's
numbers are computed from, while the weights, reference caches, locks and logs are large or local. The sweep writes
a ``.gitignore`` at its root that leaves out the second kind, and one holding ``*`` in each part still being
computed (a cell, the base model's evaluation), removed once that part is finished. So ``git add`` on the
directory, at any moment, takes exactly the finished parts, and a clone resumes the sweep with every committed cell
finished (a cell's ``cell.json`` and fingerprint are all that ``safealign sweep`` needs to skip it) while an
unfinished one is computed again from the start instead of from a half-copied state.
"""

from __future__ import annotations

from pathlib import Path

from safealign.io.jsonfile import write_atomic

# gitignore patterns (relative to the sweep directory): weights, caches, checkpoints, locks, logs, temporary files
RESULTS_GITIGNORE = """\
# Written by safealign (safealign/io/committable.py): inside a git repository `git add` takes this directory's
# results (configs, pairs, evaluation records, cell.json, tables) and leaves out what is large or local.
*.lock
*.tmp
workers/
reference_cache/
teacher_cache/
checkpoint-*/
**/train/final/
*.safetensors
*.bin
*.pt
*.pth
*.gguf
"""
HOLD = "# Written by safealign: this part is still being computed; git takes none of it until it finishes.\n*\n"


# what earlier versions wrote there (temporary files named .tmp-*, which write_atomic's are not): replaced by the
# current text, since a sweep directory outlives many code versions; a .gitignore of the user's own is kept
_EARLIER_GITIGNORES = (RESULTS_GITIGNORE.replace("*.tmp\n", ".tmp-*\n"),)


def mark_results(root: str | Path) -> None:
    """Write ``root/.gitignore`` (the results are kept, the heavy and local files left out) unless it is there
    (or is the text of an earlier version, which is brought up to date)."""
    path = Path(root) / ".gitignore"
    if not path.exists() or _read(path) in _EARLIER_GITIGNORES:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, RESULTS_GITIGNORE.encode())


def hold_back(folder: str | Path) -> None:
    """Keep an unfinished ``folder`` out of git (``folder/.gitignore`` holding ``*``) until :func:`release`."""
    path = Path(folder) / ".gitignore"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, HOLD.encode())


def release(folder: str | Path) -> None:
    """``folder`` is finished: git may take it (the ``.gitignore`` :func:`hold_back` wrote is removed)."""
    path = Path(folder) / ".gitignore"
    if path.is_file() and path.read_text() == HOLD:
        path.unlink()


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
