"""Judges: ``judge(behaviors, completions) -> list[Verdict]``; see :mod:`.base`."""

from safealign.eval.judges.base import Judge, build_judge

__all__ = ["Judge", "build_judge"]
