"""The only place logits become log-probs: summed response log-probs per sequence, computed in chunks.

Convention: ``response_mask[n, t] == 1`` means token ``input_ids[n, t]`` is a response token; it is
scored by the model's prediction at position ``t - 1``.

Two implementations (``impl``; the recipe key ``logps``, docs/performance.md says which is the default and why):

``fused``: the decoder's final hidden states ``(N, T, H)`` are gathered at the ``P`` positions that
predict response tokens ``(P, H)`` (never prompt or padding positions); the LM head, a float32
log-softmax and the gather of the target token then run over chunks of ``chunk_size`` positions
``(chunk, V)``. For a plain ``nn.Linear`` head this is one autograd function (:class:`_FusedHeadLogps`)
that keeps only the ``(P, H)`` states and recomputes each chunk's logits in backward, writing the
gradient of states, weight and bias chunk by chunk (the Liger idea, in plain torch so it runs on CPU);
any other head is checkpointed chunk by chunk, which recomputes the same way through autograd. Neither
the full logits nor the full float32 log-softmax ever exist. Where the model does something between
its decoder and its head (logit soft-capping, logit scaling, prompt-learning adapters, an unknown
wrapper), that split is not safe; this is detected once per model and the model's own logits are used,
still with a chunked float32 log-softmax over response positions. Under DistributedDataParallel (what HF's
Trainer passes to the loss) the split is decided on the wrapped model, and the decoder and head then run
inside the wrapper's forward (:func:`_forward_through`), so DDP still prepares its gradient all-reduce.

``naive``: the model's full ``(N, T, V)`` logits, a float32 log-softmax over every position and a gather,
as TRL does without Liger. It is the baseline the fused path is tested against (tests/train/test_logps.py)
and measured against (bench/dpo_throughput.py).

Packed (padding-free) batches carry ``sequence_index`` ``(N, T)``: which sequence each token belongs to
(-1 for padding), with ``position_ids`` restarting at 0 for every sequence. The model then gets no 2D
attention mask: transformers derives a block-diagonal causal mask from the restarting position ids (SDPA
and eager attention) or runs flash-attention's varlen kernels on them, so no sequence sees another. Some
architectures (OPT, MPT, Bloom) do not; safealign/train/packing.py checks the model before a packed run trains.
Sums then go per sequence instead of per row (safealign/data/collate.py builds these batches).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn.functional import linear as _linear
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

from safealign.errors import UserError
from safealign.models.modes import eval_mode
from safealign.train.config import LOGPS_IMPLS

logger = logging.getLogger(__name__)

# Config attributes under which transformers models transform logits after the LM head.
LOGIT_TRANSFORM_ATTRS = ("final_logit_softcapping", "logit_softcapping", "output_logit_soft_cap", "logits_soft_cap",
                         "logit_scale", "logits_scaling", "logits_mup_width_multiplier", "lm_head_multiplier",
                         "output_multiplier_scale", "dim_model_base")
_NEUTRAL = (None, False, 0, 1, 1.0)
_split_cache: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()
_split_reasons: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()  # why not, when not


@dataclass(frozen=True)
class SequenceLogps:
    """Summed log-probs of each sequence's response tokens and the number of those tokens."""

    logps: Tensor  # (N,) float32
    tokens: Tensor  # (N,) float32


def sequence_logps(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor, *,
                   chunk_size: int = 1024, position_ids: Tensor | None = None, sequence_index: Tensor | None = None,
                   impl: str = "fused", target_ids: Tensor | None = None) -> SequenceLogps:
    """Summed response log-probs ``(S,)`` and response token counts ``(S,)`` for ``(N, T)`` inputs.

    ``S = N`` (one sequence per row) unless the batch is packed: then ``sequence_index`` ``(N, T)`` names
    each token's sequence and ``S`` is the number of sequences (``max + 1``). ``target_ids`` ``(N, T)``: score
    these tokens instead of the inputs (DeRTa's transition rows; not with packing).
    """
    rows, cols, token_lp = _response_token_logps(model, input_ids, attention_mask, response_mask,
                                                 chunk_size=chunk_size, position_ids=position_ids,
                                                 sequence_index=sequence_index, impl=impl, target_ids=target_ids)
    if sequence_index is None:
        seq, n = rows, input_ids.shape[0]
    else:
        seq, n = sequence_index[rows, cols + 1], int(sequence_index.max()) + 1
    logps = token_lp.new_zeros(n).index_add(0, seq, token_lp)
    tokens = torch.bincount(seq, minlength=n).to(torch.float32)
    return SequenceLogps(logps=logps, tokens=tokens)


