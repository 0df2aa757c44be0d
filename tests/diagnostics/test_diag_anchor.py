"""Anchor gap on a tiny model against a brute-force computation on independently rendered prompts."""

from __future__ import annotations

import pytest
import torch

from safealign.data import PREFIXES, SafetyPrefix
from safealign.diagnostics.anchor import AnchorGap, measure_anchor_gap
from safealign.errors import UserError

from diag_helpers import naive_logps


def _prompt_ids(tokenizer, messages):
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def test_anchor_gap_matches_brute_force(tiny_model, tiny_tokenizer, encode, pairs):
    prefix = PREFIXES["responsible"]
    encoded = encode(pairs, SafetyPrefix(prefix="responsible"))
    gap = measure_anchor_gap(tiny_model, encoded, batch_size=2)
    assert gap.index == (0, 2)  # pair 1 is benign
    assert gap.transformed_pairs == 2
    expected = []
    for pair, item in zip([pairs[0], pairs[2]], [encoded[0], encoded[2]]):
        plain = _prompt_ids(tiny_tokenizer, pair.prompt)
        safe = [*pair.prompt[:-1], {"role": "user", "content": prefix + pair.prompt[-1]["content"]}]
        transformed = _prompt_ids(tiny_tokenizer, safe)
        d_chosen = naive_logps(tiny_model, transformed, item.chosen_ids) - naive_logps(
            tiny_model, plain, item.chosen_ids
        )
        d_rejected = naive_logps(tiny_model, transformed, item.rejected_ids) - naive_logps(
            tiny_model, plain, item.rejected_ids
        )
        expected.append((float(d_chosen), float(d_rejected), float(d_chosen - d_rejected)))
    got = list(zip(gap.chosen_shift.tolist(), gap.rejected_shift.tolist(), gap.gap.tolist()))
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, abs=2e-4)
    summary = gap.summary(beta=0.5)
    mean_gap = (expected[0][2] + expected[1][2]) / 2
    assert summary["gap_mean"] == pytest.approx(mean_gap, abs=2e-4)
    assert summary["edpo_logit_shift_mean"] == pytest.approx(-0.5 * mean_gap, abs=1e-4)
    assert [row["index"] for row in gap.pairs()] == [0, 2]


def test_identity_view_gives_zero_gap_and_no_harmful_pairs_is_an_error(tiny_model, encode, pairs):
    gap = measure_anchor_gap(tiny_model, encode(pairs))
    assert gap.transformed_pairs == 0
    assert gap.gap.tolist() == [0.0, 0.0]
    with pytest.raises(UserError, match="none of the 1 pairs is flagged harmful"):
        measure_anchor_gap(tiny_model, encode(pairs[1:2], SafetyPrefix()))


def test_summary_hand_computed():
    plain = torch.tensor([[-10.0, -5.0], [-8.0, -6.0]])
    transformed = torch.tensor([[-6.0, -9.0], [-8.0, -5.0]])
    # Δchosen = [4, 0], Δrejected = [−4, 1], gap = [8, −1]
    gap = AnchorGap((3, 7), plain, transformed, 2)
    assert gap.gap.tolist() == [8.0, -1.0]
    s = gap.summary(beta=0.1)
    assert (s["chosen_shift_mean"], s["rejected_shift_mean"], s["gap_mean"], s["gap_share_positive"]) == (
        2.0,
        -1.5,
        3.5,
        0.5,
    )
    assert s["edpo_logit_shift_mean"] == pytest.approx(-0.35)
    assert s["gap_median"] == 3.5  # two pairs: the mean of both gaps (torch.median would give the lower, −1)
