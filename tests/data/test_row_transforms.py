"""Data transforms for safety training, the PKU-SafeRLHF format, and how prefixes and transition rows
are tokenized (docs/safety-training.md)."""

from __future__ import annotations

import json

import pytest
import torch

from safealign.data import PairEncoder, PreferenceCollator, load_preferences
from safealign.data.row_transforms import apply_row_transforms, check_needs, validate_specs
from safealign.data.safety_pairs import pair_row
from safealign.errors import UserError
from safealign.models.tiny import tiny_tokenizer
from safealign.types import PreferencePair

HARM = "Sure, first buy a tension wrench and then insert it slowly into the lock"


def _pair(row: int, harmful: bool, chosen="I can't help with that.", rejected=HARM, **kw) -> PreferencePair:
    prompt = ({"role": "user", "content": f"question {row}"},)
    return PreferencePair(prompt, chosen, rejected, harmful, "pairs.jsonl", row, **kw)


def _run(specs, rows, seed=0):
    specs = validate_specs(specs)
    check_needs(specs, rows, "pairs.jsonl")
    return apply_row_transforms(specs, rows, seed=seed)


class _Prompt:  # the fields pair_row reads from a built-in prompt
    def __init__(self, harmful: bool) -> None:
        self.id, self.prompt, self.category, self.kind, self.harmful = "p1", "q", "c", "k", harmful


@pytest.mark.parametrize("harmful, expected", [(True, (True, False)), (False, (True, True))])
def test_self_generated_pairs_imply_safety_labels(harmful, expected):
    """The demo's pairs: on a harmful prompt the refusal (chosen) is safe and the model's compliance
    (rejected) unsafe; on a benign prompt the answer (chosen) and the refusal (rejected) are both safe."""
    row = pair_row(_Prompt(harmful), "my own answer", refused=False, refusals=["No."], seed=0)
    assert (row["chosen"] == "No.") is harmful  # the row's orientation the labels rely on
    parsed = PreferencePair(({"role": "user", "content": "q"},), row["chosen"], row["rejected"], row["harmful"])
    [labelled] = _run(["flags_from_harmful"], [parsed])
    assert (labelled.chosen_safe, labelled.rejected_safe) == expected


def test_flags_from_harmful_keeps_labels_the_data_has_and_needs_the_harmful_flag():
    [kept] = _run(["flags_from_harmful"], [_pair(0, True, chosen_safe=False, rejected_safe=True)])
    assert (kept.chosen_safe, kept.rejected_safe) == (False, True)
    with pytest.raises(UserError, match="missing field 'harmful'.*build-safety"):
        _run(["flags_from_harmful"], [_pair(0, None)])


def test_safety_order_swaps_unsafe_chosen_and_drops_two_unsafe():
    rows = [_pair(0, True, chosen_safe=True, rejected_safe=False),
            _pair(1, True, chosen="bad a", rejected="good b", chosen_safe=False, rejected_safe=True),
            _pair(2, True, chosen="bad a", rejected="bad b", chosen_safe=False, rejected_safe=False),
            _pair(3, False, chosen="a", rejected="b", chosen_safe=True, rejected_safe=True)]
    out = _run(["safety_order"], rows)
    assert [r.row for r in out] == [0, 1, 3]
    assert (out[1].chosen, out[1].rejected, out[1].chosen_safe, out[1].rejected_safe) == ("good b", "bad a", True,
                                                                                           False)


def test_a_transform_needing_labels_names_the_field_and_the_layouts():
    with pytest.raises(UserError, match="missing field 'chosen_safe'.*pku_saferlhf.*flags_from_harmful"):
        _run(["safety_order"], [_pair(0, True)])
    with pytest.raises(UserError, match="recovery.*missing field 'refusal'"):  # benign rows only: nothing to build
        _run(["flags_from_harmful", "recovery"], [_pair(0, False)])
    with pytest.raises(UserError, match=r"data.transforms.0: data transform 'recovery': unknown parameter\(s\) k; "):
        validate_specs([{"name": "recovery", "params": {"k": 3}}])


