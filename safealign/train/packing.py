"""The check that ``packing: pairs`` scores what the padded batch scores, on the model actually trained.

Packed rows reach the model without a 2D attention mask (safealign/train/logps.py): transformers builds the
block-diagonal mask from the restarting position ids for most decoders, but not for all of them (OPT, MPT and
Bloom attend across the whole row, so a pair's rejected sequence sees its chosen one). Which architectures do
is transformers' business and changes between versions, so instead of an allow-list the run checks, before
training, on its own first pairs:

- padded vs packed: the summed log-probs of every sequence agree (a model that ignores the restarting position
  ids, or mixes sequences, differs);
- no leak: changing only the chosen tokens leaves the rejected log-probs of the packed batch unchanged. With a
  block-diagonal mask the masked scores are exact zeros, so this holds to rounding in any dtype, which makes it
  the sharp test in bf16, where padded and packed kernels round differently.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from safealign.data.collate import PreferenceCollator
from safealign.data.tokenize import EncodedPair
from safealign.errors import UserError
from safealign.models.modes import eval_mode
from safealign.train.logps import pair_logps

logger = logging.getLogger(__name__)

CHECK_PAIRS = 4  # the first pairs of the data set; enough to cover both packed segments in a few rows
# Allowed |difference| per response token of a summed log-prob: (padded vs packed, leak). float32 kernels for the
# two layouts agree to ~1e-6 per token; half precision rounds each token's log-prob to ~1e-2, so its padded
# comparison only catches gross errors and the leak test (exact up to rounding noise) carries the check.
TOLERANCE = {"full": (2e-5, 2e-6), "half": (5e-2, 1e-3)}


def check_packing(
    model: nn.Module,
    pairs: Sequence[Any],
    pad_token_id: int,
    *,
    chunk_size: int = 1024,
    impl: str = "fused",
    setting: str = "packing=pairs",
) -> None:
    """Raise a UserError when packed pair batches do not give ``model`` the padded batch's log-probs."""
    sample = [p for p in pairs if isinstance(p, EncodedPair) and p.chosen_target_ids is None][:CHECK_PAIRS]
    if not sample:
        return  # nothing that packs (DeRTa transition rows are refused before: run.check_training_options)
    sample = [dataclasses.replace(p, ref_prompt_ids=None) for p in sample]  # the policy view is what trains
    changed = [dataclasses.replace(p, chosen_ids=_changed(p)) for p in sample]
    padded, packed = PreferenceCollator(pad_token_id), PreferenceCollator(pad_token_id, pack=True)
    device = _device(model)

    def score(collate: PreferenceCollator, rows: list[EncodedPair]) -> tuple[Tensor, ...]:
        return pair_logps(model, _to(collate(rows), device), chunk_size=chunk_size, impl=impl)

    with torch.no_grad(), eval_mode(model):  # dropout would make every comparison differ
        want, got, leaked = score(padded, sample), score(packed, sample), score(packed, changed)
    chosen_tokens, rejected_tokens = want[2].clamp(min=1), want[3].clamp(min=1)  # response tokens per sequence
    per_token = TOLERANCE["full" if _dtype(model) in (torch.float32, torch.float64) else "half"]
    both = [("chosen", i) for i in range(len(sample))] + [("rejected", i) for i in range(len(sample))]
    checks = (  # (what, a, b, allowed, (side, pair) of each compared value)
        (
            "padded and packed batches score the same tokens differently",
            _cat(want),
            _cat(got),
            torch.cat([chosen_tokens, rejected_tokens]) * per_token[0],
            both,
        ),
        (
            "a packed rejected sequence's log-prob changes when only its chosen neighbour changes",
            got[1],
            leaked[1],
            rejected_tokens * per_token[1],
            both[len(sample):],
        ),
    )
    for what, a, b, allowed, sequences in checks:
        diff = (a.float() - b.float()).abs().cpu()
        allowed = allowed.float().cpu()
        if bool((diff > allowed).any()):
            worst = int((diff - allowed).argmax())
            side, pair = sequences[worst]
            raise UserError(
                f"{setting}: {_describe(model)} does not keep packed sequences apart: {what} (by "
                f"{float(diff[worst]):.3g} nats on the {side} sequence of {_origin(sample, pair)}, allowed "
                f"{float(allowed[worst]):.3g}). Its attention does not build a block-diagonal mask from restarting "
                "position ids, so packing would change the trained model: set packing: off (docs/performance.md)"
            )
    logger.info(
        "%s: packed and padded log-probs agree on the first %d pairs (%s)", setting, len(sample), _describe(model)
    )


def _origin(sample: Sequence[EncodedPair], pair: int) -> str:
    """Which checked pair, by its data row when known (``EncodedPair.index`` is only a position)."""
    position = f"pair {pair + 1} of the first {len(sample)}"
    row = sample[pair].row
    return f"{sample[pair].source or '<rows>'} row {row} ({position})" if row >= 0 else position


def _changed(pair: EncodedPair) -> tuple[int, ...]:
    """Other chosen tokens of the same length: reversed, or the prompt's tokens when reversing changes nothing."""
    reverse = tuple(reversed(pair.chosen_ids))
    if reverse != pair.chosen_ids:
        return reverse
    pool = pair.prompt_ids + pair.rejected_ids
    return tuple(pool[i % len(pool)] for i in range(len(pair.chosen_ids)))


def _cat(logps: tuple[Tensor, ...]) -> Tensor:
    return torch.cat([logps[0], logps[1]])


def _to(batch: dict[str, Tensor], device: torch.device | None) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def _device(model: nn.Module) -> torch.device | None:
    param = next(model.parameters(), None)
    return None if param is None else param.device


def _dtype(model: nn.Module) -> torch.dtype | None:
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    param = next(model.parameters(), None)
    return None if param is None else param.dtype


def _describe(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or type(model).__name__
    attention = getattr(config, "_attn_implementation", None)
    return f"model type {model_type!r}" + (f" with {attention} attention" if attention else "")
