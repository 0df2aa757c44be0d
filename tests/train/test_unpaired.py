"""Unpaired losses (KTO, BCO) in PreferenceTrainer: unpairing, KL partners, cache and live reference."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from types import SimpleNamespace

from safealign.data import PairEncoder, build_transform
from safealign.data.tokenize import EncodedUnpaired
from safealign.errors import UserError
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.config import LossConfig
from safealign.train.data import DATA_KINDS, check_reference_fits
from safealign.train.reference import reference_view, reference_view_hash
from safealign.train.run import run_training
from safealign.train.unpaired import UnpairedItem, UnpairedKLCollator, unpair_pairs, with_kl_partners
from safealign.types import PreferencePair, UnpairedExample

from test_trainer import read_metrics, tiny_config


def kto_config(tmp_path, pairs_file, name="kto", **overrides):
    config = tiny_config(tmp_path, pairs_file, **overrides)
    config.data.unpair = True
    config.losses = [LossConfig(name=name, params={"beta": 0.1})]
    return config


def encoded_row(index, prompt, completion, label=True, ref=None):
    return EncodedUnpaired(index, tuple(prompt), tuple(ref) if ref else None, tuple(completion), label, None)


def test_unpair_puts_chosen_first_then_rejected_with_labels():
    pairs = [
        PreferencePair(({"role": "user", "content": f"q{i}"},), f"c{i}", f"r{i}", harmful=i == 0) for i in range(3)
    ]
    out = unpair_pairs(pairs)
    assert [(e.completion, e.label) for e in out] == [("c0", True), ("c1", True), ("c2", True),
                                                      ("r0", False), ("r1", False), ("r2", False)]
    assert [e.harmful for e in out] == [True, False, False, True, False, False]


def test_unpair_gives_a_cross_prompt_rejected_response_its_own_prompt():
    a, b = ({"role": "user", "content": "a?"},), ({"role": "user", "content": "b?"},)
    chosen, rejected = unpair_pairs([PreferencePair(a, "yes", "no", rejected_prompt=b)])
    assert (chosen.prompt, chosen.completion, rejected.prompt, rejected.completion) == (a, "yes", b, "no")


def test_kl_partner_is_next_row_with_a_different_prompt_and_fits_max_length():
    rows = [encoded_row(0, [1, 2], [10, 11]), encoded_row(1, [1, 2], [20]), encoded_row(2, [3], [30, 31, 32, 33]),
            encoded_row(3, [4, 5, 6], [40], ref=[7, 4, 5, 6])]
    items = with_kl_partners(rows, max_length=6)
    # row 0 and 1 share a prompt, so row 0 skips row 1; row 3 (ref prompt of 4 tokens) gets a 2-token cut
    assert [it.kl_completion_ids for it in items] == [(30, 31, 32, 33), (30, 31, 32, 33), (40,), (10, 11)]
    batch = UnpairedKLCollator(pad_token_id=0)(items)
    assert batch["kl_input_ids"][0].tolist()[:6] == [1, 2, 30, 31, 32, 33]
    assert batch["kl_response_mask"][3].tolist()[:5] == [0, 0, 0, 1, 1]
    assert batch["ref_kl_input_ids"][3].tolist()[:6] == [7, 4, 5, 6, 10, 11]  # reference view of row 3's prompt
    assert batch["ref_kl_input_ids"][0].tolist()[:6] == [
        1,
        2,
        30,
        31,
        32,
        33,
    ]  # unchanged rows repeat the policy prompt


def test_kl_partner_completion_is_cut_to_the_policy_prompt_as_without_a_reference_view():
    """The partner completion fits max_length beside the policy prompt (KTO's cut, E-variant or not); the
    prefixed reference view of the mismatched sequence may run over by the prefix's extra tokens."""
    e_rows = [encoded_row(0, [4, 5, 6], [40], ref=[7, 7, 4, 5, 6]), encoded_row(1, [1], [10, 11, 12, 13])]
    plain_rows = [dataclasses.replace(row, ref_prompt_ids=None) for row in e_rows]
    e_items, plain_items = with_kl_partners(e_rows, max_length=6), with_kl_partners(plain_rows, max_length=6)
    assert e_items[0].kl_completion_ids == plain_items[0].kl_completion_ids == (10, 11, 12)  # 6 - 3


def test_kl_partner_reference_views_are_counted_and_checked_against_the_context():
    """A KL partner's completion is cut to fit the row's POLICY prompt, so the mismatched sequence's prefixed
    reference view runs over max_length by the prefix: the truncation report counted each row's own completion
    only (0 over while a KL view ran 67 tokens past it), and check_reference_fits let it past a 120-position model."""
    def example(text, completion, label, harmful, row):
        return UnpairedExample(({"role": "user", "content": text},), completion, label, harmful, "kto.jsonl", row)

    examples = [example("How do I pick a lock?", "No.", False, True, 0),
                example("Name a prime number.", "7 " * 100, True, False, 1)]
    encoder = PairEncoder(tiny_tokenizer(), build_transform("safety_prefix", prefix="responsible"), max_length=120,
                          max_prompt_length=119)
    items, report = DATA_KINDS["unpaired"].encode(encoder, examples, 120, True)
    widths = [len(prompt) + max(map(len, responses)) for prompt, responses in map(reference_view, items)]
    ref_prompt, (own, kl) = reference_view(items[0])
    assert len(ref_prompt) + len(own) <= 120 < len(ref_prompt) + len(kl)  # only the KL view runs over
    assert (report.reference_views_over, report.reference_overrun_max) == (1, max(widths) - 120)
    context = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=120))
    with pytest.raises(UserError, match=f"reference views run to {max(widths)} tokens"):
        check_reference_fits(context, 120, report)
    _, without_partners = DATA_KINDS["unpaired"].encode(encoder, examples, 120, False)  # BCO: no KL view
    assert without_partners.reference_views_over == 0