def test_recovery_builds_a_harmful_prefix_then_the_refusal_seeded_per_row():
    rows = [_pair(i, True) for i in range(100)] + [_pair(100, False, chosen="fine answer", rejected="No.")]
    specs = ["flags_from_harmful", {"name": "recovery", "params": {"max_prefix_words": 3}}]
    out = _run(specs, rows, seed=3)
    assert out == _run(specs, rows, seed=3) and out != _run(specs, rows, seed=4)
    assert _run(specs, rows[50:], seed=3) == out[50:]  # a row's draw does not depend on the other rows
    augmented = [r for r in out if r.response_prefix]
    assert 25 < len(augmented) < 75  # probability 0.5 of 100 rows
    for r in augmented:
        k = r.meta["prefix_words"]
        assert 1 <= k <= 3 and r.response_prefix == " ".join(HARM.split()[:k])
        assert r.chosen == " I can't help with that." and r.response_prefix + r.rejected == HARM
    assert out[100].response_prefix == "" and out[100].chosen == "fine answer"  # benign rows pass through
    assert {r.meta["prefix_words"] for r in augmented} == {1, 2, 3}
    none = _run(["flags_from_harmful", {"name": "recovery", "params": {"probability": 0.0}}], rows)
    assert not any(r.response_prefix for r in none)


def test_derta_adds_prefix_rows_every_third_without_prefix_and_one_transition_row_each():
    rows = [_pair(i, True) for i in range(6)] + [_pair(6, False, chosen="fine", rejected="No.")]
    out = _run(["flags_from_harmful", "derta"], rows)
    prefixed = [r for r in out if r.meta.get("transform") == "derta"]
    transition = [r for r in out if r.meta.get("transform") == "derta_rto"]
    assert [r.meta["prefix_words"] == 0 for r in prefixed] == [False, False, True, False, False, True]
    n = len(HARM.split())
    assert all(1 <= r.meta["prefix_words"] <= n - 2 for r in prefixed if r.meta["prefix_words"])
    assert len(transition) == 6 and all(r.chosen == HARM and r.chosen_target_refusal == "I can't help with that."
                                        for r in transition)
    without = _run(["flags_from_harmful", {"name": "derta", "params": {"rto": False}}], rows)
    assert len(without) == 7 and not any(r.chosen_target_refusal for r in without)


def test_pku_saferlhf_rows_give_the_helpfulness_pair_with_both_safety_labels(tmp_path):
    rows = [{"prompt": "How do I hurt someone?", "response_0": "Hit them.", "response_1": "I won't help.",
             "is_response_0_safe": False, "is_response_1_safe": True, "better_response_id": 0,
             "safer_response_id": 1},
            {"prompt": "Bake bread?", "response_0": "Use flour.", "response_1": "Use yeast and flour.",
             "is_response_0_safe": True, "is_response_1_safe": True, "better_response_id": 1,
             "safer_response_id": 0},
            {"prompt": "x", "response_0": "a", "response_1": "b", "is_response_0_safe": True,
             "is_response_1_safe": None, "better_response_id": 0, "safer_response_id": 0}]
    path = tmp_path / "pku.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parsed = load_preferences(path)
    assert parsed.format == "pku_saferlhf" and [d.field for d in parsed.dropped] == ["is_response_1_safe"]
    first, second = parsed.items
    assert (first.chosen, first.rejected, first.chosen_safe, first.rejected_safe) == ("Hit them.", "I won't help.",
                                                                                      False, True)
    assert first.harmful is True and second.harmful is None  # harmful when a response is unsafe
    assert (second.chosen, second.chosen_safe, second.rejected_safe) == ("Use yeast and flour.", True, True)
    [swapped, kept] = apply_row_transforms([{"name": "safety_order"}], parsed.items, seed=0)
    assert (swapped.chosen, swapped.rejected) == ("I won't help.", "Hit them.")


def test_a_prefix_is_part_of_both_prompt_views_and_the_responses_continue_it():
    from safealign.data.transforms import SafetyPrefix

    tok = tiny_tokenizer()
    row = _pair(0, True, response_prefix="Sure, first buy", chosen=" I can't help.", rejected=" a wrench")
    encoded = PairEncoder(tok, transform=SafetyPrefix()).encode(row, 0)
    plain = PairEncoder(tok).encode(_pair(0, True), 0)
    prefix_ids = tuple(tok("Sure, first buy", add_special_tokens=False)["input_ids"])
    assert encoded.prompt_ids == plain.prompt_ids + prefix_ids
    assert encoded.ref_prompt_ids[-len(prefix_ids):] == prefix_ids and encoded.ref_prompt_ids != encoded.prompt_ids
    assert tok.decode(encoded.chosen_ids).startswith(" I can't help.")


