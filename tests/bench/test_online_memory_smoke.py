"""bench/online_memory.py on a tiny random model, two steps per system: it runs and reports every number.
No thresholds: memory and time on tiny-random say nothing about a real model."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import online_memory as bench  # noqa: E402


def test_online_memory_bench_reports_peaks_ratio_and_shares():
    result = bench.main(["--shape", "tiny", "--steps", "2", "--batch", "2", "--prompts", "2", "--prompt-len", "16",
                         "--response-len", "8"])
    assert set(result) == {"offline_peak_mb", "online_peak_mb", "ratio", "share/generate", "share/score",
                           "share/update", "time/generate", "time/score", "time/update", "time/step"}
    assert all(math.isfinite(v) for v in result.values())
    assert result["share/generate"] + result["share/score"] + result["share/update"] == pytest.approx(1, abs=0.01)


def test_online_step_bench_times_both_paths(capsys):
    import online_step

    results = online_step.main(["--shape", "tiny", "--steps", "2", "--batch", "2", "--prompts", "2",
                                "--prompt-len", "16", "--response-len", "8"])
    assert list(results) == ["separate old-policy forward", "from the update forward"]
    assert all(math.isfinite(v) and v >= 0 for r in results.values() for v in r.values())
    assert "| from the update forward |" in capsys.readouterr().out
