"""metrics.jsonl after a crash: resuming drops what the checkpoint does not cover, including a cut-off line."""

from __future__ import annotations

import json

from safealign.io import read_jsonl
from safealign.train.run import _truncate_metrics


def test_resume_truncates_metrics_written_after_the_checkpoint_and_a_cut_off_line(tmp_path):
    """Killed while logging step 5: the last line is half a record. Resuming from checkpoint-4 used to
    crash with a JSONDecodeError on that line; now steps 1..4 are kept and the rest logged again."""
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 0.7 - s / 100}) + "\n" for s in range(1, 5))
                    + '{"step": 5, "lo')  # fmt: skip
    _truncate_metrics(path, 4)
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3, 4]
    assert path.read_text().endswith("\n")
    _truncate_metrics(path, 2)
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    _truncate_metrics(path, 0)
    assert not path.exists()