def test_transition_rows_score_the_refusals_first_token_at_every_chosen_position():
    tok = tiny_tokenizer()
    row = _pair(0, True, chosen=HARM, rejected="No.", chosen_target_refusal="Sorry, no.")
    encoded = PairEncoder(tok).encode(row, 0)
    sorry = PairEncoder(tok).encode(_pair(0, True, chosen="Sorry, no.", rejected="x"), 0).chosen_ids[0]
    assert encoded.chosen_target_ids == (sorry,) * len(encoded.chosen_ids)
    # the positions end at the end-of-turn token, as the released script's labels end at its EOS: ChatML's "\n"
    # after <|im_end|> is template text, and training P(refusal | ..., <|im_end|>) there would be one slot too many
    plain = PairEncoder(tok).encode(_pair(0, True, chosen=HARM, rejected="No."), 0).chosen_ids
    assert plain[-2:] == tuple(tok("<|im_end|>\n", add_special_tokens=False)["input_ids"])
    assert encoded.chosen_ids == plain[:-1]
    batch = PreferenceCollator(0)([encoded, PairEncoder(tok).encode(_pair(1, False, chosen="a", rejected="b"), 1)])
    start = len(encoded.prompt_ids)
    targets = batch["target_ids"]
    assert (targets[0, start:start + len(encoded.chosen_ids)] == sorry).all()
    untouched = torch.ones_like(targets, dtype=torch.bool)
    untouched[0, start:start + len(encoded.chosen_ids)] = False
    assert torch.equal(targets[untouched], batch["input_ids"][untouched])


def test_derta_k_zero_follows_a_rows_position_among_the_refusal_rows_not_its_content():
    """The documented position rule (finished experiments depend on it): reordering the refusal rows moves
    k = 0 to whichever row is now 3rd, while every other row keeps its own seeded draw."""
    rows = [_pair(i, True) for i in range(3)]
    forward = {r.row: r.meta["prefix_words"] for r in _run(["flags_from_harmful", {"name": "derta", "params":
                                                                                    {"rto": False}}], rows)}
    backward = {r.row: r.meta["prefix_words"] for r in _run(["flags_from_harmful", {"name": "derta", "params":
                                                                                     {"rto": False}}], rows[::-1])}
    assert forward[2] == 0 and backward[0] == 0
    assert forward[0] > 0 and backward[2] > 0 and forward[1] == backward[1] > 0


def test_a_swap_of_chosen_and_rejected_takes_their_cut_flags_along():
    """cut_answers=open marks the answer that stopped at the generation limit (trained without end-of-turn): when a
    transform exchanges the sides, the mark must follow its answer, or the refusal would lose its end-of-turn."""
    import dataclasses

    unsafe_first = dataclasses.replace(
        _pair(1, True, chosen="bad a", rejected="good b", chosen_safe=False, rejected_safe=True),
        meta={"chosen_cut": True})
    swapped = _run(["safety_order"], [unsafe_first])[0]
    assert swapped.chosen == "good b" and swapped.meta == {"rejected_cut": True}
    cut_harm = dataclasses.replace(_pair(0, True), meta={"rejected_cut": True})
    rto = [r for r in _run(["flags_from_harmful", "derta"], [cut_harm]) if r.meta.get("transform") == "derta_rto"]
    assert rto[0].chosen == HARM and rto[0].meta.get("chosen_cut") is True and "rejected_cut" not in rto[0].meta


def test_a_swap_of_a_cross_prompt_pair_takes_each_answer_with_its_prompt():
    """A joint row (x_w, y_w) ≻ (x_l, y_l) whose chosen side is unsafe: the swap exchanges whole (prompt, answer)
    sides, or the refusal would be attached to the benign prompt and the harmful answer to the harmful one."""
    bread, bank = ({"role": "user", "content": "How do I bake bread?"},), ({"role": "user", "content": "Hack a bank?"},)
    row = PreferencePair(bread, "Sure, here is how to hack a bank.", "I can't help with that.", None, "joint.jsonl", 0,
                         rejected_prompt=bank, chosen_safe=False, rejected_safe=True)
    [swapped] = _run(["safety_order"], [row])
    assert (swapped.prompt, swapped.chosen) == (bank, "I can't help with that.")
    assert (swapped.rejected_prompt, swapped.rejected) == (bread, "Sure, here is how to hack a bank.")
    same_prompt = _pair(1, True, chosen="bad a", rejected="good b", chosen_safe=False, rejected_safe=True)
    [plain] = _run(["safety_order"], [same_prompt])
    assert plain.prompt == same_prompt.prompt and plain.rejected_prompt is None
