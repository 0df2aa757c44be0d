"""Chunked log-probs against a naive full log-softmax, values and gradients, on every code path.

``logps: fused`` is also checked against ``logps: naive`` (the full ``(N, T, V)`` float32 log-softmax
over the model's logits, what TRL does without Liger) for every reduction the losses use: summed,
averaged per token, per token, and through DPO/IPO/SimPO, on untied, tied and biased heads.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from safealign.losses import LossSpec, build_loss
from safealign.models.lora import LoraSettings, apply_lora
from safealign.train import logps as logps_module
from safealign.train.logps import pair_logps, sequence_logps, token_logps
from safealign.types import PairLogps

ATOL = 1e-5


def naive_token_logps(model, input_ids, attention_mask, response_mask):
    """(N, T) per-token log-probs from the full (N, T, V) float32 log-softmax; 0 outside the response."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()  # (N, T, V)
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # (N, T-1, V)
    picked = logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (N, T-1)
    out = torch.zeros(input_ids.shape, dtype=torch.float32)
    out[:, 1:] = picked * response_mask[:, 1:]
    return out


def naive_sequence_logps(model, input_ids, attention_mask, response_mask):
    return naive_token_logps(model, input_ids, attention_mask, response_mask).sum(1), response_mask.sum(1).float()


def make_batch(n: int = 4, t: int = 14, vocab: int = 250, seed: int = 0):
    """Right-padded rows of different lengths; responses of different lengths at each row's end."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab, (n, t), generator=g)
    attention_mask = torch.zeros(n, t, dtype=torch.long)
    response_mask = torch.zeros(n, t, dtype=torch.long)
    lengths = [t, t - 3, t - 5, 6, 9, 11][:n]
    responses = [5, 1, 4, 3, 2, 6][:n]
    for row, (length, response) in enumerate(zip(lengths, responses)):
        attention_mask[row, :length] = 1
        response_mask[row, length - response : length] = 1
        input_ids[row, length:] = 0  # pad
    return input_ids, attention_mask, response_mask


def head_chunk_rows(model, monkeypatch):
    """Record the number of positions each chunked LM-head call sees; full (N, T, H) calls are the probe's.

    The fused function calls the head's weight through ``logps._linear`` (not the module), so both are watched.
    """
    seen: list[int] = []

    def hook(module, args, out):
        if args[0].dim() == 2:  # (chunk, H)
            seen.append(args[0].shape[0])

    def linear(x, weight, bias=None):
        seen.append(x.shape[0])
        return torch.nn.functional.linear(x, weight, bias)

    model.get_output_embeddings().register_forward_hook(hook)
    monkeypatch.setattr(logps_module, "_linear", linear)
    return seen


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1024])
def test_chunked_equals_naive(tiny_model, chunk_size, monkeypatch):
    ids, attn, resp = make_batch()
    with torch.no_grad():
        expected_logps, expected_tokens = naive_sequence_logps(tiny_model, ids, attn, resp)
        seen = head_chunk_rows(tiny_model, monkeypatch)
        out = sequence_logps(tiny_model, ids, attn, resp, chunk_size=chunk_size)
    total = int(resp[:, 1:].sum())  # 5 + 1 + 4 + 3 = 13 scored positions
    assert total == 13
    assert out.logps.dtype == torch.float32 and out.tokens.dtype == torch.float32
    assert out.tokens.tolist() == [5.0, 1.0, 4.0, 3.0] == expected_tokens.tolist()
    torch.testing.assert_close(out.logps, expected_logps, atol=ATOL, rtol=0)
    # fast path: the head saw only response positions, at most chunk_size at a time
    assert sum(seen) == total and max(seen) <= chunk_size
    assert len(seen) == -(-total // chunk_size)


def test_token_logps_equals_naive(tiny_model):
    ids, attn, resp = make_batch()
    with torch.no_grad():
        expected = naive_token_logps(tiny_model, ids, attn, resp)
        actual = token_logps(tiny_model, ids, attn, resp, chunk_size=4)
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)
    assert bool((actual[resp == 0] == 0).all())
    torch.testing.assert_close(actual.sum(1), sequence_logps(tiny_model, ids, attn, resp).logps.detach(),
                               atol=ATOL, rtol=0)


def _grads(model, fn):
    model.zero_grad()
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0])
    (fn() * weights).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
def test_gradients_equal_naive(tiny_model, chunk_size):
    ids, attn, resp = make_batch()
    naive = _grads(tiny_model, lambda: naive_sequence_logps(tiny_model, ids, attn, resp)[0])
    chunked = _grads(tiny_model, lambda: sequence_logps(tiny_model, ids, attn, resp, chunk_size=chunk_size).logps)
    assert naive.keys() == chunked.keys()
    assert "lm_head.weight" in chunked and "model.embed_tokens.weight" in chunked
    for name in naive:
        torch.testing.assert_close(chunked[name], naive[name], atol=ATOL, rtol=1e-4, msg=name)


def _lora_model(tiny_model):
    model = apply_lora(tiny_model, LoraSettings(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the outputs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model


def test_peft_wrapped_values_and_gradients(tiny_model):
    ids, attn, resp = make_batch()
    with torch.no_grad():
        base_logps = sequence_logps(tiny_model, ids, attn, resp).logps
    model = _lora_model(tiny_model)
    with torch.no_grad():
        adapted = sequence_logps(model, ids, attn, resp, chunk_size=2).logps
        torch.testing.assert_close(adapted, naive_sequence_logps(model, ids, attn, resp)[0], atol=ATOL, rtol=0)
        with model.disable_adapter():
            torch.testing.assert_close(sequence_logps(model, ids, attn, resp).logps, base_logps, atol=ATOL, rtol=0)
    assert (adapted - base_logps).abs().max() > 1e-2  # the adapter really is active on the fast path
    naive = _grads(model, lambda: naive_sequence_logps(model, ids, attn, resp)[0])
    chunked = _grads(model, lambda: sequence_logps(model, ids, attn, resp, chunk_size=3).logps)
    assert naive.keys() == chunked.keys() and all("lora_" in name for name in chunked)
    for name in naive:
        torch.testing.assert_close(chunked[name], naive[name], atol=ATOL, rtol=1e-4, msg=name)
    assert logps_module._split_cache[model] is True


def test_fallback_on_logit_softcapping_config(tiny_model, caplog):
    tiny_model.config.final_logit_softcapping = 30.0  # Llama ignores it; the detector must not
    ids, attn, resp = make_batch()
    with caplog.at_level("INFO", logger="safealign.train.logps"):
        out = sequence_logps(tiny_model, ids, attn, resp, chunk_size=3)
    assert logps_module._split_cache[tiny_model] is False
    assert "final_logit_softcapping=30.0" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(out.logps.detach(), naive_sequence_logps(tiny_model, ids, attn, resp)[0],
                                   atol=ATOL, rtol=0)
    naive = _grads(tiny_model, lambda: naive_sequence_logps(tiny_model, ids, attn, resp)[0])
    chunked = _grads(tiny_model, lambda: sequence_logps(tiny_model, ids, attn, resp, chunk_size=3).logps)
    for name in naive:
        torch.testing.assert_close(chunked[name], naive[name], atol=ATOL, rtol=1e-4, msg=name)


class ScaledLogits(nn.Module):
    """Wraps a causal LM and halves its logits: the decoder/head split would silently be wrong."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def get_decoder(self):
        return self.inner.get_decoder()

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits = out.logits * 0.5
        return out


