"""Behavior selection for a run: load (:mod:`safealign.eval.benchmarks.loaders`), filter, sample, limit.

Order of operations: load → categories → ids/ranges → rows → seeded sample → limit. Sampling keeps file
order among the chosen behaviors so results line up with the source file.
"""

from __future__ import annotations

import random
import re
from typing import Any, Sequence

from safealign.errors import UserError
from safealign.eval.benchmarks.loaders import BenchmarkSet, read_benchmark
from safealign.types import Behavior


def load_benchmark(config: Any) -> list[Behavior]:
    """The harmful behaviors a :class:`~safealign.eval.config.BehaviorsConfig` selects."""
    return select_configured(load_benchmark_set(config).harmful, config)


def load_benchmark_set(config: Any) -> BenchmarkSet:
    """The whole file ``config.path`` names: harmful behaviors (HarmBench's copyright ones among them when
    ``config.copyright``), benign prompts, skipped rows (unfiltered)."""
    if not config.path:
        raise UserError("behaviors.path is not set: point it at a behaviors or benchmark file (HarmBench/AdvBench/"
                        "StrongREJECT/XSTest/JailbreakBench CSV, SORRY-Bench JSONL, WildJailbreak TSV)")
    loaded = read_benchmark(config.path, targets=config.targets, what="behaviors.path")
    return loaded.including_copyright() if getattr(config, "copyright", False) else loaded


def select_configured(behaviors: Sequence[Behavior], config: Any) -> list[Behavior]:
    """:func:`select_behaviors` with the filters of a BehaviorsConfig."""
    return select_behaviors(
        behaviors,
        categories=config.categories,
        ids=config.ids,
        rows=config.rows,
        sample=config.sample,
        seed=config.seed,
        limit=config.limit,
    )


def select_behaviors(
    behaviors: Sequence[Behavior],
    *,
    categories: Sequence[str] = (),
    ids: Sequence[str] = (),
    rows: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> list[Behavior]:
    chosen = list(behaviors)
    if categories:
        known = sorted({b.category for b in chosen})
        unknown = sorted(set(categories) - set(known))
        if unknown:
            raise UserError(f"unknown behavior categories {unknown}; present: {', '.join(map(repr, known))}")
        chosen = [b for b in chosen if b.category in set(categories)]
    if ids:
        wanted = expand_ids(ids, [b.id for b in chosen])
        chosen = [b for b in chosen if b.id in wanted]
    if rows:
        positions = parse_rows(rows, len(chosen))
        chosen = [b for i, b in enumerate(chosen) if i in positions]
    if sample is not None and sample < len(chosen):
        picked = set(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [b for i, b in enumerate(chosen) if i in picked]
    return chosen[:limit] if limit is not None else chosen


def expand_ids(specs: Sequence[str], available: Sequence[str]) -> set[str]:
    """Exact ids plus inclusive ranges ``prefix_1..prefix_50`` (numeric suffixes, same prefix); a zero-padded
    lower end keeps its width (``sst_001..sst_100`` is sst_001, …, sst_100). A range matching no id is an error."""
    present = set(available)
    out: set[str] = set()
    for spec in specs:
        if ".." in spec:
            lo, hi = spec.split("..", 1)
            m_lo, m_hi = re.fullmatch(r"(.*?)(\d+)", lo), re.fullmatch(r"(.*?)(\d+)", hi)
            if not (m_lo and m_hi and m_lo.group(1) == m_hi.group(1)):
                raise UserError(f"id range {spec!r} must look like name_1..name_50 (same prefix, numeric ends)")
            prefix, first = m_lo.groups()
            width = len(first) if first.startswith("0") else 0
            matched = {f"{prefix}{str(n).zfill(width)}" for n in range(int(first), int(m_hi.group(2)) + 1)} & present
            if not matched:
                raise UserError(f"id range {spec!r} matches no behavior id (ids here look like "
                                f"{', '.join(map(repr, list(available)[:3])) or '(no ids left)'})")
            out |= matched
        elif spec not in present:
            raise UserError(f"unknown behavior id {spec!r}")
        else:
            out.add(spec)
    return out


def parse_rows(spec: str, n: int) -> set[int]:
    """Positions from ``"0:50"``, ``"3"`` or ``"0:10,20:30"`` (Python index and slice semantics, so ``-1`` is the
    last) among the ``n`` behaviors the earlier filters left. An index outside them, or a slice that selects none
    of them, is an error rather than silently nothing."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if ":" in part:
                lo, hi = part.split(":", 1)
                picked = set(range(n)[slice(int(lo) if lo else None, int(hi) if hi else None)])
            else:
                picked = {range(n)[int(part)]} if -n <= int(part) < n else set()
        except ValueError:
            raise UserError(f"behaviors.rows: cannot parse {part!r}; use e.g. 0:50 or 0:10,20:30") from None
        if not picked:
            raise UserError(f"behaviors.rows: {part!r} selects no behavior: positions run 0..{n - 1} ({n} behaviors "
                            "left after the copyright rows, behaviors.categories and behaviors.ids; rows counts "
                            "among those, not in the file)")
        out |= picked
    return out
