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


def test_preference_data_is_not_taken_for_behaviors_whatever_its_columns(tmp_path):
    """The behaviors check must not win over a preference format ``load_preferences`` detects (PKU-SafeRLHF's
    prompt + response_0/1 columns) or one the column mapping makes (prompt, good, bad with chosen=good)."""
    pku = tmp_path / "pku.jsonl"
    pku.write_text(json.dumps({"prompt": "How do I pick a lock?", "response_0": "Call a locksmith.",
                               "response_1": "Use a pick.", "is_response_0_safe": True, "is_response_1_safe": False,
                               "better_response_id": 1, "safer_response_id": 0}) + "\n")
    summary = inspect_data(str(pku))
    assert (summary["format"], summary["parsed"]) == ("pku_saferlhf", 1)
    mapped = tmp_path / "mapped.jsonl"
    mapped.write_text(json.dumps({"prompt": "hi", "good": "hello", "bad": "go away"}) + "\n")
    summary = inspect_data(str(mapped), columns={"chosen": "good", "rejected": "bad"})
    assert (summary["format"], summary["parsed"]) == ("standard", 1)
    assert summary["examples"][0]["chosen"] == "hello"


def test_a_hub_dataset_is_read_at_the_split_given(monkeypatch):
    """Detection reads the split asked for: a data set without a 'train' split (test_prefs only) is not asked for
    one."""
    import datasets

    calls = []

    def fake_load_dataset(name, split, **kwargs):
        calls.append((name, split))
        if split != "test_prefs":
            raise ValueError(f"Unknown split {split!r}")
        return [{"prompt": "hi", "chosen": "hello", "rejected": "go away"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    summary = inspect_data("owner/prefs", split="test_prefs")
    assert (summary["format"], summary["parsed"]) == ("standard", 1)
    assert {split for _, split in calls} == {"test_prefs"}
