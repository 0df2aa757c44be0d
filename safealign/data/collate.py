"""Collate encoded examples into right-padded batches with response masks.

``response_mask[i, t] == 1`` exactly where ``input_ids[i, t]`` is a response token; the log-prob code
scores token ``t`` from the logits at position ``t - 1``. Reference tensors (``ref_*``) are present
only when some example in the batch has a reference prompt that differs from its policy prompt (rows
whose prompt is unchanged repeat their policy prompt there), so plain DPO batches carry no extra
tensors. ``chosen_scores`` (PoFT's aligned-model scores) is present when every pair carries K of them, and
``chosen_safe``/``rejected_safe`` (SafeDPO) when every pair carries both labels. ``target_ids`` is present when
some row is scored on other tokens than its inputs (DeRTa's transition rows): the log-prob code then scores
``target_ids[i, t]`` from position ``t - 1`` instead of ``input_ids[i, t]``.
Batches are plain dicts (TypedDicts), which ``transformers.Trainer`` moves to the device.

Packed (padding-free) pair batches (``PreferenceCollator(pack=True)``) put a pair's prompt+chosen and
prompt+rejected sequences one after the other in one row, so no padding sits between them; rows are
right-padded only to the longest pair. ``position_ids`` restart at 0 for every sequence (and for the
padding tail, which forms a segment of its own that no real token attends to), and ``sequence_index``
numbers the sequences as the padded layout numbers rows (chosen ``0..B-1``, rejected ``B..2B-1``; -1 on
padding), so the log-prob code sums per sequence and returns exactly what the padded batch gives
(safealign/train/logps.py). ``attention_mask`` still marks real tokens (token counts, probes).
"""

from __future__ import annotations

from typing import Sequence, TypedDict

import torch
from torch import Tensor

from safealign.data.tokenize import EncodedPair, EncodedUnpaired, Ids
from safealign.errors import UserError


class _RefTensors(TypedDict, total=False):
    ref_input_ids: Tensor  # (N, T')
    ref_attention_mask: Tensor  # (N, T')
    ref_response_mask: Tensor  # (N, T')


class _ScoreTensors(TypedDict, total=False):
    chosen_scores: Tensor  # (B, K) float32: the chosen response's scores under K aligned models


class _PackedTensors(TypedDict, total=False):
    position_ids: Tensor  # (B, T) long: restarting at 0 for each packed sequence
    sequence_index: Tensor  # (B, T) long: the sequence each token belongs to, -1 on padding
    ref_position_ids: Tensor  # (B, T')
    ref_sequence_index: Tensor  # (B, T')


class _SafetyTensors(TypedDict, total=False):
    chosen_safe: Tensor  # (B,) float32: 1 safe, 0 unsafe (SafeDPO), when every pair has both labels
    rejected_safe: Tensor  # (B,)
    target_ids: Tensor  # (2B, T) long: the token each position is scored on, when some row overrides it (DeRTa)


class PreferenceBatch(_RefTensors, _ScoreTensors, _PackedTensors, _SafetyTensors):
    """Pairs as ``2B`` sequences: rows ``0..B-1`` prompt+chosen, rows ``B..2B-1`` prompt+rejected."""

    input_ids: Tensor  # (2B, T) long, right-padded
    attention_mask: Tensor  # (2B, T) long
    response_mask: Tensor  # (2B, T) long
    index: Tensor  # (B,) long, position in the data set
    harmful: Tensor  # (B,) long: 1 harmful, 0 not, -1 unknown


class UnpairedBatch(_RefTensors):
    """Unpaired examples as ``B`` sequences of prompt+completion."""

    input_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    response_mask: Tensor  # (B, T)
    label: Tensor  # (B,) bool, True = desirable
    index: Tensor  # (B,) long
    harmful: Tensor  # (B,) long: 1 / 0 / -1