def token_logps(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor, *,
                chunk_size: int = 1024, position_ids: Tensor | None = None, sequence_index: Tensor | None = None,
                impl: str = "fused", target_ids: Tensor | None = None) -> Tensor:
    """Per-token log-probs ``(N, T)`` aligned with ``input_ids``; 0 where ``response_mask`` is 0."""
    rows, cols, token_lp = _response_token_logps(model, input_ids, attention_mask, response_mask,
                                                 chunk_size=chunk_size, position_ids=position_ids,
                                                 sequence_index=sequence_index, impl=impl, target_ids=target_ids)
    out = token_lp.new_zeros(input_ids.shape)
    return out.index_put((rows, cols + 1), token_lp)


def pair_logps(model: nn.Module, batch: Mapping[str, Tensor] | Any, *, reference: bool = False,
               chunk_size: int = 1024, impl: str = "fused") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(chosen_logps, rejected_logps, chosen_tokens, rejected_tokens)``, each ``(B,)``.

    ``batch`` holds ``input_ids``, ``attention_mask``, ``response_mask`` of shape ``(2B, T)``: chosen
    rows first, then rejected rows. ``reference=True`` scores the reference view (``ref_*`` keys when
    present, else the policy keys) without gradients.
    """
    prefix = "ref_" if reference and _field(batch, "ref_input_ids") is not None else ""
    targets = _field(batch, "target_ids")
    if targets is not None and prefix:  # the targets are laid out on the policy view's positions
        raise ValueError("a batch with target_ids has no reference-view targets: score such rows without a "
                         "reference prompt transform")
    ids, attn, resp = (_field(batch, prefix + key) for key in ("input_ids", "attention_mask", "response_mask"))
    missing = [
        prefix + k for k, v in zip(("input_ids", "attention_mask", "response_mask"), (ids, attn, resp)) if v is None
    ]
    if missing:
        raise ValueError(f"batch lacks {', '.join(missing)}; it has {', '.join(_keys(batch))}")
    sequence_index = _field(batch, prefix + "sequence_index")
    if sequence_index is None and ids.shape[0] % 2:
        raise ValueError(f"a pair batch needs 2B rows (chosen then rejected), got {ids.shape[0]}")
    with torch.no_grad() if reference else contextlib.nullcontext():
        out = sequence_logps(model, ids, attn, resp, chunk_size=chunk_size,
                             position_ids=_field(batch, prefix + "position_ids"), sequence_index=sequence_index,
                             impl=impl, target_ids=targets)
    if out.logps.shape[0] % 2:
        raise ValueError(f"a pair batch needs 2B sequences (chosen then rejected), got {out.logps.shape[0]}")
    b = out.logps.shape[0] // 2
    return out.logps[:b], out.logps[b:], out.tokens[:b], out.tokens[b:]


def _field(batch: Any, key: str) -> Any:
    if isinstance(batch, Mapping):
        return batch.get(key)
    return getattr(batch, key, None)


def _keys(batch: Any) -> list[str]:
    return sorted(batch.keys()) if isinstance(batch, Mapping) else sorted(vars(batch))


# --------------------------------------------------------------------------- core
def _response_token_logps(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor, *,
                          chunk_size: int, position_ids: Tensor | None, sequence_index: Tensor | None = None,
                          impl: str = "fused", target_ids: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(rows, cols, token_logps)``, each ``(P,)``: position ``(row, col)`` predicts ``input_ids[row, col + 1]``
    (``target_ids[row, col + 1]`` when given)."""
    _check_inputs(input_ids, attention_mask, response_mask, chunk_size, impl)
    if target_ids is not None and (target_ids.shape != input_ids.shape or sequence_index is not None):
        raise ValueError(f"target_ids {tuple(target_ids.shape)} must match input_ids {tuple(input_ids.shape)}, "
                         "in an unpacked batch (transition rows are not packed)")
    scored = input_ids if target_ids is None else target_ids
    if sequence_index is not None:
        _check_packed(sequence_index, position_ids, response_mask)
        if _varlen_attention(model) and input_ids.shape[0] > 1:
            return _flattened_token_logps(model, input_ids, attention_mask, response_mask, chunk_size=chunk_size,
                                          position_ids=position_ids, sequence_index=sequence_index, impl=impl)
    rows, cols = response_mask[:, 1:].bool().nonzero(as_tuple=True)  # (P,) each
    targets = scored[rows, cols + 1]  # (P,)
    # packed rows: no 2D mask, so transformers builds the block-diagonal causal mask from the position ids
    forward_kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": False,
                                      "attention_mask": None if sequence_index is not None else attention_mask}
    if position_ids is not None:
        forward_kwargs["position_ids"] = position_ids
    if impl == "naive":
        return rows, cols, _naive_logps(model, forward_kwargs, scored)[rows, cols]
    inner = _ddp_module(model)
    split = _head_split(inner, input_ids, attention_mask)
    if split is not None:
        fused = partial(_split_token_logps, *split, forward_kwargs, rows, cols, targets, chunk_size)
        return rows, cols, _forward_through(model, inner, fused)
    logits = model(**forward_kwargs).logits  # (N, T, V), in the model's dtype
    chunk_logits = lambda sl: logits[rows[sl], cols[sl]]  # noqa: E731  (chunk, V)
    return rows, cols, _chunked_logps(chunk_logits, targets, chunk_size)


