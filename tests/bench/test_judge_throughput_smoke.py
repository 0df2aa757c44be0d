"""bench/judge_throughput.py on the tiny random model: every judge row is printed. No timing."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import judge_throughput as bench  # noqa: E402


def test_every_judge_row_runs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["judge_throughput.py", "--model", "tiny-random", "--n", "4",
                                      "--batch-sizes", "2"])
    bench.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| classifier", "| tiered (refusal, then classifier)", "| strongreject-finetuned format (one forward)"]
    assert "| 2 (saved 2) |" in rows[2]  # half the answers are refusals: the classifier sees the other half
