"""ObjectiveTrainer: ``transformers.Trainer`` whose loss is a registered objective (docs/objectives.md).

The engine (optimiser, schedule, accumulation, checkpoints, resume, accelerate) is the Trainer's; this
class builds the :class:`ObjectiveContext` for each batch, calls the objective and logs its metrics the
way :class:`~safealign.train.trainer.PreferenceTrainer` logs a loss's (``metrics.jsonl``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from transformers import Trainer

from safealign.models.modes import eval_mode
from safealign.train.metrics import MetricWindow
from safealign.train.objectives.base import Objective, ObjectiveContext
from safealign.train.reference import adapter_disabled
from safealign.train.trainer import AdapterSaveCallback, RunLog


class FrozenReference:
    """The frozen starting model an objective compares against, run under no grad.

    ``model``: a separate frozen model, as :func:`~safealign.train.reference.separate_reference` chose it
    (``reference.model``, or a frozen copy of a policy that starts from a trained adapter or is fully
    fine-tuned); None: the policy itself with its fresh LoRA adapter disabled, so no second copy of the weights
    exists. ``what`` names the reference in the run's log and summary.
    """

    def __init__(self, policy: nn.Module, model: nn.Module | None = None, what: str | None = None) -> None:
        if model is None and not hasattr(policy, "peft_config"):
            raise ValueError("a policy without a LoRA adapter needs a separate reference (separate_reference)")
        self.model = model.requires_grad_(False).eval() if model is not None else None
        self.what = what or ("the policy with its LoRA adapter disabled" if self.model is None else "a frozen copy")

    def describe(self) -> str:
        return self.what

    @staticmethod
    def for_objective(objective: Objective, policy: nn.Module, model: nn.Module | None = None,
                      what: str | None = None):
        """The reference ``objective`` needs, or :class:`NoReference` when it declares none."""
        return FrozenReference(policy, model, what) if objective.needs_reference else NoReference()

    @contextlib.contextmanager
    def __call__(self, policy: nn.Module):
        with torch.no_grad():
            if self.model is not None:
                yield self.model
            else:
                # eval mode: dropout of the training policy must not make the frozen reference random
                with adapter_disabled(policy), eval_mode(policy):
                    yield policy


class NoReference:
    """For objectives that declare ``needs_reference = False``: asking for a reference is a bug in the objective."""

    def describe(self) -> str:
        return "none (the objective uses no frozen reference)"

    def __call__(self, policy: nn.Module):
        raise RuntimeError("this objective declared needs_reference = False but asked for the reference")


class ObjectiveTrainer(RunLog, Trainer):
    """``Trainer`` for a hidden-state objective; ``rows`` are the encoded rows of each role."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args: Any, objective: Objective, reference: FrozenReference | NoReference,
                 rows: Mapping[str, Sequence[Any]], chunk_size: int = 1024, metrics_path=None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.reference = reference
        self.rows = rows
        self.chunk_size = chunk_size
        self.metrics_path = metrics_path
        self._window = MetricWindow()
        self.add_callback(AdapterSaveCallback())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ctx = ObjectiveContext(reference=self.reference, step=self.state.global_step,
                               total_steps=self.state.max_steps, rows=self.rows,
                               pad_token_id=self.processing_class.pad_token_id, seed=self.args.seed,
                               chunk_size=self.chunk_size)
        out = self.objective(model, inputs, ctx)
        self._stop_if_not_finite(out.loss)
        stats = {name: _mean(value) for name, value in out.metrics.items()}
        stats["loss/objective"] = _mean(out.loss)
        self._window.add(stats, self.accelerator.gather)
        return (out.loss, out) if return_outputs else out.loss


def _mean(value) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.as_tensor(value).detach().float().reshape(-1)
    return values.sum(), torch.tensor(float(values.numel()), device=values.device)
