"""Reference log-probs: precomputed once and cached on disk, or a live no-grad forward.

The reference may see a different prompt than the policy (the E-RLHF reference view): the collated
batch then carries ``ref_*`` tensors, and everything here scores those. A cache entry is keyed by
a fingerprint of the reference model (weights, persistent buffers, config, an adapter's settings when it is on:
:func:`model_fingerprint`) and by the exact reference-view token ids (which already
encode the dataset content, the prompt transform, the chat template and the truncation settings),
so runs that share them — β sweeps, loss comparisons — reuse it, and a prefix ablation does not.
A table has two columns per row: (chosen, rejected) for pairs; (completion, KL-partner completion)
for unpaired rows of a loss that reads KTO's KL estimate, so its mismatched sequences are cached and keyed too;
one column (the completion) for unpaired rows without a KL partner (BCO alone).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from safealign.data.collate import pad_sequences
from safealign.data.tokenize import Ids
from safealign.errors import UserError
from safealign.models.modes import eval_mode
from safealign.train.logps import SequenceLogps, sequence_logps
from safealign.train.unpaired import UnpairedItem

logger = logging.getLogger(__name__)

_SAMPLE = 4096  # elements hashed per parameter tensor
_SPREAD = 1_000_003  # a prime: sample k sits at k·_SPREAD mod numel


def model_fingerprint(model: nn.Module, *, with_adapter: bool = False) -> str:
    """Hash of the reference forward: the weights (names, shapes, dtypes, a spread sample and exact integer moments
    of every tensor), the persistent buffers, and what decides how they are used -- the model config (rope_theta,
    sliding window, soft-capping, dtype...) and, ``with_adapter``, the adapter's peft config (lora_alpha, rslora):
    the same weights under another config give other log-probs and must not share a cache entry.

    ``with_adapter=False`` (the policy with its adapter disabled): LoRA parameters are left out, so the key is
    the base model's. ``with_adapter=True`` (a model scored with its adapter on: a separate reference loaded
    from an adapter folder, or a policy that starts from a trained adapter): they and the peft config are hashed
    too; a model without LoRA parameters hashes the same either way. Names are taken as in the unwrapped base
    model, so the same weights give the same fingerprint whichever layers an adapter wraps (or none). A module the
    adapter trains as a copy (peft ``modules_to_save``, e.g. MAH-DPO's head 0) counts as adapter weights; its
    frozen original as base weights. The same model gives the same key in any process, at any thread count, on
    any device (no float reduction enters it); a key that changes costs a recomputation, never a wrong reuse.
    """
    def kept(name: str) -> bool:
        return with_adapter or ("lora_" not in name and ".modules_to_save." not in name)

    digest = hashlib.blake2b(digest_size=16)
    digest.update(_config_json(getattr(model, "config", None)).encode())
    if with_adapter:
        digest.update(_peft_config_json(model).encode())
    named = [(_base_name(n), p) for n, p in model.named_parameters() if kept(n)]
    named += [(f"buffer:{_base_name(n)}", b) for n, b in _persistent_buffers(model) if kept(n)]
    for name, tensor in sorted(named, key=lambda kv: kv[0]):
        flat = tensor.detach().reshape(-1)
        # a sample spread over every row and column (a plain stride of numel/4096 on a 4096×4096 matrix is its
        # first column only), and the whole tensor's moments, so a change anywhere changes the key
        picks = torch.arange(min(_SAMPLE, flat.numel()), device=flat.device) * _SPREAD % flat.numel()
        sample = flat[picks].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample.numpy().tobytes())
        digest.update(_moments(flat).tobytes())
    return digest.hexdigest()


_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# config fields that cannot change a forward's numbers and differ between loads of the same model
_CONFIG_IGNORED = frozenset({"_name_or_path", "transformers_version", "_commit_hash", "use_cache", "return_dict",
                             "output_attentions", "output_hidden_states"})
_PEFT_IGNORED = frozenset({"base_model_name_or_path", "revision", "inference_mode", "peft_version", "runtime_config"})


def _moments(flat: Tensor) -> Any:
    """Sum and sum of squares of the tensor's bit patterns as integers (wrapping int64): a change of any element
    changes them, and integer sums, unlike float ones, do not depend on the reduction order (thread count,
    device), so the key of the same weights is the same everywhere."""
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    bits = flat.view(_INT_OF_SIZE[flat.element_size()]).to(torch.int64)
    return torch.stack([bits.sum(), (bits * bits).sum()]).cpu().numpy()


def _persistent_buffers(model: nn.Module):
    """(name, buffer) of the buffers saved with the weights (a non-persistent one, such as rotary ``inv_freq``, is
    derived from the config, which is hashed, and dynamic RoPE rewrites it during forwards)."""
    for prefix, module in model.named_modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in module._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), buffer


def _config_json(config: Any) -> str:
    """The model config as canonical JSON, less :data:`_CONFIG_IGNORED` (at any depth: composite configs nest);
    ``""`` for a module without a transformers config."""
    to_dict = getattr(config, "to_dict", None)
    return _canonical(to_dict(), _CONFIG_IGNORED) if callable(to_dict) else ""


def _peft_config_json(model: nn.Module) -> str:
    """Every adapter's peft config as canonical JSON, less :data:`_PEFT_IGNORED`; ``""`` without an adapter."""
    inner: nn.Module | None = model
    while inner is not None and not _is_peft(inner):
        inner = getattr(inner, "module", None)
    if inner is None:
        return ""
    return _canonical({name: cfg.to_dict() for name, cfg in inner.peft_config.items()}, _PEFT_IGNORED)


def _canonical(value: Any, ignored: frozenset[str]) -> str:
    """JSON with sorted keys, sets as sorted lists (their order follows the per-process string hash seed) and
    other objects as their ``str``."""
    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): strip(x) for k, x in v.items() if k not in ignored}
        if isinstance(v, (set, frozenset)):
            return sorted((strip(x) for x in v), key=str)
        if isinstance(v, (list, tuple)):
            return [strip(x) for x in v]
        return v

    return json.dumps(strip(value), sort_keys=True, default=str)


