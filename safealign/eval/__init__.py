"""Jailbreak evaluation: behaviors → attacks → generation backend → judges → records.jsonl → summary.

Heavy pieces (torch models, HTTP clients, vLLM) are imported only when used. The programmatic entry
point is :func:`safealign.eval.pipeline.run_eval`, re-exported here lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_eval", "EvalConfig"]


def __getattr__(name: str) -> Any:
    if name == "run_eval":
        from safealign.eval.pipeline import run_eval

        return run_eval
    if name == "EvalConfig":
        from safealign.eval.config import EvalConfig

        return EvalConfig
    raise AttributeError(name)
