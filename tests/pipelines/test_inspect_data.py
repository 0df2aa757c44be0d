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


def test_inspect_shows_a_joint_pairs_second_prompt_and_scores(tmp_path):
    path = tmp_path / "j.jsonl"
    row = {"chosen_prompt": "A?", "chosen": "Yes.", "rejected_prompt": "B?", "rejected": "No.", "chosen_scores": [-2]}
    path.write_text(json.dumps(row) + "\n")
    [example] = inspect_data(str(path), tokenizer="tiny-random")["examples"]
    assert example["prompt"] == [{"role": "user", "content": "A?"}]
    assert example["rejected_prompt"] == [{"role": "user", "content": "B?"}] and example["chosen_scores"] == [-2.0]
    assert "B?" in example["rendered_rejected_prompt"] and "B?" not in example["rendered_prompt"]
