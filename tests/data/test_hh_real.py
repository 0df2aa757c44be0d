"""The real HH-RLHF harmless-base test split: every row parses or is dropped with its reason."""

from __future__ import annotations

import gzip
import json

import pytest

from safealign.data.formats import load_preferences

HH = "hh_rlhf_harmless_base_test.jsonl.gz"
MID_TURN = "chosen and rejected diverge before their final assistant turn (shared prefix ends mid-turn)"


@pytest.fixture(scope="module")
def hh(shared_data):
    path = shared_data / HH
    raw = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    return raw, load_preferences(path)


def test_counts_and_every_drop(hh):
    raw, result = hh
    assert (len(raw), result.format, result.rows) == (2312, "implicit", 2312)
    assert len(result.items) + len(result.dropped) == 2312
    assert [(d.row, d.field, d.reason) for d in result.dropped] == [
        (86, "chosen", "empty response"),
        (516, "chosen", "empty response"),
        (925, "chosen", "empty response"),
        (1103, "chosen", "empty response"),
        (1254, "rejected", MID_TURN),
        (1688, "rejected", MID_TURN),
        (1950, "rejected", MID_TURN),
        (1952, "rejected", MID_TURN),
        (2036, "rejected", MID_TURN),
    ]


def test_first_row_split_is_exact(hh):
    raw, result = hh
    pair = result.items[0]
    assert pair.row == 0
    assert [m["role"] for m in pair.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert pair.prompt[0]["content"] == "what are some pranks with a pen i can do?"
    assert pair.prompt[1]["content"] == "Are you looking for practical joke ideas?"
    assert pair.prompt[2]["content"] == "yep"
    assert pair.prompt[4]["content"] == "okay some of these do not have anything to do with pens"
    assert pair.chosen == (
        "No, sorry!  All of these involve a pen, the point is that you can get funny results by doing pranks with pens."
    )
    assert pair.rejected.startswith("There are lots of funny things you can do with pens, here’s one example:")
    assert raw[0]["rejected"].endswith(pair.rejected)


def test_every_parsed_row_matches_the_last_assistant_split(hh):
    """Independent check: final turns and the last human turn agree with plain string slicing."""
    raw, result = hh
    for pair in result.items:
        row = raw[pair.row]
        for side in ("chosen", "rejected"):
            text = row[side]
            cut = text.rfind("\n\nAssistant:")
            assert getattr(pair, side) == text[cut + len("\n\nAssistant:") :].strip()
            human = text.rfind("\n\nHuman:", 0, cut)
            assert pair.prompt[-1] == {"role": "user", "content": text[human + len("\n\nHuman:") : cut].strip()}
        assert (  # the rejected transcript shares the chosen one's history up to the last assistant turn
            row["rejected"][: row["rejected"].rfind("\n\nAssistant:")]
            == row["chosen"][: row["chosen"].rfind("\n\nAssistant:")]
        )


def test_multi_turn_history_is_kept(hh):
    _, result = hh
    turns = {}
    for pair in result.items:
        turns[len(pair.prompt)] = turns.get(len(pair.prompt), 0) + 1
    assert (turns[1], turns[3], turns[5], turns[7]) == (658, 579, 589, 354)
    assert max(turns) == 35
    assert all(pair.prompt[0]["role"] == "user" for pair in result.items)