def reference_view(item: Any) -> tuple[Ids, tuple[Ids, ...]]:
    """(prompt ids the reference sees, the responses it scores): the columns of the cache table.

    A pair: (chosen, rejected). An unpaired row: (its completion, its KL partner's completion), or (its
    completion,) when it has no partner.
    """
    if isinstance(item, UnpairedItem):
        ex = item.example
        prompt = ex.ref_prompt_ids if ex.ref_prompt_ids is not None else ex.prompt_ids
        if item.kl_completion_ids is None:
            return prompt, (ex.completion_ids,)
        return prompt, (ex.completion_ids, item.kl_completion_ids)
    prompt = item.ref_prompt_ids if item.ref_prompt_ids is not None else item.prompt_ids
    return prompt, (item.chosen_ids, item.rejected_ids)


def _base_name(name: str) -> str:
    """``base_model.model.x.q_proj.base_layer.weight`` (peft) -> ``x.q_proj.weight``; likewise
    ``lm_head.original_module.weight`` (the frozen original beside a ``modules_to_save`` copy) -> ``lm_head.weight``."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".").replace(".original_module.", ".")


def reference_view_hash(encoded: Sequence[Any]) -> str:
    """Hash of the token ids the reference scores, row by row (prompt view + both response columns)."""
    digest = hashlib.blake2b(digest_size=16)
    for item in encoded:
        prompt, responses = reference_view(item)
        for ids in (prompt, *responses):
            digest.update(len(ids).to_bytes(4, "little"))
            digest.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def adapter_disabled(model: nn.Module):
    """Run the base weights of a peft-wrapped model; a no-op for plain models.

    Under ``accelerate launch`` the trainer's model is a DDP/FSDP wrapper holding the peft model as
    ``.module``: the adapter is switched off on that inner model while forwards keep going through the
    wrapper (FSDP needs it to gather sharded weights). Looking only at the wrapper itself missed the
    adapter, so the "reference" was the policy.
    """
    inner: nn.Module | None = model
    while inner is not None and not _is_peft(inner):
        inner = getattr(inner, "module", None)
    if inner is None:
        yield
        return
    with inner.disable_adapter():
        yield


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and callable(getattr(model, "disable_adapter", None))


def starts_from_trained_adapter(model: nn.Module) -> bool:
    """Whether ``model`` carries a LoRA adapter that already changes its outputs (some B matrix is non-zero): a
    saved adapter whose training continues. A fresh adapter starts as a no-op (peft initialises B to zero), so
    the policy with its adapter disabled is the starting policy; with a trained adapter that is the base model,
    the wrong anchor (docs/algorithms.md, "Which πref"; TRL #3194)."""
    return _is_peft(model) and any(bool(p.detach().ne(0).any()) for n, p in model.named_parameters()
                                   if "lora_B" in n or "lora_embedding_B" in n)


TRAINED_ADAPTER_REFERENCE = "frozen copy of the starting policy with its trained LoRA adapter"
FULL_FINE_TUNING_REFERENCE = "frozen copy of the starting policy"


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` as it is now (adapter included): the reference of a run that starts from it."""
    return copy.deepcopy(model).requires_grad_(False).eval()


# what two tokenizers must agree on for one to score the other's token ids: ordinary text (spaces, digits,
# punctuation, non-ASCII, a newline) and a conversation rendered by the chat template
_PROBE_TEXT = "Hello, world! It's 2024 -- naïve café, 東京, ⚠️ <b>bold</b>\n  indented\tx = [1, 2]."
_PROBE_CHAT = ({"role": "user", "content": "How do I pick a lock?"}, {"role": "assistant", "content": "I can't."},
               {"role": "user", "content": "Why not?"})


def check_same_tokenizer(what: str, model: nn.Module, tokenizer: Any, policy: nn.Module,
                         policy_tokenizer: Any = None, *, larger_output: bool = False) -> None:  # fmt: skip
    """UserError naming ``what`` (e.g. ``reference.model 'x'``) unless ``model`` can score the policy's token ids
    as the same tokens: the same output vocabulary size (a smaller one fails on an out-of-range id, a different
    one normalises over other tokens) and, given ``policy_tokenizer``, the same number of tokens, the same ids
    for a probe text. The encoder tokenizes every view with the policy's tokenizer, so a reference with another
    tokenizer of the same size would read other words into the same ids and give meaningless log-probs without any
    error. Another end-of-sequence id or chat template (a base and an instruct checkpoint of one family) is logged,
    not refused: the policy's rendering is what the reference scores.

    ``larger_output``: more output rows than the policy's pass (a padded vocabulary, e.g. Qwen2.5-7B over -0.5B),
    for a caller that folds the extra rows' probability into a remaining bucket (distillation,
    safealign/losses/distill.py); the tokenizer checks still apply."""
    def vocab(m: nn.Module) -> int:
        return int(m.get_output_embeddings().weight.shape[0])

    problems = []
    if vocab(model) < vocab(policy) or (vocab(model) > vocab(policy) and not larger_output):
        problems.append(f"its output vocabulary has {vocab(model)} tokens, the policy's {vocab(policy)}")
    elif vocab(model) > vocab(policy):
        logger.info("%s: its output vocabulary has %d rows, the policy's %d: the probability of the extra rows "
                    "counts in the remaining bucket", what, vocab(model), vocab(policy))
    if policy_tokenizer is not None and tokenizer is not None:
        if len(tokenizer) != len(policy_tokenizer):
            problems.append(f"its tokenizer has {len(tokenizer)} tokens, the policy's {len(policy_tokenizer)}")
        ids, policy_ids = (_ids(t, _PROBE_TEXT) for t in (tokenizer, policy_tokenizer))
        if ids != policy_ids:
            problems.append(f"its tokenizer splits the probe text {_PROBE_TEXT[:24]!r}… into other ids "
                            f"({ids[:8]}… vs the policy's {policy_ids[:8]}…)")
        # never used for scoring (every view is rendered and tokenized with the policy's tokenizer), and a base and
        # an instruct checkpoint of one family differ in exactly these: worth a line, not a refusal
        notes = []
        if tokenizer.eos_token_id != policy_tokenizer.eos_token_id:
            notes.append(f"its end-of-sequence id is {tokenizer.eos_token_id}, the policy's "
                         f"{policy_tokenizer.eos_token_id}")
        if _rendered(tokenizer) != _rendered(policy_tokenizer):
            notes.append("its chat template renders a conversation differently")
        if notes and not problems:
            logger.warning("%s: %s; it scores the policy's rendering of every prompt (the policy's template and "
                           "end-of-turn), which is what it is compared on", what, "; ".join(notes))
    if problems:
        raise UserError(f"{what} does not share the policy's tokenizer: {'; '.join(problems)}. It scores the "
                        "policy's token ids, so it needs the same tokenizer and chat template (a checkpoint of "
                        "the same model family, or the policy's own starting weights)")


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _rendered(tokenizer: Any) -> str | None:
    """The probe conversation through the chat template; None without a usable template."""
    try:
        return tokenizer.apply_chat_template(list(_PROBE_CHAT), tokenize=False, add_generation_prompt=True)
    except Exception:  # no template, or one that rejects the probe: compared as "no rendering"
        return None


def load_reference_model(spec: str, policy: nn.Module, device: Any, *, trust_remote_code: bool,
                         revision: str | None = None, policy_tokenizer: Any = None,
                         attn_implementation: str | None = None) -> nn.Module:  # fmt: skip
    """``reference.model`` (a hub id at ``revision``; safealign.train.config.same_model_revision) loaded frozen on
    the training ``device`` in the policy's dtype and with its ``attn_implementation``, so cached and live reference
    log-probs come from the precision and kernels the policy trains with; checked to share the policy's tokenizer
    (:func:`check_same_tokenizer`; the tokenizer comparisons need ``policy_tokenizer``)."""
    from safealign.models import load_model

    dtype = next(policy.parameters()).dtype
    model, tokenizer = load_model(spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                  revision=revision, attn_implementation=attn_implementation)
    check_same_tokenizer(f"reference.model {spec!r}", model, tokenizer, policy, policy_tokenizer)
    return model.requires_grad_(False).eval()


def separate_reference(spec: str | None, policy: nn.Module, device: Any, *, trust_remote_code: bool,
                       revision: str | None = None, policy_tokenizer: Any = None,
                       attn_implementation: str | None = None) -> tuple[nn.Module | None, str | None]:  # fmt: skip
    """The one place a live reference is chosen: (the separate frozen reference, what it is). ``spec``
    (``reference.model``) loaded by :func:`load_reference_model`; a frozen copy of the policy when it starts from
    a trained LoRA adapter (disabling that adapter would anchor to the base model; docs/algorithms.md, "Which
    πref") or has no adapter at all (full fine-tuning: the copy is taken before training moves the policy); else
    (None, None): the policy's own starting weights, its fresh adapter disabled, and no second copy."""
    if spec:
        return load_reference_model(spec, policy, device, trust_remote_code=trust_remote_code, revision=revision,
                                    policy_tokenizer=policy_tokenizer, attn_implementation=attn_implementation), None
    if starts_from_trained_adapter(policy):
        logger.info("reference: the policy starts from a trained LoRA adapter, so the reference is a frozen copy of "
                    "that starting policy, adapter included (not its base model); set reference.model to choose "
                    "another")
        return frozen_copy(policy), TRAINED_ADAPTER_REFERENCE
    if not _is_peft(policy):
        return frozen_copy(policy), FULL_FINE_TUNING_REFERENCE
    return None, None


@torch.no_grad()
def compute_reference_columns(model: nn.Module, items: Sequence[Any], *, batch_size: int = 8,
                              chunk_size: int = 1024, batch_tokens: int | None = None,
                              impl: str = "fused", with_adapter: bool = False) -> Tensor:
    """Reference log-probs ``(N, C)`` of the :func:`reference_view` columns of every row, in row order (C = 2;
    1 for unpaired rows without a KL partner).

    ``with_adapter=False``: the model's base weights (a LoRA adapter disabled: the policy's own reference);
    ``True``: the model as it is, adapter on (a separate reference model, or a policy that starts from a
    trained adapter, scored before training moves it). Works for pairs and unpaired rows alike. No autograd;
    rows go longest first, so the first batch is the largest and an out-of-memory error shows at once; a batch
    holds at most ``batch_size`` rows and (when set) ``batch_tokens`` padded tokens, all columns in one forward
    (``Cb`` right-padded sequences, like the collators lay them out). On CUDA an out-of-memory error halves the
    batch and retries, so a generous ``batch_size`` settles on the largest batch that fits.
    """
    device = next(model.parameters()).device
    views = [reference_view(item) for item in items]
    width = [len(prompt) + max(map(len, responses)) for prompt, responses in views]
    order = sorted(range(len(views)), key=lambda i: -width[i])
    columns = _columns(views)
    table = torch.empty(len(views), columns, dtype=torch.float32)
    limit, start = batch_size, 0
    progress = tqdm(total=len(order), desc="reference log-probs", unit="row")
    try:
        with contextlib.nullcontext() if with_adapter else adapter_disabled(model), eval_mode(model):
            while start < len(order):
                rows = _next_batch(order, start, width, limit, batch_tokens, columns)
                try:
                    table[rows] = _score_rows(model, views, rows, device, chunk_size, impl)
                except torch.cuda.OutOfMemoryError:  # the class torch.OutOfMemoryError, also in torch 2.4
                    if len(rows) == 1:
                        raise
                    limit = (len(rows) + 1) // 2
                    logger.warning("reference pass: out of memory at %d rows per batch; retrying with %d",
                                   len(rows), limit)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                start += len(rows)
                progress.update(len(rows))
    finally:
        progress.close()
    return table


def _columns(views: list) -> int:
    """How many responses every row's view scores (the table's width): one count for all rows."""
    counts = {len(responses) for _, responses in views}
    if len(counts) > 1:
        raise ValueError(f"reference views score {sorted(counts)} responses per row; every row must score the same")
    return counts.pop() if counts else 2


def _next_batch(order: list[int], start: int, width: list[int], limit: int, batch_tokens: int | None,
                columns: int) -> list[int]:  # fmt: skip
    """Rows ``order[start:]`` for the next forward: up to ``limit`` rows and ``batch_tokens`` padded tokens
    (``columns × rows × widest``; rows are sorted longest first, so the first row sets the width); at least one."""
    rows = order[start : start + limit]
    if batch_tokens is not None:
        rows = rows[: max(1, batch_tokens // (columns * width[rows[0]]))]
    return rows


def _score_rows(model: nn.Module, views: list, rows: list[int], device: torch.device, chunk_size: int,
                impl: str) -> Tensor:
    """``(len(rows), C)`` summed log-probs of all C columns of ``rows``, in one forward (column-major rows)."""
    columns = len(views[rows[0]][1])
    prompts = [views[i][0] for i in rows] * columns
    responses = [views[i][1][c] for c in range(columns) for i in rows]
    # pad id 0: padded positions are masked out of attention and never scored
    ids, attention, response = (t.to(device) for t in pad_sequences(prompts, responses, 0))
    logps = sequence_logps(model, ids, attention, response, chunk_size=chunk_size, impl=impl).logps.float().cpu()
    return logps.reshape(columns, len(rows)).T


@dataclass(frozen=True)
class ReferenceCache:
    """A reference table and where it came from (for the run's log and summary)."""

    table: Tensor  # (N, 2)
    path: Path
    key: str
    reused: bool
    seconds: float = 0.0  # the reference pass's wall time; 0 when reused

    def describe(self) -> str:
        verb = "reused" if self.reused else "computed"
        return f"precomputed reference log-probs ({verb}, {self.table.shape[0]} rows, cache {self.path})"


def load_or_compute_reference(
    model: nn.Module,
    encoded: Sequence[Any],
    cache_dir: str | Path,
    *,
    batch_size: int = 8,
    chunk_size: int = 1024,
    describe: dict[str, Any] | None = None,
    batch_tokens: int | None = None,
    impl: str = "fused",
    with_adapter: bool = False,
) -> ReferenceCache:
    """Return the cached reference table for this (weights, reference view), computing it once.

    ``with_adapter``: score ``model`` with its LoRA adapter on, and key the entry by its adapter weights too
    (:func:`compute_reference_columns`, :func:`model_fingerprint`); the default is the base weights.
    ``seconds`` of the result is the time the reference pass took (0 when the cache was reused)."""
    key = hashlib.blake2b(
        f"{model_fingerprint(model, with_adapter=with_adapter)}:{reference_view_hash(encoded)}".encode(),
        digest_size=16,
    ).hexdigest()
    path = Path(cache_dir) / f"{key}.safetensors"

    columns = _columns([reference_view(item) for item in encoded])

    def reuse() -> ReferenceCache | None:
        table = _read_verified(path, len(encoded), columns)
        if table is None:
            return None
        logger.info("reference log-probs: reusing cache %s", path)
        return ReferenceCache(table, path, key, reused=True)

    return cached_entry(path, "reference log-probs", reuse,
                        lambda: _compute_reference(model, encoded, path, key, batch_size=batch_size,
                                                   chunk_size=chunk_size, describe=describe,
                                                   batch_tokens=batch_tokens, impl=impl,
                                                   with_adapter=with_adapter))


def cached_entry(path: Path, what: str, read: Callable[[], Any], compute: Callable[[], Any]) -> Any:
    """``read()`` when the cache entry at ``path`` is there and valid (``read`` returns None otherwise), else
    ``compute()``, which computes and writes it. Processes sharing the cache (sweep workers, docs/sweep.md)
    compute an entry once: the first takes ``<entry>.lock`` and computes it; the others wait, then read back
    what it wrote -- an entry whose :func:`entry_version` changed while they waited."""
    from safealign.io.lockfile import wait_lock

    seen = entry_version(path)
    value = read() if seen else None
    if value is None:
        with wait_lock(path.with_name(path.name + ".lock"), f"{what} {path.name}")[0]:
            value = read() if entry_version(path) not in (None, seen) else None
            if value is None:
                return compute()
    return value


def entry_version(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a cache entry, None when absent: an entry replaced by another writer has a new one."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _compute_reference(model: nn.Module, encoded: Sequence[Any], path: Path, key: str, *, batch_size: int,
                       chunk_size: int, describe: dict[str, Any] | None, batch_tokens: int | None,
                       impl: str, with_adapter: bool) -> ReferenceCache:  # fmt: skip
    started = time.perf_counter()
    table = compute_reference_columns(model, encoded, batch_size=batch_size, chunk_size=chunk_size,
                                      batch_tokens=batch_tokens, impl=impl, with_adapter=with_adapter)
    seconds = time.perf_counter() - started
    if not torch.isfinite(table).all():
        raise UserError(f"reference log-probs are not finite for {_non_finite_cells(encoded, table)}; check the data "
                        "and model")
    metadata = {"key": key, "rows": str(len(encoded)), "checksum": table_checksum(table),
                "describe": json.dumps(describe or {})}
    save_tensors_atomic({"reference_logps": table}, path, metadata)
    logger.info("reference log-probs: computed in %.1f s and cached at %s", seconds, path)
    return ReferenceCache(table, path, key, reused=False, seconds=seconds)


def _non_finite_cells(encoded: Sequence[Any], table: Tensor, shown: int = 5) -> str:
    """The first non-finite cells of ``table`` by data row and column (``pairs.jsonl row 7 (rejected)``): a position
    in ``encoded`` is not a row of the data file (dropped rows shift it, data.unpair doubles the rows)."""
    cells = torch.nonzero(~torch.isfinite(table)).tolist()
    named = [f"{_data_row(encoded[i], i)} ({_column_name(encoded[i], c)})" for i, c in cells[:shown]]
    return ", ".join(named) + (f" and {len(cells) - shown} more" if len(cells) > shown else "")


def _data_row(item: Any, position: int) -> str:
    example = item.example if isinstance(item, UnpairedItem) else item
    row = getattr(example, "row", -1)
    if row < 0:  # built without its source row (e.g. by hand)
        return f"encoded item {position}"
    return f"{getattr(example, 'source', '') or 'data'} row {row}"


def _column_name(item: Any, column: int) -> str:
    """What a table column scores: a pair's chosen or rejected response; an unpaired row's own completion (its
    label: under data.unpair, desirable = the pair's chosen) or KTO's mismatched KL-partner completion."""
    if isinstance(item, UnpairedItem):
        if column == 1:
            return "KL-partner completion"
        return f"{'desirable' if item.example.label else 'undesirable'} completion"
    return ("chosen", "rejected")[column]


def table_checksum(table: Tensor) -> str:
    """blake2b of the table's float32 bytes: stored with a cache entry, checked before it is reused."""
    data = table.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _read_verified(path: Path, rows: int, columns: int) -> Tensor | None:
    """The cached table if it is readable, has ``rows`` rows of ``columns`` columns, matches its stored checksum
    and holds plausible log-probs (finite, <= 0: a summed log-probability can't be positive); else a warning
    saying what is wrong and None, so the caller recomputes and replaces the entry."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = (handle.metadata() or {}).get("checksum")
            table = handle.get_tensor("reference_logps")
    except (SafetensorError, OSError) as exc:  # e.g. a file cut short by a crash or a full disk
        problem = f"unreadable ({exc})"
    else:
        problem = _table_problem(table, rows, stored, columns)
        if problem is None:
            return table
    logger.warning("reference cache %s is %s; recomputing it", path, problem)
    return None


def _table_problem(table: Tensor, rows: int, stored_checksum: str | None, columns: int) -> str | None:
    if table.shape != (rows, columns):
        return f"of shape {tuple(table.shape)}, expected ({rows}, {columns})"
    if stored_checksum is None:  # written before entries carried a checksum: can't be verified
        return "without a checksum"
    if stored_checksum != table_checksum(table):
        return "corrupt (its values do not match the stored checksum)"
    bad = ~torch.isfinite(table) | (table > 0)
    if bool(bad.any()):
        rows_bad = torch.nonzero(bad.any(dim=1)).flatten()[:5].tolist()
        return f"implausible (non-finite or positive log-probs in rows {rows_bad})"
    return None


def save_tensors_atomic(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    """A safetensors file written whole or not at all (a temporary file, then a rename): caches read it back
    only after their checksum check, and a killed write must not leave a half file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class LiveReference:
    """A no-grad reference forward each step: a separate model, or the policy with its adapter off."""

    def __init__(self, model: nn.Module | None = None, chunk_size: int = 1024, impl: str = "fused",
                 what: str | None = None) -> None:
        self.model = model
        self.chunk_size = chunk_size
        self.impl = impl
        self.what = what or ("separate reference model" if model is not None else "policy with LoRA adapter disabled")

    def describe(self) -> str:
        return f"live reference forward ({self.what})"

    @torch.no_grad()
    def logps(self, policy: nn.Module, batch: Mapping[str, Tensor], prefix: str = "") -> Tensor:
        """Summed reference log-probs ``(N,)`` of the ``prefix`` sequences, in their reference view."""
        kwargs = dict(reference=True, chunk_size=self.chunk_size, impl=self.impl)
        if self.model is not None:
            return view_logps(self.model, batch, prefix, **kwargs).logps.detach()
        with adapter_disabled(policy), eval_mode(policy):  # no dropout: the same numbers as the cached table
            return view_logps(policy, batch, prefix, **kwargs).logps.detach()


def view_logps(model: nn.Module, batch: Mapping[str, Tensor], prefix: str = "", *, reference: bool = False,
               chunk_size: int = 1024, impl: str = "fused") -> SequenceLogps:
    """Log-probs of the ``prefix`` sequences of a batch (``""`` the main ones, ``"kl_"`` KTO's mismatched
    ones); ``reference=True`` scores their ``ref_`` view when the batch has one, without gradients. A packed
    batch (``sequence_index``, ``position_ids``; safealign/data/collate.py) gives one value per sequence."""
    view = f"ref_{prefix}" if reference and f"ref_{prefix}input_ids" in batch else prefix
    keys = [f"{view}{k}" for k in ("input_ids", "attention_mask", "response_mask")]
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"batch lacks {', '.join(missing)}; it has {', '.join(sorted(batch))}")
    with torch.no_grad() if reference else contextlib.nullcontext():
        return sequence_logps(model, *(batch[k] for k in keys), chunk_size=chunk_size, impl=impl,
                              position_ids=batch.get(f"{view}position_ids"),
                              sequence_index=batch.get(f"{view}sequence_index"))


class CachedReferenceCollator:
    """Wraps a collator: adds the table's columns under ``columns`` as ``(B,)`` tensors (default
    ``ref_chosen_logps`` / ``ref_rejected_logps``; unpaired: ``ref_logps`` / ``ref_kl_logps``, or ``ref_logps``
    alone from a one-column table of rows without a KL partner)."""

    def __init__(self, collate: Callable[[list[Any]], dict[str, Tensor]], table: Tensor,
                 columns: tuple[str, str] = ("ref_chosen_logps", "ref_rejected_logps")) -> None:
        self.collate = collate
        self.table = table
        self.columns = columns

    def __call__(self, items: list[Any]) -> dict[str, Tensor]:
        batch = self.collate(items)
        rows = batch["index"]
        for k, name in enumerate(self.columns[: self.table.shape[1]]):
            batch[name] = self.table[rows, k]
        return batch
