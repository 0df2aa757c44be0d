"""PreferenceTrainer: transformers.Trainer with a pluggable preference loss.

The engine (accelerate) brings DDP/FSDP/DeepSpeed, gradient accumulation, mixed precision,
checkpoints and resume; this class only turns a collated batch into per-pair log-probs, asks the
loss for per-example values, and logs alignment metrics.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import Trainer

from safealign.types import PairLogps
from safealign.train.logps import pair_logps

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when the loss is NaN or infinite; the last saved checkpoint is kept."""


class PreferenceTrainer(Trainer):
    """``Trainer`` for offline pairwise preference losses (DPO family and their E-variants).

    ``loss`` is a composed loss from ``safealign.losses.build_loss``. ``reference`` is a
    ``LiveReference`` or None; when the batch carries ``ref_chosen_logps`` (precomputed cache),
    those are used and no reference forward runs.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args: Any, loss: Any, reference: Any = None, logps_chunk_size: int = 1024,
                 metrics_path: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preference_loss = loss
        self.reference = reference
        self.logps_chunk_size = logps_chunk_size
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logps = self._pair_logps(model, inputs)
        out = self.preference_loss(logps)
        loss = out.losses.mean()
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {self.state.global_step}; stopping. The last checkpoint in "
                f"{self.args.output_dir} is kept. Lower the learning rate or check the data."
            )
        self._record(logps, out.metrics)
        return (loss, out) if return_outputs else loss

    def _pair_logps(self, model, inputs: dict[str, Tensor]) -> PairLogps:
        chosen, rejected, chosen_tokens, rejected_tokens = pair_logps(model, inputs, chunk_size=self.logps_chunk_size)
        ref_chosen = ref_rejected = None
        if "ref_chosen_logps" in inputs:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        elif self.reference is not None:
            ref_chosen, ref_rejected = self.reference(model, inputs)
        elif self.preference_loss.needs_reference:
            raise ValueError("this loss needs reference log-probs, but neither a cache nor a live reference is set")
        return PairLogps(
            chosen=chosen, rejected=rejected, chosen_tokens=chosen_tokens, rejected_tokens=rejected_tokens,
            ref_chosen=ref_chosen, ref_rejected=ref_rejected,
        )

    def _record(self, x: PairLogps, metrics: dict[str, Tensor]) -> None:
        values = {
            "logps/chosen": x.chosen.detach().mean(),
            "logps/rejected": x.rejected.detach().mean(),
            "ranking_accuracy": (x.chosen.detach() > x.rejected.detach()).float().mean(),
            "ranking_accuracy/normalized": (
                x.chosen.detach() / x.chosen_tokens.clamp(min=1) > x.rejected.detach() / x.rejected_tokens.clamp(min=1)
            ).float().mean(),
        }
        values.update({k: v.detach().float().mean() for k, v in metrics.items()})
        stacked = torch.stack([v.float().reshape(()) for v in values.values()])
        gathered = self.accelerator.gather_for_metrics(stacked.unsqueeze(0)).reshape(-1, len(values)).mean(0)
        for name, value in zip(values, gathered.tolist()):
            self._sums[name] += value
            self._counts[name] += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._counts:  # a training log: attach the averaged alignment metrics
            for name in list(self._sums):
                logs[name] = self._sums[name] / self._counts[name]
            self._sums.clear()
            self._counts.clear()
        super().log(logs, start_time)
        if self.metrics_path is not None and self.is_world_process_zero():
            record = {"step": self.state.global_step, **{k: _plain(v) for k, v in logs.items()}}
            with self.metrics_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