def _split_token_logps(decoder: nn.Module, head: nn.Module, forward_kwargs: dict[str, Any], rows: Tensor,
                       cols: Tensor, targets: Tensor, chunk_size: int) -> Tensor:
    """``(P,)`` log-probs from the decoder's states at the scoring positions and the head over chunks of them."""
    hidden = _last_hidden_state(decoder(**forward_kwargs))  # (N, T, H)
    states = hidden[rows, cols]  # (P, H)
    if _plain_linear(head):
        return _fused_head_logps(states, head.weight, head.bias, targets, chunk_size)
    return _chunked_logps(lambda sl: head(states[sl]), targets, chunk_size)  # (chunk, V) at a time


def _ddp_module(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (which forwards no attributes, not even ``config``).
    Only DDP: :func:`_forward_through` relies on its forward calling ``module()`` and returning the output as is."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _config(model: nn.Module) -> Any:
    """The model's config; under wrappers that keep the model as ``.module`` and have none of their own (DDP),
    the wrapped model's."""
    while getattr(model, "config", None) is None and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return getattr(model, "config", None)


def _forward_through(model: nn.Module, inner: nn.Module, compute: Callable[[], Tensor]) -> Tensor:
    """``compute()`` (which runs ``inner``'s submodules) as the forward of ``model``, the DDP wrapper of ``inner``.

    DDP prepares its gradient all-reduce in its own forward (``reducer.prepare_for_forward``; with
    ``find_unused_parameters`` it also walks the graph from the forward's outputs to find the parameters that will
    get no gradient), so the decoder and head must not be called beside it: ``inner.forward`` is ``compute`` for
    one call of the wrapper, whose output is then the log-probs that every used parameter feeds.
    """
    if model is inner:
        return compute()
    own = inner.__dict__.get("forward")  # accelerate's mixed-precision forward, when it set one
    inner.forward = lambda *args, **kwargs: compute()
    try:
        return model()
    finally:
        if own is None:
            del inner.forward
        else:
            inner.forward = own


def _varlen_attention(model: nn.Module) -> bool:
    """Flash attention: it reads packed sequences from position ids only in a single (flattened) row.
    Read from the wrapped model: a DDP wrapper has no ``config``, and missing it would leave the batch unflattened,
    where flash attention runs causally over each whole row and a rejected sequence attends to its chosen one."""
    impl = getattr(_config(model), "_attn_implementation", None)
    return isinstance(impl, str) and "flash" in impl


def _flattened_token_logps(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor,
                           **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
    """A packed batch's real tokens as one ``(1, total)`` row (flash-attention's varlen path), with the
    results mapped back to the batch's ``(row, col)`` coordinates."""
    keep = attention_mask.bool()
    keep_rows, keep_cols = keep.nonzero(as_tuple=True)  # (total,) each, row-major like t[keep]
    flat = {k: v[keep][None] for k, v in kwargs.items() if isinstance(v, Tensor)}
    _, cols, token_lp = _response_token_logps(model, input_ids[keep][None], attention_mask[keep][None],
                                              response_mask[keep][None], **{**kwargs, **flat})
    # flattened position c predicts token c + 1; report the position before that token in the batch's layout
    return keep_rows[cols + 1], keep_cols[cols + 1] - 1, token_lp


def _naive_logps(model: nn.Module, forward_kwargs: dict[str, Any], input_ids: Tensor) -> Tensor:
    """``(N, T-1)`` log-probs of every next token from the full float32 log-softmax (the baseline)."""
    logits = model(**forward_kwargs).logits[:, :-1].float()  # (N, T-1, V)
    return logits.log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def _check_inputs(input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor, chunk_size: int,
                  impl: str = "fused") -> None:
    if impl not in LOGPS_IMPLS:
        raise UserError(f"logps must be one of {', '.join(LOGPS_IMPLS)}, got {impl!r}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (N, T), got shape {tuple(input_ids.shape)}")
    for name, mask in (("attention_mask", attention_mask), ("response_mask", response_mask)):
        if mask.shape != input_ids.shape:
            raise ValueError(f"{name} has shape {tuple(mask.shape)}, input_ids {tuple(input_ids.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise UserError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if bool(response_mask[:, 0].any()):
        rows = response_mask[:, 0].nonzero().flatten()[:5].tolist()
        raise ValueError(f"response_mask marks position 0 in rows {rows}: a first token has no context to score it")


def _check_packed(sequence_index: Tensor, position_ids: Tensor | None, response_mask: Tensor) -> None:
    """A packed batch needs restarting position ids, and no sequence may start with a scored token."""
    if position_ids is None:
        raise ValueError("a packed batch (sequence_index) needs position_ids restarting at 0 for each sequence")
    if sequence_index.shape != response_mask.shape or position_ids.shape != response_mask.shape:
        raise ValueError(f"sequence_index {tuple(sequence_index.shape)} and position_ids "
                         f"{tuple(position_ids.shape)} must match the batch {tuple(response_mask.shape)}")
    starts = (position_ids == 0) & response_mask.bool()
    if bool(starts.any()):
        raise ValueError("response_mask marks the first token of a packed sequence: it has no context to score it")


def _plain_linear(head: nn.Module) -> bool:
    """A head whose forward is exactly ``F.linear(x, weight, bias)`` on whole (unsharded) parameters."""
    weight = getattr(head, "weight", None)
    # DeepSpeed ZeRO-3 parameters (ds_id) are empty outside the module's forward: only head(...) gathers them
    return type(head) is nn.Linear and weight is not None and weight.dim() == 2 and not hasattr(weight, "ds_id")


def _fused_head_logps(states: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_size: int) -> Tensor:
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in (states, weight, bias)):
        return _FusedHeadLogps.compute(states, weight, bias, targets, chunk_size)
    return _FusedHeadLogps.apply(states, weight, bias, targets, chunk_size)


class _FusedHeadLogps(torch.autograd.Function):
    """``log_softmax(states @ weight.T + bias)[p, targets[p]]`` ``(P,)``, ``chunk_size`` rows at a time.

    Forward keeps no logits; backward recomputes each chunk's logits and turns them into the gradient
    of the log-prob directly, ``d logp / d logits = onehot(target) - softmax(logits)``, so one
    ``(chunk, V)`` float32 buffer is all the extra memory either pass needs. The weight (and bias)
    gradient is accumulated in the weight's dtype, chunk by chunk.
    """

    @staticmethod
    def compute(states: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_size: int) -> Tensor:
        out = torch.empty(targets.shape[0], dtype=torch.float32, device=states.device)
        for start in range(0, targets.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            logits = _linear(states[sl], weight, bias).float()  # (chunk, V)
            out[sl] = logits.gather(-1, targets[sl, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        return out

    @staticmethod
    def forward(ctx, states, weight, bias, targets, chunk_size):  # noqa: D102
        ctx.save_for_backward(states, weight, bias, targets)
        ctx.chunk_size = chunk_size
        with torch.no_grad():
            return _FusedHeadLogps.compute(states, weight, bias, targets, chunk_size)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        states, weight, bias, targets = ctx.saved_tensors
        need_states, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_states = torch.zeros_like(states) if need_states else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        grad_bias = torch.zeros_like(bias) if need_bias else None
        grad_out = grad_out.float()
        for start in range(0, targets.shape[0], ctx.chunk_size):
            sl = slice(start, start + ctx.chunk_size)
            h, g = states[sl], grad_out[sl]  # (chunk, H), (chunk,)
            logits = _linear(h, weight, bias).float()  # (chunk, V)
            probs = logits.sub_(torch.logsumexp(logits, dim=-1, keepdim=True)).exp_()  # softmax, in place
            grad_logits = probs.mul_(-g[:, None])  # d(g * logp)/d logits = g * (onehot - softmax)
            grad_logits[torch.arange(g.shape[0], device=g.device), targets[sl]] += g
            grad_logits = grad_logits.to(weight.dtype)
            if grad_states is not None:
                grad_states[sl] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.t(), h.to(weight.dtype))
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0).to(bias.dtype)
        return grad_states, grad_weight, grad_bias, None, None


def _chunked_logps(chunk_logits: Callable[[slice], Tensor], targets: Tensor, chunk_size: int) -> Tensor:
    """Log-probs ``(P,)`` of ``targets`` under logits produced ``chunk_size`` rows at a time."""
    pieces = []
    for start in range(0, targets.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        fn = partial(_target_logps, chunk_logits, sl, targets[sl])
        # Checkpointing keeps only the chunk's inputs for backward and recomputes its logits there.
        pieces.append(checkpoint(fn, use_reentrant=False) if torch.is_grad_enabled() else fn())
    if not pieces:
        return torch.zeros(0, dtype=torch.float32, device=targets.device)
    return torch.cat(pieces)


def _target_logps(chunk_logits: Callable[[slice], Tensor], sl: slice, targets: Tensor) -> Tensor:
    logits = chunk_logits(sl).float()  # (chunk, V)
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _last_hidden_state(output: Any) -> Tensor:
    hidden = getattr(output, "last_hidden_state", None)
    return hidden if hidden is not None else output[0]


# --------------------------------------------------------------------------- decoder / head split
def _head_split(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> tuple[nn.Module, nn.Module] | None:
    """``(decoder, lm_head)`` when ``lm_head(decoder(x))`` equals the model's logits, else None.

    Decided once per model: a static check of the structure and config, then a short numerical probe
    that catches transformations the static check does not know about.
    """
    if model in _split_cache:
        return _modules(model) if _split_cache[model] else None
    reason = head_split_problem(model, input_ids, attention_mask)
    if reason is None:
        logger.debug("log-probs for %s: decoder + chunked LM head", type(model).__name__)
        return _modules(model)
    logger.info("log-probs for %s: using the model's logits (chunked log-softmax) because %s",
                type(model).__name__, reason)
    return None


def head_split_problem(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> str | None:
    """Why ``lm_head(decoder(x))`` is not ``model``'s logits (None: it is), decided once per model as in
    :func:`_head_split`. Code that must score on the decoder's states (routed heads) refuses a model with a reason."""
    if model in _split_cache:
        return None if _split_cache[model] else _split_reasons.get(model, "lm_head(decoder(x)) is not its logits")
    reason = _static_split_problem(model) or _probe_split_problem(model, input_ids, attention_mask)
    _split_cache[model] = reason is None
    if reason is not None:
        _split_reasons[model] = reason
    return reason


def _modules(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    return model.get_decoder(), model.get_output_embeddings()


def _static_split_problem(model: nn.Module) -> str | None:
    if not (callable(getattr(model, "get_decoder", None)) and callable(getattr(model, "get_output_embeddings", None))):
        return "it exposes no get_decoder()/get_output_embeddings() (e.g. an unknown wrapper)"
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return "a prompt-learning adapter changes the forward pass"
    try:
        decoder, head = _modules(model)
    except (AttributeError, NotImplementedError, TypeError) as exc:
        return f"its decoder or head cannot be found ({exc})"
    if not isinstance(decoder, nn.Module) or not isinstance(head, nn.Module):
        return "its decoder or LM head is not a module"
    config = getattr(model, "config", None)
    if config is not None and callable(getattr(config, "get_text_config", None)):
        config = config.get_text_config()
    for attr in LOGIT_TRANSFORM_ATTRS:
        value = getattr(config, attr, None)
        if value not in _NEUTRAL:
            return f"config.{attr}={value!r} transforms the logits after the LM head"
    return None


def _probe_split_problem(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> str | None:
    """Compare ``lm_head(decoder(x))`` with the model's logits on up to 16 real tokens of row 0."""
    ids = input_ids[0][attention_mask[0].bool()][:16][None]  # (1, t)
    if ids.shape[1] == 0:
        return None
    mask = torch.ones_like(ids)
    decoder, head = _modules(model)
    with eval_mode(model):  # dropout would make the two forwards differ
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            actual = head(_last_hidden_state(decoder(input_ids=ids, attention_mask=mask, use_cache=False))).float()
    tol = 1e-4 if expected.dtype == torch.float32 and head.weight.dtype == torch.float32 else 2e-2
    if actual.shape != expected.shape or not torch.allclose(actual, expected, rtol=tol, atol=tol):
        diff = (actual - expected).abs().max().item() if actual.shape == expected.shape else float("nan")
        return f"lm_head(decoder(x)) differs from its logits (max abs diff {diff:.3g})"
    return None


# --------------------------------------------------------------------------- full distributions, routed heads
def response_log_softmax(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """``(rows, cols, log_probs)``: the full next-token log-softmax ``(P, V)`` float32 at every position that
    predicts a response token (same ``(rows, cols)`` order as :func:`token_logps`), for losses over a whole
    distribution (DCKD, ADPA; safealign/losses/distill.py). Memory is ``P × V``: keep batches small."""
    _check_inputs(input_ids, attention_mask, response_mask, 1)
    rows, cols = response_mask[:, 1:].bool().nonzero(as_tuple=True)
    split = _head_split(model, input_ids, attention_mask)
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if split is not None:
        decoder, head = split
        logits = head(_last_hidden_state(decoder(**kwargs))[rows, cols])
    else:
        logits = model(**kwargs).logits[rows, cols]
    return rows, cols, torch.log_softmax(logits.float(), dim=-1)


def routed_sequence_logps(decoder: nn.Module, heads: Sequence[nn.Module], head_of_row: Tensor, input_ids: Tensor,
                          attention_mask: Tensor, response_mask: Tensor, *, chunk_size: int = 1024) -> SequenceLogps:
    """Like :func:`sequence_logps`, with row ``i``'s tokens scored by ``heads[head_of_row[i]]`` on the shared
    ``decoder``'s last hidden state (a multi-head model, MAH-DPO; safealign/models/heads.py)."""
    _check_inputs(input_ids, attention_mask, response_mask, chunk_size)
    rows, cols = response_mask[:, 1:].bool().nonzero(as_tuple=True)
    targets = input_ids[rows, cols + 1]
    hidden = _last_hidden_state(decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False))
    states = hidden[rows, cols]
    token_head = head_of_row[rows]
    token_lp = torch.zeros(rows.shape[0], dtype=torch.float32, device=input_ids.device)
    for k in token_head.unique().tolist():
        sel = (token_head == k).nonzero(as_tuple=True)[0]
        # default arguments bind this head's values: checkpointed chunks call the function again in backward
        chunk = lambda sl, head=heads[k], picked=states[sel]: head(picked[sl])  # noqa: E731
        token_lp = token_lp.index_put((sel,), _chunked_logps(chunk, targets[sel], chunk_size))
    n = input_ids.shape[0]
    return SequenceLogps(token_lp.new_zeros(n).index_add(0, rows, token_lp),
                         torch.bincount(rows, minlength=n).to(torch.float32))