def test_cache_key_covers_the_kl_partner_column():
    rows = [encoded_row(0, [1], [10]), encoded_row(1, [2], [20])]
    a = [UnpairedItem(rows[0], (20,)), UnpairedItem(rows[1], (10,))]
    b = [UnpairedItem(rows[0], (21,)), UnpairedItem(rows[1], (10,))]
    assert reference_view_hash(a) != reference_view_hash(b)


@pytest.mark.parametrize("name, step1_loss", [("kto", 0.5), ("bco", math.log(2))])
def test_unpaired_run_starts_at_the_reference_with_grouped_metrics(tmp_path, pairs_file, name, step1_loss):
    # policy == reference at step 1: every reward is 0, KTO's z = 0 → 1 − σ(0) = 0.5; BCO δ = 0 → log 2
    result = run_training(kto_config(tmp_path, pairs_file, name, max_steps=2, per_device_train_batch_size=8))
    rows = [r for r in read_metrics(result.output_dir) if "loss" in r]
    assert rows[0]["loss"] == pytest.approx(step1_loss, abs=1e-6)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert key in rows[0], key
    assert rows[1]["loss"] != pytest.approx(step1_loss, abs=1e-6)  # it trains
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    assert summary["input"] == "unpaired" and summary["examples"] == 16  # 8 pairs unpaired


