"""bench/online_rollout.py on a tiny random model: it runs both paths and reports every number. No thresholds:
time on a tiny model says nothing about a real one (equality of the paths is tests/online/test_prefix_cache.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import online_rollout as bench  # noqa: E402


def test_online_rollout_bench_times_both_paths_and_prints_the_table(capsys):
    rows = bench.main(["--shapes", "tiny", "--cases", "2x2,3x4", "--min-len", "5", "--max-len", "12",
                       "--new-tokens", "4", "--reps", "2"])
    assert [(r["prompts"], r["k"]) for r in rows] == [(2, 2), (3, 4)]
    for row in rows:
        assert all(math.isfinite(row[key]) and row[key] > 0 for key in ("plain_cpu", "reuse_cpu", "cpu_ratio"))
        assert row["same_tokens"] is True
    printed = capsys.readouterr().out
    assert "| CPU ratio plain/reused |" in printed and "load average" in printed
