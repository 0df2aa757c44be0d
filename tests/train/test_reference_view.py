"""E-DPO's reference table vs DPO's on the tiny model: rows differ exactly where the transform acts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from safealign.data import PairEncoder, build_transform
from safealign.data.formats import load_preferences
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.reference import compute_reference_columns, load_or_compute_reference


def encode(pairs, transform=None):
    encoded, _ = PairEncoder(tiny_tokenizer(), transform=transform).encode_all(pairs)
    return encoded


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("batch_size", [1, 8])
def test_e_dpo_reference_differs_from_dpo_exactly_on_transformed_rows(pairs_file, model, batch_size):
    pairs = load_preferences(str(pairs_file)).items  # 4 harmful, 4 benign rows
    plain = compute_reference_columns(model, encode(pairs), batch_size=batch_size)
    e_view = compute_reference_columns(model, encode(pairs, build_transform("safety_prefix")), batch_size=batch_size)
    flagged = torch.tensor([p.harmful is True for p in pairs])
    assert 0 < int(flagged.sum()) < len(pairs)
    assert torch.equal(e_view[~flagged], plain[~flagged])  # bit for bit where the prompt is unchanged
    assert bool((e_view[flagged] != plain[flagged]).all())  # both columns of every flagged row move


def test_identity_transform_reproduces_dpo_bit_for_bit_and_shares_its_cache(pairs_file, model, tmp_path):
    pairs = load_preferences(str(pairs_file)).items
    plain = encode(pairs)
    benign = [dataclasses.replace(p, harmful=False) for p in pairs]
    for view in (encode(pairs, build_transform("identity")), encode(benign, build_transform("safety_prefix"))):
        assert all(item.ref_prompt_ids is None for item in view)
        assert torch.equal(compute_reference_columns(model, view), compute_reference_columns(model, plain))
    first = load_or_compute_reference(model, plain, tmp_path)
    again = load_or_compute_reference(model, encode(pairs, build_transform("identity")), tmp_path)
    e_dpo = load_or_compute_reference(model, encode(pairs, build_transform("safety_prefix")), tmp_path)
    assert again.reused and again.key == first.key and torch.equal(again.table, first.table)
    assert not e_dpo.reused and e_dpo.key != first.key


def test_a_reference_view_over_max_length_scores_the_policy_response_tokens(pairs_file, model):
    """With max_length binding, E-DPO's responses are cut as DPO's are and the prefixed reference view runs over
    max_length: the collated ref_* tensors score exactly the policy's response tokens, and the precomputed table
    equals the live reference pass on them."""
    from safealign.data.collate import PreferenceCollator
    from safealign.train.logps import pair_logps

    pairs = load_preferences(str(pairs_file)).items
    tokenizer = tiny_tokenizer()
    max_length = 80  # binds: every conftest prompt renders to more than 60 byte-level tokens with its header
    e_view, report = PairEncoder(tokenizer, build_transform("safety_prefix"), max_length=max_length,
                                 max_prompt_length=70).encode_all(pairs)
    plain, _ = PairEncoder(tokenizer, max_length=max_length, max_prompt_length=70).encode_all(pairs)
    assert [(e.chosen_ids, e.rejected_ids) for e in e_view] == [(e.chosen_ids, e.rejected_ids) for e in plain]
    assert report.reference_views_over > 0 and report.responses_truncated > 0
    batch = PreferenceCollator(tokenizer.pad_token_id)(e_view)
    assert batch["input_ids"].shape[1] <= max_length < batch["ref_input_ids"].shape[1]
    for row in range(2 * len(pairs)):
        policy = batch["input_ids"][row][batch["response_mask"][row].bool()]
        ref = batch["ref_input_ids"][row][batch["ref_response_mask"][row].bool()]
        assert torch.equal(policy, ref)
    live = torch.stack(pair_logps(model, batch, reference=True)[:2], dim=1)
    torch.testing.assert_close(compute_reference_columns(model, e_view, batch_size=3), live, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["cache", "live"])
def test_a_separate_reference_model_with_a_shorter_context_is_checked(tmp_path, pairs_file, mode):
    """The reference views (E-DPO's prefixed prompts, over max_length) are scored by reference.model, not the
    policy: the check read the policy's 2048 positions and let them past a reference of 90."""
    from safealign.errors import UserError
    from safealign.train.run import run_training

    from test_trainer import tiny_config

    folder = tmp_path / "ref"
    short = tiny_model(seed=1)
    short.config.max_position_embeddings = 90
    short.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    config = tiny_config(tmp_path, pairs_file, max_steps=1)
    config.data.max_length, config.data.max_prompt_length = 80, 70  # the views run over 80 (see the test above)
    config.reference.transform, config.reference.model, config.reference.mode = "safety_prefix", str(folder), mode
    with pytest.raises(UserError, match=r"reference views run to \d+ tokens .* past the model's context of 90"):
        run_training(config)
    assert not (tmp_path / "refcache").exists() or not any((tmp_path / "refcache").glob("*.safetensors"))
