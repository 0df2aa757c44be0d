"""A teacher's top-k next-token distributions on the chosen and rejected responses, cached on disk (DCKD, ADPA;
docs/seed-methods.md).

For every scored response position of every pair the table holds the DPO teacher's ``k`` most likely token ids
and their log-probs and, for ADPA, the reference teacher's log-probs of the same ids. Keyed like the reference
cache (safealign/train/reference.py): a fingerprint of the teacher weights and config (and the reference
teacher's), ``k`` and the exact token ids scored, so a loss-weight sweep reuses it and new data or another
teacher does not. An entry carries a checksum and is verified (shapes match the data's response lengths, ids
inside the vocabulary, log-probs finite and ≤ 0) before reuse; a damaged one is reported and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from tqdm.auto import tqdm

from safealign.data.collate import pad_sequences
from safealign.data.tokenize import EncodedPair
from safealign.errors import UserError
from safealign.train.logps import response_log_softmax
from safealign.train.reference import cached_entry, model_fingerprint, save_tensors_atomic

logger = logging.getLogger(__name__)
_TOLERANCE = 1e-4  # a top-k log-prob may round a hair above 0 in float32


@dataclass(frozen=True)
class TeacherTable:
    """Segments ``2i`` (pair i's chosen response) and ``2i+1`` (its rejected one), concatenated:
    ``offsets[j]:offsets[j+1]`` are segment j's positions in ``ids``/``logps``/``ref_logps`` ``(M, k)``."""

    ids: Tensor  # (M, k) int64, the DPO teacher's top-k token ids
    logps: Tensor  # (M, k) float32, their log-probs under the DPO teacher
    ref_logps: Tensor | None  # (M, k) float32 under the reference teacher (ADPA), or None
    offsets: Tensor  # (2N + 1,) int64

    def tensors(self) -> dict[str, Tensor]:
        out = {"ids": self.ids, "logps": self.logps, "offsets": self.offsets}
        return out if self.ref_logps is None else {**out, "ref_logps": self.ref_logps}

    def segments(self, rows: Sequence[int], side: int) -> list[slice]:
        return [slice(int(self.offsets[2 * r + side]), int(self.offsets[2 * r + side + 1])) for r in rows]


@dataclass(frozen=True)
class TeacherCache:
    table: TeacherTable
    path: Path
    reused: bool

    def describe(self) -> str:
        verb = "reused" if self.reused else "computed"
        return f"teacher top-{self.table.ids.shape[1]} distributions ({verb}, cache {self.path})"


@torch.no_grad()
def compute_teacher_table(teacher: nn.Module, items: Sequence[EncodedPair], top_k: int, *,
                          reference: nn.Module | None = None, batch_size: int = 4) -> TeacherTable:
    """The teacher's top-k at every response position of every pair (both responses after the policy prompt)."""
    segments: list[list[Tensor] | None] = [None] * (2 * len(items))
    device = next(teacher.parameters()).device
    models = [teacher] if reference is None else [teacher, reference]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        for start in tqdm(range(0, len(items), batch_size), desc="teacher top-k", unit="batch"):
            rows = items[start : start + batch_size]
            prompts = [it.prompt_ids for it in rows] * 2
            responses = [it.chosen_ids for it in rows] + [it.rejected_ids for it in rows]
            tensors = [t.to(device) for t in pad_sequences(prompts, responses, 0)]
            seq_rows, _, logps = response_log_softmax(teacher, *tensors)
            top = logps.topk(top_k, dim=-1)
            ref = response_log_softmax(reference, *tensors)[2].gather(-1, top.indices) if reference else None
            for seq in range(len(responses)):
                sel = seq_rows == seq
                i, side = (seq, 0) if seq < len(rows) else (seq - len(rows), 1)
                parts = [top.indices[sel].cpu(), top.values[sel].cpu()] + ([ref[sel].cpu()] if ref is not None else [])
                segments[2 * (start + i) + side] = parts
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    lengths = torch.tensor([0] + [s[0].shape[0] for s in segments])  # type: ignore[index]
    cat = [torch.cat([s[c] for s in segments]) for c in range(len(segments[0]))]  # type: ignore[index,arg-type]
    return TeacherTable(cat[0].long(), cat[1].float(), cat[2].float() if reference else None, lengths.cumsum(0))


def load_or_compute_teacher(teacher: nn.Module, items: Sequence[EncodedPair], cache_dir: str | Path, top_k: int, *,
                            reference: nn.Module | None = None, batch_size: int = 4,
                            describe: dict[str, Any] | None = None) -> TeacherCache:
    """The cached table for these teacher weights, ``top_k`` and token ids, computed once."""
    vocab = _vocab(teacher)
    if not 1 <= top_k <= vocab:
        raise UserError(f"teacher top_k must be in 1..{vocab} (the teacher's vocabulary), got {top_k}")
    if reference is not None and _vocab(reference) != vocab:
        raise UserError(f"the reference teacher's vocabulary ({_vocab(reference)}) is not the teacher's ({vocab})")
    # a teacher is the model as it runs, adapter on (an E-DPO adapter over the base): its LoRA weights and any
    # module the adapter trains as a copy (peft modules_to_save, e.g. an output head) are part of the key, so two
    # teachers that share a base or differ only in a trained head copy never share an entry
    parts = [model_fingerprint(teacher, with_adapter=True),
             model_fingerprint(reference, with_adapter=True) if reference else "-", str(top_k), _ids_hash(items)]
    key = hashlib.blake2b(":".join(parts).encode(), digest_size=16).hexdigest()
    path = Path(cache_dir) / f"teacher-{key}.safetensors"
    expected = [len(ids) for it in items for ids in (it.chosen_ids, it.rejected_ids)]

    def reuse() -> TeacherCache | None:
        table = _read_verified(path, expected, top_k, vocab, reference is not None)
        if table is None:
            return None
        logger.info("teacher distributions: reusing cache %s", path)
        return TeacherCache(table, path, reused=True)

    def compute() -> TeacherCache:
        table = compute_teacher_table(teacher, items, top_k, reference=reference, batch_size=batch_size)
        problem = _table_problem(table, expected, top_k, vocab, reference is not None)
        if problem is not None:
            raise UserError(f"teacher distributions are {problem}; check the teacher model and the data")
        metadata = {"key": key, "checksum": checksum(table), "describe": json.dumps(describe or {})}
        save_tensors_atomic(table.tensors(), path, metadata)
        logger.info("teacher distributions: computed and cached at %s", path)
        return TeacherCache(table, path, reused=False)

    return cached_entry(path, "teacher distributions", reuse, compute)


def checksum(table: TeacherTable) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(table.tensors().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _vocab(model: nn.Module) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def _ids_hash(items: Sequence[EncodedPair]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for item in items:
        for ids in (item.prompt_ids, item.chosen_ids, item.rejected_ids):
            digest.update(len(ids).to_bytes(4, "little"))
            digest.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


def _read_verified(path: Path, expected: list[int], top_k: int, vocab: int, with_ref: bool) -> TeacherTable | None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = (handle.metadata() or {}).get("checksum")
            found = {name: handle.get_tensor(name) for name in handle.keys()}
        table = TeacherTable(found["ids"], found["logps"], found.get("ref_logps"), found["offsets"])
    except (SafetensorError, OSError, KeyError) as exc:
        problem = f"unreadable ({exc})"
    else:
        problem = "corrupt (its values do not match the stored checksum)" if stored != checksum(table) else \
            _table_problem(table, expected, top_k, vocab, with_ref)
        if problem is None:
            return table
    logger.warning("teacher cache %s is %s; recomputing it", path, problem)
    return None


def _table_problem(table: TeacherTable, expected: list[int], top_k: int, vocab: int, with_ref: bool) -> str | None:
    lengths = (table.offsets[1:] - table.offsets[:-1]).tolist()
    if lengths != expected:
        return "not for this data (its response lengths differ)"
    if table.ids.shape != (sum(expected), top_k) or table.logps.shape != table.ids.shape:
        return f"of shape {tuple(table.ids.shape)}, expected ({sum(expected)}, {top_k})"
    if (table.ref_logps is not None) != with_ref:
        return "missing the reference teacher's log-probs" if with_ref else "for another (reference) teacher set"
    if bool(((table.ids < 0) | (table.ids >= vocab)).any()):
        return f"holding token ids outside the vocabulary of {vocab}"
    for name, values in (("teacher", table.logps), ("reference teacher", table.ref_logps)):
        if values is not None and bool((~torch.isfinite(values) | (values > _TOLERANCE)).any()):
            return f"implausible (non-finite or positive {name} log-probs)"
    return None


class TeacherCollator:
    """Wraps a pair collator: adds ``teacher_ids``/``teacher_logps`` (and ``teacher_ref_logps``) ``(P, k)`` in
    the order the policy's response positions are scored (chosen rows, then rejected rows, each in token
    order: :func:`safealign.train.logps.response_log_softmax`)."""

    def __init__(self, collate: Callable[[list[Any]], dict[str, Tensor]], table: TeacherTable) -> None:
        self.collate = collate
        self.table = table

    def __call__(self, items: list[Any]) -> dict[str, Tensor]:
        batch = self.collate(items)
        rows = batch["index"].tolist()
        slices = self.table.segments(rows, 0) + self.table.segments(rows, 1)
        batch["teacher_ids"] = torch.cat([self.table.ids[s] for s in slices])
        batch["teacher_logps"] = torch.cat([self.table.logps[s] for s in slices])
        if self.table.ref_logps is not None:
            batch["teacher_ref_logps"] = torch.cat([self.table.ref_logps[s] for s in slices])
        return batch
