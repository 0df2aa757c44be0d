"""Padding-free (packed) pair batches give the padded path's log-probs, losses and gradients.

A pair's chosen and rejected sequences share a row with position ids restarting per sequence
(safealign/data/collate.py); the model then gets no 2D mask and transformers builds the block-diagonal
causal mask (SDPA on CPU). The flash-attention layout (all sequences in one row, varlen) is checked by
forcing its flattening on CPU, where SDPA reads the same position ids.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from safealign.data import PreferenceCollator
from safealign.data.collate import pack_sequences
from safealign.data.tokenize import EncodedPair
from safealign.losses import LossSpec, build_loss
from safealign.train import logps as logps_module
from safealign.train.config import TrainConfig
from safealign.train.logps import pair_logps, token_logps
from safealign.train.run import run_training
from safealign.types import PairLogps

ATOL = 1e-5


def llama() -> LlamaForCausalLM:
    """Llama-like: grouped-query attention, rotary positions (so a wrong position id changes the logits)."""
    config = LlamaConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, pad_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def pairs(with_reference_view: bool = False) -> list[EncodedPair]:
    """Pairs whose prompts and responses all differ in length, so padding lands in different places."""
    g = torch.Generator().manual_seed(1)
    ids = lambda n: tuple(torch.randint(3, 120, (n,), generator=g).tolist())  # noqa: E731
    shapes = [(5, 10, 1), (9, 2, 3), (3, 6, 1), (7, 5, 5)]  # (prompt, chosen, rejected)
    reference_view = lambda i, p: ids(p + 3) if with_reference_view and i % 2 else None  # noqa: E731
    return [EncodedPair(index=i, prompt_ids=ids(p), ref_prompt_ids=reference_view(i, p), chosen_ids=ids(c),
                        rejected_ids=ids(r), harmful=bool(i % 2))
            for i, (p, c, r) in enumerate(shapes)]


def test_pack_sequences_layout():
    packed = pack_sequences([(1, 2), (3,), (4, 5)], [(6,), (7, 8), (9,)], rows=[0, 1, 0], pad_token_id=0)
    assert packed["input_ids"].tolist() == [[1, 2, 6, 4, 5, 9], [3, 7, 8, 0, 0, 0]]
    assert packed["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert packed["response_mask"].tolist() == [[0, 0, 1, 0, 0, 1], [0, 1, 1, 0, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2]]
    assert packed["sequence_index"].tolist() == [[0, 0, 0, 2, 2, 2], [1, 1, 1, -1, -1, -1]]


def test_packed_batch_has_no_padding_between_a_pairs_sequences():
    batch = PreferenceCollator(0, pack=True)(pairs())
    padded = PreferenceCollator(0)(pairs())
    assert batch["input_ids"].shape[0] == 4 and padded["input_ids"].shape[0] == 8
    assert int(batch["attention_mask"].sum()) == int(padded["attention_mask"].sum())  # same real tokens
    assert batch["input_ids"].numel() < padded["input_ids"].numel()
    assert int((batch["attention_mask"] == 0).sum()) < int((padded["attention_mask"] == 0).sum())


def _loss_and_grads(model, batch, reference: bool = False):
    chosen, rejected, chosen_tokens, rejected_tokens = pair_logps(model, batch, chunk_size=3)
    loss = build_loss([LossSpec(name="dpo")])(PairLogps(
        chosen=chosen, rejected=rejected, chosen_tokens=chosen_tokens, rejected_tokens=rejected_tokens,
        ref_chosen=chosen.detach() - 1.0, ref_rejected=rejected.detach() + 0.5)).losses.mean()
    model.zero_grad()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    ref = pair_logps(model, batch, reference=True) if reference else None
    return (chosen.detach(), rejected.detach(), chosen_tokens, rejected_tokens), loss.detach(), grads, ref


@pytest.mark.parametrize("flatten", [False, True], ids=["row-per-pair", "one-row-varlen-layout"])
def test_packed_equals_padded_logps_loss_and_gradients(flatten, monkeypatch):
    model = llama()
    padded = PreferenceCollator(0)(pairs(with_reference_view=True))
    packed = PreferenceCollator(0, pack=True)(pairs(with_reference_view=True))
    expected_logps, expected_loss, expected_grads, expected_ref = _loss_and_grads(model, padded, reference=True)
    if flatten:  # what a flash-attention model gets: every sequence in one row
        monkeypatch.setattr(logps_module, "_varlen_attention", lambda model: True)
    logps, loss, grads, ref = _loss_and_grads(model, packed, reference=True)
    for got, want in zip(logps + ref, expected_logps + expected_ref):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(loss, expected_loss, atol=ATOL, rtol=0)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], atol=ATOL, rtol=1e-4, msg=name)


def test_packing_without_the_mask_would_leak():
    """The check above can fail: the same packed ids with positions that do not restart score differently."""
    model = llama()
    packed = PreferenceCollator(0, pack=True)(pairs())
    expected = pair_logps(model, packed, reference=True)[1]
    width = packed["input_ids"].shape[1]
    leaky = dict(packed, position_ids=torch.arange(width).expand(4, -1).clone())
    leaky["position_ids"][:, 0] = 0
    second_starts = (packed["position_ids"] == 0) & (packed["attention_mask"] == 1)
    second_starts[:, 0] = False  # each row's second sequence starts here
    bad = packed["response_mask"] | second_starts.long()
    with pytest.raises(ValueError, match="first token of a packed sequence"):
        pair_logps(model, dict(packed, response_mask=bad), reference=True)
    with torch.no_grad():
        from safealign.train.logps import sequence_logps

        wrong = sequence_logps(model, leaky["input_ids"], leaky["attention_mask"], leaky["response_mask"],
                               position_ids=leaky["position_ids"], sequence_index=leaky["sequence_index"])
    assert (wrong.logps[4:] - expected).abs().max() > 1e-3


def test_token_logps_of_a_packed_batch_align_with_its_ids(monkeypatch):
    model = llama()
    packed = PreferenceCollator(0, pack=True)(pairs())
    args = (packed["input_ids"], packed["attention_mask"], packed["response_mask"])
    kwargs = dict(position_ids=packed["position_ids"], sequence_index=packed["sequence_index"])
    with torch.no_grad():
        rows = token_logps(model, *args, **kwargs)
        monkeypatch.setattr(logps_module, "_varlen_attention", lambda model: True)
        flat = token_logps(model, *args, **kwargs)
    torch.testing.assert_close(flat, rows, atol=ATOL, rtol=0)
    response = packed["response_mask"] == 1
    assert bool((rows[~response] == 0).all()) and bool((rows[response] < 0).all())


def test_packed_batch_is_flattened_for_flash_attention_under_ddp(monkeypatch):
    """HF's Trainer scores through the DistributedDataParallel wrapper, which has no ``config``: the flash-attention
    decision reads the wrapped model's, so the packed batch still becomes one varlen row (with more than one row and
    no mask, flash attention would run causally over the whole row and a rejected sequence would see its chosen)."""
    from torch.nn.parallel import DistributedDataParallel
    from train.ddp_helpers import process_group

    model = llama()
    model.config._attn_implementation = "flash_attention_2"  # what `attn_implementation: flash_attention_2` sets
    padded = PreferenceCollator(0)(pairs())
    packed = PreferenceCollator(0, pack=True)(pairs())
    flattened = []
    original = logps_module._flattened_token_logps

    def flatten_on_cpu(wrapped, *args, **kwargs):  # no flash kernel on CPU: the flattened row runs through SDPA
        flattened.append(wrapped)
        model.config._attn_implementation = "sdpa"
        try:
            return original(wrapped, *args, **kwargs)
        finally:
            model.config._attn_implementation = "flash_attention_2"

    monkeypatch.setattr(logps_module, "_flattened_token_logps", flatten_on_cpu)
    with process_group(), torch.no_grad():
        ddp = DistributedDataParallel(model)
        assert logps_module._varlen_attention(ddp)
        got = pair_logps(ddp, packed)
    assert flattened == [ddp]
    model.config._attn_implementation = "sdpa"
    with torch.no_grad():
        want = pair_logps(model, padded)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def _config(tmp_path, pairs_file, name: str, **overrides) -> TrainConfig:
    config = TrainConfig(model="tiny-random", output_dir=str(tmp_path / name), max_steps=2, learning_rate=1e-2,
                         per_device_train_batch_size=4, save_steps=10, logging_steps=1)
    config.data.path = str(pairs_file)
    config.reference.cache_dir = str(tmp_path / "refcache")
    config.lora.enabled = False
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def test_training_with_packing_logs_the_same_metrics(tmp_path, pairs_file):
    def metrics(name, **overrides):
        result = run_training(_config(tmp_path, pairs_file, name, **overrides))
        lines = (result.output_dir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if '"loss"' in line]

    padded, packed = metrics("padded"), metrics("packed", packing="pairs")
    assert len(padded) == len(packed) == 2
    for a, b in zip(padded, packed):
        for key in ("loss", "logps/chosen", "logps/rejected", "rewards/margins"):
            assert b[key] == pytest.approx(a[key], abs=1e-4), key


def test_packing_refused_for_unpaired_losses(tmp_path, pairs_file, no_model_load):
    from safealign.errors import UserError
    from safealign.train.config import LossConfig

    config = _config(tmp_path, pairs_file, "kto", packing="pairs", losses=[LossConfig(name="kto")])
    config.data.unpair = True
    with pytest.raises(UserError, match="packing=pairs packs a pair's chosen and rejected"):
        run_training(config)


def _other_architecture(name: str):
    """Tiny decoders whose attention ignores restarting position ids: they attend across a packed row."""
    import transformers

    configs = {"opt": lambda: transformers.OPTConfig(vocab_size=120, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                                     num_attention_heads=4, max_position_embeddings=256,
                                                     word_embed_proj_dim=32),
               "mpt": lambda: transformers.MptConfig(vocab_size=120, d_model=32, n_layers=2, n_heads=4),
               "bloom": lambda: transformers.BloomConfig(vocab_size=120, hidden_size=32, n_layer=2, n_head=4)}
    config = configs[name]()
    config.pad_token_id = 0
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("name", ["opt", "mpt", "bloom"])
def test_packing_refused_for_an_architecture_that_mixes_packed_sequences(name):
    from safealign.errors import UserError
    from safealign.train.packing import check_packing

    model = _other_architecture(name).train()
    with pytest.raises(UserError, match=f"packing=pairs: model type '{name}'.*set packing: off"):
        check_packing(model, pairs(), pad_token_id=0)
    assert model.training  # the check ran in eval mode and gave the model back as it was


@pytest.mark.parametrize("flatten", [False, True], ids=["row-per-pair", "one-row-varlen-layout"])
def test_packing_check_passes_a_model_that_keeps_sequences_apart(flatten, monkeypatch):
    from safealign.train.packing import check_packing

    if flatten:
        monkeypatch.setattr(logps_module, "_varlen_attention", lambda model: True)
    check_packing(llama(), pairs(with_reference_view=True), pad_token_id=0)  # no error


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_packing_check_names_the_sequence_and_data_row_that_differ(side, monkeypatch):
    """The message names chosen or rejected and the pair's data row, not a position in chosen + rejected."""
    from safealign.errors import UserError
    from safealign.train import packing

    def fake_pair_logps(model, batch, **kwargs):  # only the packed batch's sequence of pair 2 on `side` is off
        logps = [torch.zeros(4), torch.zeros(4)]
        if "sequence_index" in batch:
            logps[side == "rejected"][2] = -1.0
        return (*logps, torch.ones(4), torch.ones(4))

    monkeypatch.setattr(packing, "pair_logps", fake_pair_logps)
    rows = [dataclasses.replace(p, source="pairs.jsonl", row=10 + p.index) for p in pairs()]
    with pytest.raises(UserError) as error:
        packing.check_packing(llama(), rows, pad_token_id=0)
    assert f"on the {side} sequence of pairs.jsonl row 12 (pair 3 of the first 4)" in str(error.value)


def test_training_refuses_packing_on_a_model_that_mixes_packed_sequences(tmp_path, pairs_file):
    """The check runs in run_training, before any step, on the model being trained."""
    import transformers

    from safealign.errors import UserError
    from safealign.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = transformers.OPTConfig(vocab_size=len(tokenizer), hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                    num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=32,
                                    pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = transformers.OPTForCausalLM(config)
    with pytest.raises(UserError, match="model type 'opt'.*set packing: off"):
        run_training(_config(tmp_path, pairs_file, "opt", packing="pairs"), model=model, tokenizer=tokenizer)