class Wrapper(nn.Module):
    """Like DDP: forwards calls but exposes no decoder/head accessors."""

    def __init__(self, inner):
        super().__init__()
        self.module = inner

    def forward(self, **kwargs):
        return self.module(**kwargs)


@pytest.mark.parametrize("wrap", [ScaledLogits, Wrapper])
def test_fallback_detected_for_unknown_transform_and_wrappers(tiny_model, wrap):
    model = wrap(tiny_model)
    ids, attn, resp = make_batch()
    with torch.no_grad():
        out = sequence_logps(model, ids, attn, resp, chunk_size=4)
        expected = naive_sequence_logps(model, ids, attn, resp)[0]
    assert logps_module._split_cache[model] is False
    torch.testing.assert_close(out.logps, expected, atol=ATOL, rtol=0)


def test_pair_logps_policy_and_reference_views(tiny_model):
    ids, attn, resp = make_batch(n=4)
    ref_ids, ref_attn, ref_resp = make_batch(n=4, t=16, seed=3)
    batch = {"input_ids": ids, "attention_mask": attn, "response_mask": resp,
             "ref_input_ids": ref_ids, "ref_attention_mask": ref_attn, "ref_response_mask": ref_resp}
    chosen, rejected, chosen_tokens, rejected_tokens = pair_logps(tiny_model, batch, chunk_size=2)
    full = sequence_logps(tiny_model, ids, attn, resp)
    torch.testing.assert_close(torch.cat([chosen, rejected]), full.logps, atol=ATOL, rtol=0)
    assert chosen_tokens.tolist() == [5.0, 1.0] and rejected_tokens.tolist() == [4.0, 3.0]
    assert chosen.requires_grad
    ref_chosen, ref_rejected, _, _ = pair_logps(tiny_model, batch, reference=True)
    assert not ref_chosen.requires_grad
    ref_full = sequence_logps(tiny_model, ref_ids, ref_attn, ref_resp).logps.detach()
    torch.testing.assert_close(torch.cat([ref_chosen, ref_rejected]), ref_full, atol=ATOL, rtol=0)
    policy_only = {k: v for k, v in batch.items() if not k.startswith("ref_")}
    same, _, _, _ = pair_logps(tiny_model, policy_only, reference=True)
    torch.testing.assert_close(same, chosen.detach(), atol=ATOL, rtol=0)


