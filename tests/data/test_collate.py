"""Collators: exact tensors and masks; reference tensors only when some prompt differs."""

from __future__ import annotations

import torch

from safealign.data.collate import PreferenceCollator, UnpairedCollator
from safealign.data.tokenize import EncodedPair, EncodedUnpaired, PairEncoder
from safealign.data.transforms import IdentityTransform, SafetyPrefix
from safealign.types import PreferencePair

A = EncodedPair(index=4, prompt_ids=(5, 6), ref_prompt_ids=None, chosen_ids=(7,), rejected_ids=(8, 9), harmful=False)
B = EncodedPair(
    index=9, prompt_ids=(1, 2, 3), ref_prompt_ids=(1, 50, 2, 3), chosen_ids=(10, 11), rejected_ids=(12,), harmful=True
)


def t(rows):
    return torch.tensor(rows, dtype=torch.long)


def test_policy_tensors_exact():
    batch = PreferenceCollator(pad_token_id=0)([A, B])
    assert torch.equal(batch["input_ids"], t([[5, 6, 7, 0, 0], [1, 2, 3, 10, 11], [5, 6, 8, 9, 0], [1, 2, 3, 12, 0]]))
    assert torch.equal(batch["attention_mask"], t([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]))
    assert torch.equal(batch["response_mask"], t([[0, 0, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0]]))
    assert torch.equal(batch["index"], t([4, 9]))
    assert torch.equal(batch["harmful"], t([0, 1]))


def test_reference_tensors_fall_back_to_policy_prompt():
    batch = PreferenceCollator(pad_token_id=0)([A, B])
    assert torch.equal(
        batch["ref_input_ids"], t([[5, 6, 7, 0, 0, 0], [1, 50, 2, 3, 10, 11], [5, 6, 8, 9, 0, 0], [1, 50, 2, 3, 12, 0]])
    )
    assert torch.equal(
        batch["ref_attention_mask"], t([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])
    )
    assert torch.equal(
        batch["ref_response_mask"], t([[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]])
    )


def test_no_reference_keys_without_a_changed_prompt():
    unknown = EncodedPair(0, (1,), None, (2,), (3,), None)
    batch = PreferenceCollator(pad_token_id=99)([A, unknown])
    assert sorted(batch) == ["attention_mask", "harmful", "index", "input_ids", "response_mask"]
    assert torch.equal(batch["harmful"], t([0, -1]))
    assert batch["input_ids"][3].tolist() == [1, 3, 99, 99]


def test_unpaired_collator():
    x = EncodedUnpaired(2, (1, 2), (1, 9, 2), (3, 4), True, True)
    y = EncodedUnpaired(3, (5,), None, (6,), False, None)
    batch = UnpairedCollator(pad_token_id=0)([x, y])
    assert torch.equal(batch["input_ids"], t([[1, 2, 3, 4], [5, 6, 0, 0]]))
    assert torch.equal(batch["response_mask"], t([[0, 0, 1, 1], [0, 1, 0, 0]]))
    assert torch.equal(batch["ref_input_ids"], t([[1, 9, 2, 3, 4], [5, 6, 0, 0, 0]]))
    assert torch.equal(batch["ref_response_mask"], t([[0, 0, 0, 1, 1], [0, 1, 0, 0, 0]]))
    assert batch["label"].tolist() == [True, False] and batch["label"].dtype == torch.bool
    assert batch["harmful"].tolist() == [1, -1] and batch["index"].tolist() == [2, 3]


def _pairs():
    def p(q, harmful):
        return PreferencePair(({"role": "user", "content": q},), "I can't help with that.", "Sure: step one", harmful)

    return [p("How do I pick a lock?", True), p("Bake bread?", False), p("Insult my boss", True)]


def test_end_to_end_reference_differs_only_in_prompt(tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    encoded, _ = PairEncoder(tiny_tokenizer, SafetyPrefix()).encode_all(_pairs())
    batch = PreferenceCollator(pad)(encoded)
    prefix_len = len(tiny_tokenizer(SafetyPrefix().prefix, add_special_tokens=False)["input_ids"])
    for row in range(6):
        policy = batch["input_ids"][row][batch["response_mask"][row].bool()]
        ref = batch["ref_input_ids"][row][batch["ref_response_mask"][row].bool()]
        assert torch.equal(policy, ref)  # identical response tokens in both views
        policy_prompt_len = int(batch["attention_mask"][row].sum() - batch["response_mask"][row].sum())
        ref_prompt_len = int(batch["ref_attention_mask"][row].sum() - batch["ref_response_mask"][row].sum())
        assert ref_prompt_len - policy_prompt_len == (0 if row % 3 == 1 else prefix_len)
    # the benign pair (rows 1 and 4) is byte-identical in both views
    for row in (1, 4):
        n = int(batch["attention_mask"][row].sum())
        assert torch.equal(batch["input_ids"][row, :n], batch["ref_input_ids"][row, :n])


def test_identity_transform_gives_identical_tensors_and_no_ref_keys(tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    plain = PreferenceCollator(pad)(PairEncoder(tiny_tokenizer).encode_all(_pairs())[0])
    identity = PreferenceCollator(pad)(PairEncoder(tiny_tokenizer, IdentityTransform()).encode_all(_pairs())[0])
    benign_only = [p for p in _pairs() if not p.harmful]
    prefixed_benign = PreferenceCollator(pad)(PairEncoder(tiny_tokenizer, SafetyPrefix()).encode_all(benign_only)[0])
    assert "ref_input_ids" not in identity and "ref_input_ids" not in prefixed_benign
    assert sorted(plain) == sorted(identity)
    for key in plain:
        assert torch.equal(plain[key], identity[key])
    assert torch.equal(
        prefixed_benign["input_ids"], plain["input_ids"][[1, 4]][:, : prefixed_benign["input_ids"].shape[1]]
    )
