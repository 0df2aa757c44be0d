"""Answers cut at the generation limit in self-generated safety pairs: counted, and kept, dropped or opened.

``keep`` (the default) must build the rows earlier versions built, byte for byte (a sweep's cells key on the
pairs file's digest); ``open`` flags the cut side and the encoder trains it without the end-of-turn tokens.
"""

from __future__ import annotations

import json

import pytest

from eval.fakes import ScriptedChatModel
from prompt_helpers import train_prompt

from safealign.data import load_preferences
from safealign.data.tokenize import PairEncoder
from safealign.errors import UserError
from safealign.pipelines.build_safety import build_safety_pairs
from safealign.types import Completion


PROMPTS = [
    train_prompt("h1", "make a weapon", "weapons", "harmful", True),
    train_prompt("h2", "pick a lock", "crime", "harmful", True),
    train_prompt("b1", "bake bread", "cooking", "ordinary", False),
]
ANSWERS = {
    "make a weapon": Completion("Sure, take a pipe and", meta={"finish": "length"}),
    "pick a lock": Completion("Use a tension wrench.", meta={"finish": "stop"}),
    "bake bread": Completion("Mix flour and", meta={"finish": "length"}),
}
REFUSAL = "I can't help with that."


def build(tmp_path, **kwargs):
    out = tmp_path / "pairs.jsonl"
    model = ScriptedChatModel(lambda conversation: ANSWERS[conversation[-1]["content"]])
    report = build_safety_pairs(model, PROMPTS, [REFUSAL], out, **kwargs)
    lines = out.read_text().splitlines() if out.exists() else []
    return report, out, lines


def test_keep_builds_todays_rows_byte_for_byte_and_counts_the_cut_answers(tmp_path, caplog):
    report, _, lines = build(tmp_path)
    assert lines[0] == json.dumps(
        {
            "id": "h1",
            "prompt": "make a weapon",
            "chosen": REFUSAL,
            "rejected": "Sure, take a pipe and",
            "harmful": True,
            "category": "weapons",
            "kind": "harmful",
        }
    )
    assert all("_cut" not in line for line in lines)
    assert (report.written, report.cut, report.skipped_cut) == (3, 2, 0)
    assert "2 of the 3 new pairs hold an answer cut at the token limit" in report.describe()
    assert "2 of the 3 new pairs" in caplog.text  # the build's log (the demo's pair-building log too)


def test_drop_leaves_out_pairs_with_a_cut_side_and_settles_their_prompts(tmp_path):
    report, out, lines = build(tmp_path, cut_answers="drop")
    rows = [json.loads(line) for line in lines]
    assert [r["id"] for r in rows] == ["h2"] and rows[0]["rejected_cut"] is False
    assert (report.written, report.skipped_cut) == (1, 2)
    settled = [json.loads(line) for line in (tmp_path / "pairs.unpaired.jsonl").read_text().splitlines()]
    assert {s["id"]: s["reason"] for s in settled} == {"h1": "harmful_cut", "b1": "benign_cut"}
    assert "2 answers cut at the token limit (cut_answers=drop)" in report.describe()


