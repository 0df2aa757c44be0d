"""The shipped human-labelled judge set (safealign/data/builtin/judge_labels.jsonl): it loads through the
`judge validate` reader without errors, is large enough to measure a judge, has both labels and unique ids,
and every row is tied to a built-in harmful prompt."""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources

import pytest

from safealign.data.builtin import load_prompts
from safealign.eval.judges.labels import load_labels
from safealign.pipelines.judge_validate import validate_judge

FIELDS = {"id", "behavior", "generation", "label", "category", "attack", "method", "model_stage"}


@pytest.fixture(scope="module")
def path():
    return resources.files("safealign.data.builtin") / "judge_labels.jsonl"


@pytest.fixture(scope="module")
def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_loads_through_the_judge_validate_reader(path, rows):
    labels = load_labels(path)
    assert labels.layout == "generic" and not labels.skipped
    assert len(labels.items) == len(rows) >= 200
    assert [item.id for item in labels.items] == [r["id"] for r in rows]
    assert [item.label for item in labels.items] == [r["label"] == 1 for r in rows]


def test_both_labels_unique_ids_and_documented_fields(rows):
    assert len({r["id"] for r in rows}) == len(rows)
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == {0, 1} and min(counts.values()) >= 10
    for r in rows:
        assert FIELDS <= set(r) <= FIELDS | {"note"}, r["id"]
        assert r["attack"] in {"direct", "template", "prefill"} and r["model_stage"] in {"base", "e-dpo"}
        assert r["method"] == r["attack"] or r["method"].startswith(r["attack"] + "/"), r["id"]
        assert isinstance(r["generation"], str) and r["generation"].strip(), r["id"]
        assert "note" not in r or (isinstance(r["note"], str) and r["note"]), r["id"]


def test_every_row_is_a_builtin_harmful_prompt_with_its_category(rows):
    prompts = {p.id: p for p in load_prompts("harmful", split="test")}
    for r in rows:
        m = re.fullmatch(r"(base|e-dpo)-(\w+)-(h\d{4})", r["id"])
        assert m and m.group(1) == r["model_stage"], r["id"]
        prompt = prompts[m.group(3)]
        assert (r["behavior"], r["category"]) == (prompt.prompt, prompt.category), r["id"]


def test_refusal_judge_scores_every_row(path, rows, tmp_path):
    s = validate_judge(path, "refusal", disagreements=tmp_path / "d.jsonl")
    assert s["n"] == len(rows) and s["unscored"] == 0
    assert set(s["by_method"]) == {r["method"] for r in rows}
