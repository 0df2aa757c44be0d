"""``inspect_data`` from Python: the summary ``safealign data inspect`` prints, without the CLI."""

from __future__ import annotations

import json

from safealign.pipelines.inspect_data import format_inspection, inspect_data


def test_inspect_preferences_counts_drops_and_renders_examples(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"question": "hi", "chosen": "hello", "rejected": "go away"},
            {"question": "bye", "chosen": "", "rejected": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = inspect_data(str(path), columns={"prompt": "question"}, tokenizer="tiny-random", examples=1)
    assert (summary["format"], summary["rows"], summary["parsed"], summary["dropped"]) == ("standard", 2, 1, 1)
    assert summary["drops"][0]["row"] == 1 and len(summary["examples"]) == 1
    assert "hi" in summary["examples"][0]["rendered_prompt"]
    assert "dropped 1:" in format_inspection(summary)