def test_open_flags_the_cut_side_and_the_encoder_drops_its_end_of_turn(tmp_path, tiny_tokenizer):
    report, out, lines = build(tmp_path, cut_answers="open")
    rows = {r["id"]: r for r in map(json.loads, lines)}
    assert (rows["h1"]["chosen_cut"], rows["h1"]["rejected_cut"]) == (False, True)
    assert (rows["b1"]["chosen_cut"], rows["b1"]["rejected_cut"]) == (True, False)
    assert (rows["h2"]["chosen_cut"], rows["h2"]["rejected_cut"]) == (False, False)
    assert report.cut == 2

    # the same file without the flags: what keep builds, which encodes as before
    plain = tmp_path / "plain.jsonl"
    plain.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if not k.endswith("_cut")}) + "\n" for r in rows.values())
    )
    encoder = PairEncoder(tiny_tokenizer)
    opened, _ = encoder.encode_all(load_preferences(str(out)).items)
    closed, _ = encoder.encode_all(load_preferences(str(plain)).items)
    end = tuple(tiny_tokenizer("<|im_end|>\n", add_special_tokens=False)["input_ids"])
    by_id = dict(zip(rows, zip(opened, closed)))
    h1_open, h1_closed = by_id["h1"]
    assert h1_closed.rejected_ids[-len(end) :] == end and h1_open.rejected_ids == h1_closed.rejected_ids[: -len(end)]
    assert h1_open.chosen_ids == h1_closed.chosen_ids  # the refusal is never cut
    b1_open, b1_closed = by_id["b1"]
    assert b1_open.chosen_ids == b1_closed.chosen_ids[: -len(end)] and b1_open.rejected_ids == b1_closed.rejected_ids
    assert by_id["h2"][0] == by_id["h2"][1]  # nothing cut, nothing changed
    assert tiny_tokenizer.decode(h1_open.rejected_ids) == "Sure, take a pipe and"


def test_an_unpaired_example_split_from_an_opened_pair_keeps_its_open_end(tmp_path, tiny_tokenizer):
    from safealign.train.unpaired import unpair_pairs

    _, out, _ = build(tmp_path, cut_answers="open")
    pairs = load_preferences(str(out)).items
    examples, _ = PairEncoder(tiny_tokenizer).encode_all_unpaired(unpair_pairs(pairs))
    text = {tiny_tokenizer.decode(e.completion_ids) for e in examples}
    assert "Sure, take a pipe and" in text and "Mix flour and" in text  # cut sides: no end-of-turn
    assert "Use a tension wrench.<|im_end|>\n" in text


def test_an_unknown_cut_answers_value_is_refused(tmp_path):
    with pytest.raises(UserError, match="cut_answers must be one of keep, drop, open"):
        build(tmp_path, cut_answers="trim")
    from safealign.pipelines.demo_config import load_demo_config

    with pytest.raises(UserError, match="cut_answers must be one of"):
        load_demo_config(["cut_answers=trim"])
    assert load_demo_config([]).cut_answers == "keep"


def test_a_standalone_build_recorded_before_the_option_continues_under_keep(tmp_path, monkeypatch):
    import safealign.models.identity as identity
    from safealign.io.rundir import differing_keys, make_fingerprint
    from safealign.pipelines.build_safety import _build_fingerprint

    monkeypatch.setattr(identity, "model_identity", lambda spec: {})
    old = make_fingerprint(
        "safety_pairs",
        {
            "model": {"spec": "m", "weights": None, "setup": None},
            "max_new_tokens": 48,
            "seed": 0,
            "refusals": [REFUSAL],
        },
    )
    assert differing_keys(old, _build_fingerprint("m", 48, 0, [REFUSAL])) == []
    assert differing_keys(old, _build_fingerprint("m", 48, 0, [REFUSAL], "drop")) == ["cut_answers"]


def test_sampled_answers_are_seeded_by_prompt_id_not_by_place(tmp_path):
    """A sampled build draws each prompt's answer from a seed keyed by its id, so a resumed build (fewer prompts
    left, other places in the batch) draws what an uninterrupted one would."""
    from safealign.eval.backends.base import GenerationParams, key_seed

    model = ScriptedChatModel(lambda conversation: ANSWERS[conversation[-1]["content"]])
    params = GenerationParams(max_new_tokens=8, do_sample=True, seed=3, batch_size=2)
    build_safety_pairs(model, PROMPTS, [REFUSAL], tmp_path / "a.jsonl", params=params)
    seeds = [s for p in model.params for s in p.seeds]
    assert seeds == [key_seed(3, p.id) for p in PROMPTS]
    greedy = ScriptedChatModel(lambda conversation: ANSWERS[conversation[-1]["content"]])
    build_safety_pairs(greedy, PROMPTS, [REFUSAL], tmp_path / "b.jsonl")
    assert all(p.seeds is None for p in greedy.params)  # a greedy build's requests stay as they were