def test_bad_inputs_rejected(tiny_model):
    ids, attn, resp = make_batch()
    bad = resp.clone()
    bad[2, 0] = 1
    with pytest.raises(ValueError, match=r"position 0 in rows \[2\]"):
        sequence_logps(tiny_model, ids, attn, bad)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        sequence_logps(tiny_model, ids, attn, resp, chunk_size=0)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(4, 13\)"):
        sequence_logps(tiny_model, ids, attn[:, :-1], resp)
    with pytest.raises(ValueError, match="2B rows"):
        pair_logps(tiny_model, {"input_ids": ids[:3], "attention_mask": attn[:3], "response_mask": resp[:3]})
    with pytest.raises(ValueError, match="batch lacks response_mask"):
        pair_logps(tiny_model, {"input_ids": ids, "attention_mask": attn})


# --------------------------------------------------------------------------- fused vs naive
def llama(tied: bool = False, bias: bool = False, seed: int = 0) -> LlamaForCausalLM:
    """A Llama-like tiny model: grouped-query attention, optionally tied embeddings or a biased head."""
    config = LlamaConfig(vocab_size=250, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=tied, pad_token_id=0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if bias:
        head = nn.Linear(32, 250, bias=True)
        with torch.no_grad():
            head.weight.copy_(model.lm_head.weight)
            head.bias.normal_(0, 0.5)
        model.lm_head = head
    return model.eval()


def reductions(model, impl: str, chunk_size: int = 3) -> dict[str, torch.Tensor]:
    """The three ways losses reduce log-probs: summed, averaged per token, and per token."""
    ids, attn, resp = make_batch()
    out = sequence_logps(model, ids, attn, resp, chunk_size=chunk_size, impl=impl)
    per_token = token_logps(model, ids, attn, resp, chunk_size=chunk_size, impl=impl)
    return {"summed": out.logps, "averaged": out.logps / out.tokens, "per_token": per_token}


def gradients(model, value: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    weights = torch.linspace(-2.0, 3.0, value.numel()).reshape(value.shape)  # distinct weight per element
    (value * weights).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("variant", ["untied", "tied", "bias"])
@pytest.mark.parametrize("reduction", ["summed", "averaged", "per_token"])
def test_fused_equals_naive_values_and_gradients(variant, reduction, monkeypatch):
    model = llama(tied=variant == "tied", bias=variant == "bias")
    calls = []
    apply = logps_module._FusedHeadLogps.apply
    monkeypatch.setattr(logps_module._FusedHeadLogps, "apply", lambda *a: calls.append(1) or apply(*a))
    fused = reductions(model, "fused")[reduction]
    assert calls, "the fused autograd function was not used"
    naive = reductions(model, "naive")[reduction]
    torch.testing.assert_close(fused, naive, atol=ATOL, rtol=0)
    fused_grads = gradients(model, reductions(model, "fused")[reduction])
    naive_grads = gradients(model, reductions(model, "naive")[reduction])
    assert fused_grads.keys() == naive_grads.keys()
    assert any("lm_head" in k or "embed_tokens" in k for k in fused_grads)
    if variant == "bias":
        assert "lm_head.bias" in fused_grads and fused_grads["lm_head.bias"].abs().sum() > 0
    for name in naive_grads:
        torch.testing.assert_close(fused_grads[name], naive_grads[name], atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("loss", ["dpo", "ipo", "simpo"])
def test_losses_and_gradients_equal_through_pair_logps(loss):
    """DPO (summed), IPO and SimPO (length-averaged) losses: same value and same gradients on both paths."""
    model = llama()
    ids, attn, resp = make_batch()
    batch = {"input_ids": ids, "attention_mask": attn, "response_mask": resp}
    composed = build_loss([LossSpec(name=loss)])
    ref = (torch.tensor([-30.0, -5.0]), torch.tensor([-20.0, -12.0]))

    def loss_value(impl: str) -> torch.Tensor:
        chosen, rejected, chosen_tokens, rejected_tokens = pair_logps(model, batch, chunk_size=2, impl=impl)
        logps = PairLogps(chosen=chosen, rejected=rejected, chosen_tokens=chosen_tokens,
                          rejected_tokens=rejected_tokens, ref_chosen=ref[0], ref_rejected=ref[1])
        return composed(logps).losses.mean()

    fused, naive = loss_value("fused"), loss_value("naive")
    torch.testing.assert_close(fused, naive, atol=ATOL, rtol=0)
    fused_grads, naive_grads = gradients(model, loss_value("fused")), gradients(model, loss_value("naive"))
    for name in naive_grads:
        torch.testing.assert_close(fused_grads[name], naive_grads[name], atol=ATOL, rtol=1e-4, msg=name)


def test_fused_head_gradient_matches_autograd_directly():
    """The hand-written backward against autograd through a plain log-softmax, for states, weight and bias."""
    torch.manual_seed(0)
    states = torch.randn(11, 8, requires_grad=True)
    weight = torch.randn(40, 8, requires_grad=True)
    bias = torch.randn(40, requires_grad=True)
    targets = torch.randint(0, 40, (11,))
    upstream = torch.randn(11)
    fused = logps_module._FusedHeadLogps.apply(states, weight, bias, targets, 4)
    expected = torch.log_softmax(states @ weight.T + bias, -1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(fused, expected, atol=ATOL, rtol=0)
    got = torch.autograd.grad((fused * upstream).sum(), (states, weight, bias))
    want = torch.autograd.grad((expected * upstream).sum(), (states, weight, bias))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=ATOL, rtol=1e-4)


def test_no_graph_under_no_grad_and_unknown_impl_refused():
    model = llama()
    ids, attn, resp = make_batch()
    with torch.no_grad():
        out = sequence_logps(model, ids, attn, resp, impl="fused")
    assert not out.logps.requires_grad
    with pytest.raises(ValueError, match="logps must be one of fused, naive"):
        sequence_logps(model, ids, attn, resp, impl="liger")


@pytest.mark.parametrize("find_unused, lora", [(False, False), (True, True)], ids=["full-static", "lora-find-unused"])
def test_fused_under_ddp_trains_like_one_process(tmp_path, find_unused, lora):
    """Two gloo processes, each scoring two of four pairs through DistributedDataParallel: the fused path is taken
    (no full-logits head call) and, run through the wrapper's forward, its gradients are all-reduced: two DPO
    steps give the losses and gradients of the naive path under DDP and of one process on all four pairs.
    (``find_unused_parameters=True`` is transformers' default for a model without gradient checkpointing.)"""
    from train.ddp_helpers import ddp_worker, dpo_steps, free_port

    from safealign.models.lora import LoraSettings, apply_lora
    from safealign.models.tiny import tiny_model

    torch.multiprocessing.spawn(ddp_worker, args=(2, free_port(), find_unused, lora, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    model = tiny_model(vocab_size=250)
    if lora:
        model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    one_losses, one_grads, _ = dpo_steps(model, model, [0, 1, 2, 3], "naive")
    for rank in ranks:
        (fused_losses, fused_grads, fused_head_calls), (naive_losses, naive_grads, naive_head_calls) = (
            rank["fused"], rank["naive"])
        assert fused_head_calls == 0, "under DDP the fused path fell back to the model's full logits"
        assert naive_head_calls > 0  # the counter can tell the two apart
        assert fused_losses == pytest.approx(naive_losses, abs=ATOL)
        for step, (fused, naive, one) in enumerate(zip(fused_grads, naive_grads, one_grads)):
            assert fused.keys() == naive.keys() == one.keys() and fused
            for name in one:
                torch.testing.assert_close(fused[name], naive[name], atol=ATOL, rtol=1e-4, msg=f"{step} {name}")
                torch.testing.assert_close(fused[name], one[name], atol=ATOL, rtol=1e-4, msg=f"{step} {name}")
    for step in range(len(one_losses)):  # each process's loss is its shard's mean; together the global mean
        assert (ranks[0]["fused"][0][step] + ranks[1]["fused"][0][step]) / 2 == pytest.approx(one_losses[step],
                                                                                                abs=ATOL)