def pad_sequences(prompts: Sequence[Ids], responses: Sequence[Ids], pad_token_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-pad ``prompt + response`` rows: (input_ids, attention_mask, response_mask), each (N, T)."""
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    n = len(prompts)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.long)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        end = len(prompt) + len(response)
        input_ids[i, :end] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask[i, :end] = 1
        response_mask[i, len(prompt) : end] = 1
    return input_ids, attention_mask, response_mask


def pack_sequences(prompts: Sequence[Ids], responses: Sequence[Ids], rows: Sequence[int],
                   pad_token_id: int) -> dict[str, Tensor]:
    """``prompt + response`` sequence ``i`` goes into row ``rows[i]`` after that row's earlier sequences.

    Returns ``input_ids``, ``attention_mask`` (1 on real tokens), ``response_mask``, ``position_ids``
    (restarting at 0 per sequence and on the padding tail) and ``sequence_index`` (``i``; -1 on padding),
    each ``(R, T)`` with ``R = max(rows) + 1`` and ``T`` the longest row.
    """
    n_rows = max(rows) + 1
    used = [0] * n_rows
    for prompt, response, row in zip(prompts, responses, rows):
        used[row] += len(prompt) + len(response)
    width = max(used)
    input_ids = torch.full((n_rows, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n_rows, width), dtype=torch.long)
    response_mask = torch.zeros((n_rows, width), dtype=torch.long)
    position_ids = torch.zeros((n_rows, width), dtype=torch.long)
    sequence_index = torch.full((n_rows, width), -1, dtype=torch.long)
    end = [0] * n_rows
    for i, (prompt, response, row) in enumerate(zip(prompts, responses, rows)):
        start, length = end[row], len(prompt) + len(response)
        input_ids[row, start : start + length] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask[row, start : start + length] = 1
        response_mask[row, start + len(prompt) : start + length] = 1
        position_ids[row, start : start + length] = torch.arange(length)
        sequence_index[row, start : start + length] = i
        end[row] = start + length
    for row in range(n_rows):  # the padding tail counts from 0 too: a segment of its own
        position_ids[row, end[row] :] = torch.arange(width - end[row])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask,
            "position_ids": position_ids, "sequence_index": sequence_index}


def harmful_tensor(flags: Sequence[bool | None]) -> Tensor:
    """(B,) long: 1 harmful, 0 not harmful, -1 unknown."""
    return torch.tensor([-1 if f is None else int(f) for f in flags], dtype=torch.long)


def _views(prompts: Sequence[Ids], responses: Sequence[Ids], pad_token_id: int, prefix: str = "",
           pack: bool = False) -> dict[str, Tensor]:
    if pack:  # sequence i and i + B (a pair's chosen and rejected) share row i
        b = len(prompts) // 2
        packed = pack_sequences(prompts, responses, [i % b for i in range(len(prompts))], pad_token_id)
        return {prefix + key: value for key, value in packed.items()}
    ids, attention, response = pad_sequences(prompts, responses, pad_token_id)
    return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": attention, f"{prefix}response_mask": response}


class PreferenceCollator:
    """``list[EncodedPair]`` → :class:`PreferenceBatch`; ``pack=True``: a pair per row, padding-free."""

    def __init__(self, pad_token_id: int, pack: bool = False) -> None:
        self.pad_token_id = pad_token_id
        self.pack = pack

    def __call__(self, pairs: Sequence[EncodedPair]) -> PreferenceBatch:
        if not pairs:
            raise ValueError("cannot collate an empty batch")
        responses = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
        prompts = [p.prompt_ids for p in pairs] * 2
        batch = _views(prompts, responses, self.pad_token_id, pack=self.pack)
        if any(p.ref_prompt_ids is not None for p in pairs):
            ref_prompts = [p.ref_prompt_ids if p.ref_prompt_ids is not None else p.prompt_ids for p in pairs] * 2
            batch.update(_views(ref_prompts, responses, self.pad_token_id, prefix="ref_", pack=self.pack))
        batch["index"] = torch.tensor([p.index for p in pairs], dtype=torch.long)
        batch["harmful"] = harmful_tensor([p.harmful for p in pairs])
        scores = [p.chosen_scores for p in pairs]
        # Only whole batches of K scores each; a loss that needs them had every row checked up front
        # (safealign/train/data.py), and nothing else reads them.
        if scores[0] is not None and all(s is not None and len(s) == len(scores[0]) for s in scores):
            batch["chosen_scores"] = torch.tensor(scores, dtype=torch.float32)
        # like the scores: whole batches only, every row checked up front for a loss that needs them
        if all(p.chosen_safe is not None and p.rejected_safe is not None for p in pairs):
            batch["chosen_safe"] = torch.tensor([float(p.chosen_safe) for p in pairs])
            batch["rejected_safe"] = torch.tensor([float(p.rejected_safe) for p in pairs])
        if any(p.chosen_target_ids is not None for p in pairs):
            if self.pack:  # the targets are laid out on the padded rows
                raise UserError("DeRTa's transition rows (data transform derta) cannot be packed: set packing off")
            batch["target_ids"] = _target_ids(batch["input_ids"], pairs)
        return batch  # type: ignore[return-value]


def _target_ids(input_ids: Tensor, pairs: Sequence[EncodedPair]) -> Tensor:
    """The input ids with each overriding row's chosen response positions set to its target ids."""
    targets = input_ids.clone()
    for i, p in enumerate(pairs):
        if p.chosen_target_ids is not None:
            start = len(p.prompt_ids)
            targets[i, start : start + len(p.chosen_target_ids)] = torch.tensor(p.chosen_target_ids)
    return targets


class UnpairedCollator:
    """``list[EncodedUnpaired]`` → :class:`UnpairedBatch`."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[EncodedUnpaired]) -> UnpairedBatch:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        responses = [e.completion_ids for e in examples]
        batch = _views([e.prompt_ids for e in examples], responses, self.pad_token_id)
        if any(e.ref_prompt_ids is not None for e in examples):
            ref_prompts = [e.ref_prompt_ids if e.ref_prompt_ids is not None else e.prompt_ids for e in examples]
            batch.update(_views(ref_prompts, responses, self.pad_token_id, prefix="ref_"))
        batch["label"] = torch.tensor([e.label for e in examples], dtype=torch.bool)
        batch["index"] = torch.tensor([e.index for e in examples], dtype=torch.long)
        batch["harmful"] = harmful_tensor([e.harmful for e in examples])
        return batch  # type: ignore[return-value]
