"""EntanglementCallback in a 2-step tiny PreferenceTrainer run: diagnostics.jsonl contents."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainingArguments

from safealign.train.probe import EntanglementCallback, choose_probe
from safealign.train.grads import measure_entanglement

from diag_helpers import naive_logps


def _train(model, tokenizer, encoded, collate, out, callback):
    from safealign.losses import build_loss
    from safealign.train.run import ListDataset
    from safealign.train.trainer import PreferenceTrainer

    args = TrainingArguments(output_dir=str(out), max_steps=2, per_device_train_batch_size=2, learning_rate=5e-2,
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             remove_unused_columns=False, seed=0)
    trainer = PreferenceTrainer(model=model, args=args, train_dataset=ListDataset(encoded), data_collator=collate,
                                processing_class=tokenizer, loss=build_loss("cpo"), callbacks=[callback])
    trainer.train()
    return trainer


def test_callback_writes_measurements_and_movement(tiny_model, tiny_tokenizer, encode, collate, pairs, tmp_path):
    encoded = encode(pairs)
    probe = choose_probe(encoded, 2, seed=0)
    callback = EntanglementCallback(probe, collate, every_n_steps=1, params="last:1")
    trainer = _train(tiny_model, tiny_tokenizer, encoded, collate, tmp_path, callback)
    records = [json.loads(line) for line in (tmp_path / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert all(r["probe_pairs"] == 2 and r["params"] == "last:1" for r in records)
    start = {row["index"]: (row["chosen_logps"], row["rejected_logps"]) for row in records[0]["pairs"]}
    assert all(row["chosen_change"] == 0.0 and row["rejected_change"] == 0.0 for row in records[0]["pairs"])

    model = trainer.model.eval()
    final = records[-1]
    expected = measure_entanglement(model, probe, collate, params="last:1", progress=False)
    for row, item, want in zip(final["pairs"], probe, expected.pairs):
        with torch.no_grad():
            chosen = float(naive_logps(model, item.prompt_ids, item.chosen_ids))
            rejected = float(naive_logps(model, item.prompt_ids, item.rejected_ids))
        assert row["index"] == item.index
        assert row["chosen_logps"] == pytest.approx(chosen, abs=1e-4)
        assert row["rejected_logps"] == pytest.approx(rejected, abs=1e-4)
        assert row["chosen_change"] == pytest.approx(row["chosen_logps"] - start[item.index][0], abs=1e-9)
        assert row["rejected_change"] == pytest.approx(row["rejected_logps"] - start[item.index][1], abs=1e-9)
        assert row["dot"] == pytest.approx(want.dot, rel=1e-5)
        assert row["ratio"] == pytest.approx(want.ratio, rel=1e-5)
    rows = final["pairs"]
    assert final["movement"]["chosen_change_mean"] == pytest.approx(sum(r["chosen_change"] for r in rows) / 2)
    assert (
        final["movement"]["share_both_fell"]
        == sum(r["chosen_change"] < 0 and r["rejected_change"] < 0 for r in rows) / 2
    )
    ratios = [r["ratio"] for r in rows]
    assert final["entanglement"]["ratio"]["median"] == pytest.approx(sum(ratios) / 2)  # median of two
    # flat keys the HTML report plots
    assert final["ratio"] == final["entanglement"]["ratio"]["median"]
    assert final["cosine"] == pytest.approx(sum(r["cosine"] for r in rows) / 2)
    assert (final["delta_chosen"], final["delta_rejected"]) == (
        final["movement"]["chosen_change_mean"], final["movement"]["rejected_change_mean"])
    # a learning rate of 5e-2 on CPO must have moved the probes' log-probs
    assert any(r["chosen_change"] != 0.0 for r in rows)


def test_resume_keeps_records_up_to_the_checkpoint_and_the_start(tiny_model, encode, collate, pairs, tmp_path):
    probe = encode(pairs)[:1]
    old = [{"step": s, "pairs": [{"index": 0, "chosen_logps": -1.0 - s, "rejected_logps": -2.0}]} for s in (0, 5, 10)]
    (tmp_path / "diagnostics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    callback = EntanglementCallback(probe, collate, every_n_steps=5, params="lm_head")
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(is_world_process_zero=True, global_step=5, epoch=1.0)
    callback.on_train_begin(args, state, None, model=tiny_model)
    state.global_step = 10
    callback.on_step_end(args, state, None, model=tiny_model)
    records = [json.loads(line) for line in (tmp_path / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 5, 10]
    row = records[-1]["pairs"][0]
    assert row["chosen_change"] == pytest.approx(row["chosen_logps"] - (-1.0))  # from the step-0 record
    callback.on_train_end(args, state, None, model=tiny_model)  # step 10 already measured: nothing new
    assert len((tmp_path / "diagnostics.jsonl").read_text().splitlines()) == 3


def test_choose_probe_is_fixed_and_ordered():
    items = list(range(100))
    assert choose_probe(items, 5, seed=3) == choose_probe(items, 5, seed=3)
    assert choose_probe(items, 5, seed=3) == sorted(choose_probe(items, 5, seed=3))
    assert choose_probe(items[:3], 10) == [0, 1, 2]
