"""Collate encoded examples into right-padded batches with response masks.

``response_mask[i, t] == 1`` exactly where ``input_ids[i, t]`` is a response token; the log-prob code
scores token ``t`` from the logits at position ``t - 1``. Reference tensors (``ref_*``) are present
only when some example in the batch has a reference prompt that differs from its policy prompt (rows
whose prompt is unchanged repeat their policy prompt there), so plain DPO batches carry no extra
tensors. ``chosen_scores`` (PoFT's aligned-model scores) is present when every pair carries K of them.
Batches are plain dicts (TypedDicts), which ``transformers.Trainer`` moves to the device.
"""

from __future__ import annotations

from typing import Sequence, TypedDict

import torch
from torch import Tensor

from safealign.data.tokenize import EncodedPair, EncodedUnpaired, Ids


class _RefTensors(TypedDict, total=False):
    ref_input_ids: Tensor  # (N, T')
    ref_attention_mask: Tensor  # (N, T')
    ref_response_mask: Tensor  # (N, T')


class _ScoreTensors(TypedDict, total=False):
    chosen_scores: Tensor  # (B, K) float32: the chosen response's scores under K aligned models


class PreferenceBatch(_RefTensors, _ScoreTensors):
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


def harmful_tensor(flags: Sequence[bool | None]) -> Tensor:
    """(B,) long: 1 harmful, 0 not harmful, -1 unknown."""
    return torch.tensor([-1 if f is None else int(f) for f in flags], dtype=torch.long)


def _views(prompts: Sequence[Ids], responses: Sequence[Ids], pad_token_id: int, prefix: str = "") -> dict[str, Tensor]:
    ids, attention, response = pad_sequences(prompts, responses, pad_token_id)
    return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": attention, f"{prefix}response_mask": response}


class PreferenceCollator:
    """``list[EncodedPair]`` → :class:`PreferenceBatch`."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, pairs: Sequence[EncodedPair]) -> PreferenceBatch:
        if not pairs:
            raise ValueError("cannot collate an empty batch")
        responses = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
        prompts = [p.prompt_ids for p in pairs] * 2
        batch = _views(prompts, responses, self.pad_token_id)
        if any(p.ref_prompt_ids is not None for p in pairs):
            ref_prompts = [p.ref_prompt_ids if p.ref_prompt_ids is not None else p.prompt_ids for p in pairs] * 2
            batch.update(_views(ref_prompts, responses, self.pad_token_id, prefix="ref_"))
        batch["index"] = torch.tensor([p.index for p in pairs], dtype=torch.long)
        batch["harmful"] = harmful_tensor([p.harmful for p in pairs])
        scores = [p.chosen_scores for p in pairs]
        # Only whole batches of K scores each; a loss that needs them had every row checked up front
        # (safealign/train/data.py), and nothing else reads them.
        if scores[0] is not None and all(s is not None and len(s) == len(scores[0]) for s in scores):
            batch["chosen_scores"] = torch.tensor(scores, dtype=torch.float32)
        return batch  # type: ignore[return-value]


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
