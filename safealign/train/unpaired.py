"""Unpaired training data (KTO, BCO): unpairing preference pairs, KL partners, the collator.

KTO's reference point z estimates KL(π ‖ πref) from mismatched sequences: prompt i followed by the
completion of another example. TRL builds them by rotating completions within fixed-order batches
(and therefore requires sequential sampling). Here each row gets a fixed partner at the data-set level
instead — the next row (cyclically) whose prompt differs — so the mismatched sequence of a row never
depends on how the sampler shuffles, and its reference log-prob can be cached next to the row's own.
The mismatched ids are built from the encoded ids (prompt i + completion of the partner), never by
re-tokenizing text.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from safealign.data import UnpairedCollator
from safealign.data.collate import pad_sequences
from safealign.data.tokenize import EncodedUnpaired, Ids, reference_overrun_of
from safealign.errors import UserError
from safealign.types import PreferencePair, UnpairedExample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnpairedItem:
    """One training row of an unpaired loss: the encoded example and its KL partner's completion."""

    example: EncodedUnpaired
    # completion of another row, scored after this row's prompt (both views); None when no loss component reads
    # a KL reference point (BCO): then no mismatched sequence is built, scored or cached
    kl_completion_ids: Ids | None

    @property
    def index(self) -> int:
        return self.example.index


def unpair_pairs(pairs: Sequence[PreferencePair]) -> list[UnpairedExample]:
    """TRL's ``unpair_preference_dataset``: every chosen response as a desirable example, then every
    rejected one as undesirable (this order keeps neighbouring rows on different prompts)."""
    def one(pair: PreferencePair, prompt, completion: str, label: bool) -> UnpairedExample:
        return UnpairedExample(prompt=prompt, completion=completion, label=label, harmful=pair.harmful,
                               source=pair.source, row=pair.row, meta=pair.meta)

    odd = next((p for p in pairs if p.response_prefix or p.chosen_target_refusal is not None), None)
    if odd is not None:  # an unpaired example has no assistant prefix or target override
        raise UserError(f"{odd.source} row {odd.row}: data.unpair cannot split a row with an assistant prefix or "
                        "transition targets (data transforms recovery/derta); use a pair loss")
    # a cross-prompt ("joint") pair's rejected response answers its own prompt
    return ([one(p, p.prompt, p.chosen, True) for p in pairs]
            + [one(p, p.rejected_prompt or p.prompt, p.rejected, False) for p in pairs])


def with_kl_partners(encoded: Sequence[EncodedUnpaired], max_length: int, *,
                     partners: bool = True) -> list[UnpairedItem]:  # fmt: skip
    """Attach to row i the completion of the next row (cyclically) with a different prompt.

    The partner's completion is cut so that row i's policy prompt plus it fits ``max_length`` (the encoder's rule
    for a row's own completion: the same cut with or without a reference view, whose longer prompt may then run
    over ``max_length`` by its extra tokens; :func:`reference_overrun` counts those). ``partners=False`` (no loss
    component reads the KL point): items without a partner.
    """
    if not partners:
        return [UnpairedItem(row, None) for row in encoded]
    n = len(encoded)
    items, same_prompt = [], 0
    for i, row in enumerate(encoded):
        partner = next((encoded[(i + k) % n] for k in range(1, n) if encoded[(i + k) % n].prompt_ids != row.prompt_ids),
                       None)
        if partner is None:
            same_prompt += 1
            partner = encoded[(i + 1) % n]
        items.append(UnpairedItem(row, partner.completion_ids[: max(1, max_length - len(row.prompt_ids))]))
    if same_prompt:
        logger.warning("KL reference point: %d of %d rows have no row with a different prompt; their mismatched "
                       "sequence reuses a completion of the same prompt", same_prompt, n)
    return items


def reference_overrun(items: Sequence[UnpairedItem], max_length: int) -> tuple[int, int]:
    """(rows whose reference view runs over ``max_length``, by how many tokens at most), the KL partner's view
    included: the partner completion is cut to fit the POLICY prompt (:func:`with_kl_partners`), so after a longer
    reference prompt it runs over where the row's own completion may not (the encoder counts only that one)."""
    rows = most = 0
    for item in items:
        ex = item.example
        if ex.ref_prompt_ids is None:  # the reference sees the policy prompt: both views fit max_length
            continue
        completions = (ex.completion_ids,) if item.kl_completion_ids is None else (ex.completion_ids,
                                                                                   item.kl_completion_ids)
        over = reference_overrun_of(ex.ref_prompt_ids, completions, max_length)
        if over > 0:
            rows, most = rows + 1, max(most, over)
    return rows, most


def strip_reference_view(item: UnpairedItem) -> UnpairedItem:
    """The item without its reference prompt view (once reference log-probs are cached)."""
    return dataclasses.replace(item, example=dataclasses.replace(item.example, ref_prompt_ids=None))


class UnpairedKLCollator:
    """``list[UnpairedItem]`` → :class:`~safealign.data.UnpairedBatch` plus the mismatched KL sequences.

    Adds ``kl_input_ids`` / ``kl_attention_mask`` / ``kl_response_mask`` ``(B, T'')`` (policy prompt +
    partner completion) and, when the batch carries a reference view, the same under ``ref_kl_``; neither
    when the items carry no partner (:func:`with_kl_partners` with ``partners=False``).
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id
        self.collate = UnpairedCollator(pad_token_id)

    def __call__(self, items: Sequence[UnpairedItem]) -> dict[str, Tensor]:
        batch = dict(self.collate([item.example for item in items]))
        completions = [item.kl_completion_ids for item in items]
        if all(c is None for c in completions):
            return batch
        if any(c is None for c in completions):
            raise ValueError("a batch mixes rows with and without a KL partner; build all items one way")
        batch.update(self._views([item.example.prompt_ids for item in items], completions, "kl_"))
        if "ref_input_ids" in batch:
            ref_prompts = [item.example.ref_prompt_ids or item.example.prompt_ids for item in items]
            batch.update(self._views(ref_prompts, completions, "ref_kl_"))
        return batch

    def _views(self, prompts: list[Ids], completions: list[Ids], prefix: str) -> dict[str, Tensor]:
        ids, attention, response = pad_sequences(prompts, completions, self.pad_token_id)
        return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": attention, f"{prefix}response_mask": response}