def naive_logps(model, ids, start):
    """Summed log-probs of ids[start:] given ids[:start], from the full logits (independent of safealign)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return sum(float(logits[t - 1, ids[t]]) for t in range(start, len(ids)))


@pytest.mark.parametrize("mode", ["cache", "live"])
def test_kto_scores_mismatched_sequences_for_the_kl_point(tmp_path, pairs_file, monkeypatch, mode):
    from safealign.train import trainer as trainer_module

    seen = []
    original = trainer_module.PreferenceTrainer._unpaired_logps

    def spy(self, model, inputs):
        x = original(self, model, inputs)
        seen.append((inputs["index"].tolist(), x))
        return x

    monkeypatch.setattr(trainer_module.PreferenceTrainer, "_unpaired_logps", spy)
    config = kto_config(tmp_path, pairs_file, max_steps=1, per_device_train_batch_size=16)
    config.reference.transform = "safety_prefix"  # E-KTO: harmful rows' reference sees the prefixed prompt
    config.reference.mode = mode
    run_training(config)
    indices, x = seen[0]

    from safealign.data import build_transform
    from safealign.data.formats import load_preferences

    examples = unpair_pairs(load_preferences(str(pairs_file)).items)
    policy_enc = PairEncoder(tiny_tokenizer()).encode_all_unpaired(examples)[0]
    ref_enc = PairEncoder(tiny_tokenizer(), transform=build_transform("safety_prefix")).encode_all_unpaired(examples)[0]
    model = tiny_model()
    n = len(examples)
    for pos, i in enumerate(indices):
        j = (i + 1) % n  # unpaired order c0..c7, r0..r7: the next row always has another prompt
        prompt, ref_prompt = policy_enc[i].prompt_ids, ref_enc[i].ref_prompt_ids or policy_enc[i].prompt_ids
        kl_completion = policy_enc[j].completion_ids
        assert float(x.kl_logps[pos]) == pytest.approx(
            naive_logps(model, prompt + kl_completion, len(prompt)), abs=1e-4
        )
        assert float(x.ref_kl_logps[pos]) == pytest.approx(
            naive_logps(model, ref_prompt + kl_completion, len(ref_prompt)), abs=1e-4)
        own = policy_enc[i].completion_ids
        assert float(x.ref_logps[pos]) == pytest.approx(naive_logps(model, ref_prompt + own, len(ref_prompt)), abs=1e-4)
    assert x.kl_logps.requires_grad is False
    flagged = [pos for pos, i in enumerate(indices) if examples[i].harmful]
    assert flagged and not torch.equal(x.kl_logps[flagged], x.ref_kl_logps[flagged])


def test_unpaired_cache_is_reused_and_live_matches_it(tmp_path, pairs_file):
    results = {}
    for run, mode in (("a", "cache"), ("b", "cache"), ("live", "live")):
        config = kto_config(tmp_path, pairs_file, max_steps=1, per_device_train_batch_size=16,
                            output_dir=str(tmp_path / run))
        config.reference.transform = "safety_prefix"
        config.reference.mode = mode
        result = run_training(config)
        results[run] = (result.reference, read_metrics(result.output_dir)[0])
    assert "computed" in results["a"][0] and "reused" in results["b"][0]
    for key in ("loss", "kto/kl", "rewards/chosen", "rewards/rejected"):
        assert results["live"][1][key] == pytest.approx(results["a"][1][key], abs=1e-5), key


def test_native_unpaired_format_trains_with_kto(tmp_path):
    data = tmp_path / "unpaired.jsonl"
    rows = [{"prompt": f"Question {i}?", "completion": f"Answer {i}.", "label": i % 2 == 0} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tiny_config(tmp_path, data, max_steps=1, per_device_train_batch_size=6)
    config.losses = [LossConfig(name="kto")]
    result = run_training(config)
    first = read_metrics(result.output_dir)[0]
    assert first["loss"] == pytest.approx(0.5, abs=1e-6)
    assert "rewards/chosen" in first and "rewards/rejected" in first


def _view_hash(rows) -> str:
    """reference_view_hash of KTO items by its rule before rows could go without a KL partner: prompt view,
    completion, partner completion, each as (length, int64 ids)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for item in rows:
        ex = item.example
        for ids in (ex.ref_prompt_ids or ex.prompt_ids, ex.completion_ids, item.kl_completion_ids):
            digest.update(len(ids).to_bytes(4, "little"))
            digest.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("mode", ["cache", "live"])
def test_bco_builds_and_scores_no_kl_partners_while_kto_keeps_its_cache_key(tmp_path, pairs_file, monkeypatch, mode):
    """BCO never reads KTO's KL point: its batches carry no mismatched sequences, nothing scores them (no policy
    forward, no reference forward, no cache column). KTO's items and cache key are as before."""
    import hashlib

    from safealign.train import reference as reference_module
    from safealign.train import trainer as trainer_module
    from safealign.train.reference import model_fingerprint

    seen, tables = [], []
    original = trainer_module.PreferenceTrainer._unpaired_logps

    def spy(self, model, inputs):
        x = original(self, model, inputs)
        seen.append((sorted(inputs), x))
        return x

    compute = reference_module.compute_reference_columns

    def spy_table(model, items, **kwargs):
        tables.append((list(items), compute(model, items, **kwargs)))
        return tables[-1][1]

    monkeypatch.setattr(trainer_module.PreferenceTrainer, "_unpaired_logps", spy)
    monkeypatch.setattr(reference_module, "compute_reference_columns", spy_table)
    for name in ("bco", "kto"):
        config = kto_config(tmp_path, pairs_file, name, max_steps=1, per_device_train_batch_size=16,
                            output_dir=str(tmp_path / name))
        config.reference.transform = "safety_prefix"
        config.reference.mode = mode
        run_training(config)
    (bco_keys, bco), (kto_keys, kto) = seen
    assert not any(k.startswith(("kl_", "ref_kl_")) for k in bco_keys)
    assert bco.kl_logps is None and bco.ref_kl_logps is None and bco.ref_logps is not None
    assert "kl_input_ids" in kto_keys and kto.kl_logps is not None and kto.ref_kl_logps is not None
    if mode == "cache":
        (bco_items, bco_table), (kto_items, kto_table) = tables
        assert bco_table.shape == (16, 1) and kto_table.shape == (16, 2)
        torch.testing.assert_close(bco_table[:, 0], kto_table[:, 0])  # the completions score the same
        assert all(item.kl_completion_ids is None for item in bco_items)
        key = hashlib.blake2b(f"{model_fingerprint(tiny_model())}:{_view_hash(kto_items)}".encode(),
                              digest_size=16).hexdigest()
        cached = list((tmp_path / "refcache").glob("*.safetensors"))
        assert key in {p.stem for p in cached} and len(cached) == 2
