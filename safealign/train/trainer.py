"""PreferenceTrainer: transformers.Trainer with a pluggable preference loss.

The engine (accelerate) brings DDP/FSDP/DeepSpeed, gradient accumulation, mixed precision,
checkpoints and resume; this class only turns a collated batch into per-example log-probs, asks the
loss for per-example values, and logs alignment metrics.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from safealign.errors import UserError
from safealign.io import append_jsonl, finite_or_none
from safealign.losses.state import RunningMean
from safealign.train.logps import pair_logps
from safealign.train.metrics import MetricWindow, pair_stats, token_stats, unpaired_stats
from safealign.train.normalized import normalized_objective, pair_gradient_norms
from safealign.train.reference import view_logps
from safealign.train.token_inputs import chosen_token_logps, reference_token_logps
from safealign.types import PairLogps, TokenLogps, UnpairedLogps

logger = logging.getLogger(__name__)

LOSS_STATE_NAME = "loss_state.json"
# loss input kind -> (PreferenceTrainer method building the loss input, metric statistics)
_INPUTS = {"pair": ("_pair_logps", pair_stats), "unpaired": ("_unpaired_logps", unpaired_stats),
           "token": ("_token_logps", token_stats)}


class NonFiniteLossError(UserError):
    """Training diverged: the loss is NaN or infinite at ``step``; the last saved checkpoint is kept.

    A UserError because the fix is the user's (learning rate, beta, data), so the CLI prints the one-line
    message with the step instead of a traceback."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class RunLog:
    """What every safealign trainer does around its loss (mixed into a ``transformers.Trainer``): stop on a
    non-finite loss, and attach the window's averaged metrics to each training log, also appended to
    ``metrics.jsonl``. The subclass sets ``self._window`` (a MetricWindow) and ``self.metrics_path``."""

    def _stop_if_not_finite(self, loss: Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {self.state.global_step}; stopping. The last checkpoint in "
                f"{self.args.output_dir} is kept. Lower the learning rate or check the data.",
                self.state.global_step,
            )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._window:  # a training log: attach the averaged alignment metrics
            logs.update(self._window.flush())
        super().log(logs, start_time)
        if self.metrics_path is not None and self.is_world_process_zero():
            record = {"step": self.state.global_step, **{k: finite_or_none(v) for k, v in logs.items()}}
            append_jsonl(self.metrics_path, [record])


class PreferenceTrainer(RunLog, Trainer):
    """``Trainer`` for offline preference losses: pairwise (DPO family) and unpaired (KTO, BCO), and
    their E-variants.

    ``loss`` is a composed loss from ``safealign.losses.build_loss``; its ``input_kind`` ("pair" or
    "unpaired") selects how a batch becomes log-probs — the only dispatch here, never on the loss name.
    ``reference`` is a ``LiveReference`` or None; when the batch carries precomputed reference columns
    (``ref_chosen_logps``/``ref_rejected_logps``, or ``ref_logps``/``ref_kl_logps``), those are used
    and no reference forward runs. The loss's state (e.g. BCO's running mean) is saved with every
    checkpoint and restored on resume (:class:`LossStateCallback`).
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args: Any, loss: Any, reference: Any = None, logps_chunk_size: int = 1024,
                 metrics_path: str | Path | None = None, normalize_pair_gradients: bool = False,
                 logps_impl: str = "fused", group_lengths: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preference_loss = loss
        self.reference = reference
        self.logps_chunk_size = logps_chunk_size
        self.logps_impl = logps_impl
        # tokens per training item: batches are drawn length-grouped (see _get_train_sampler); None = shuffled
        self.group_lengths = group_lengths
        self.normalize_pair_gradients = normalize_pair_gradients
        if normalize_pair_gradients and loss.input_kind != "pair":
            raise UserError("normalize_pair_gradients needs a paired loss (chosen and rejected per row), "
                            f"not an {loss.input_kind} one")
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self._window = MetricWindow()
        if loss.input_kind not in _INPUTS:
            raise ValueError(f"loss input kind {loss.input_kind!r} is not supported; known: {', '.join(_INPUTS)}")
        if self.accelerator.num_processes > 1:
            # a running statistic (BCO's δ) folds in every process's values, so all processes keep one global δ
            # (the one LossStateCallback saves from the main process) instead of one per shard
            for state in loss.states.values():
                if isinstance(state, RunningMean):
                    state.reduce = self.accelerator.gather
        self.add_callback(LossStateCallback(loss))
        self.add_callback(AdapterSaveCallback())

    def _get_train_sampler(self, train_dataset=None):
        """With ``group_lengths``: transformers' ``LengthGroupedSampler`` (each epoch's random order cut into
        megabatches of up to 50 batches, each sorted longest first) over our own lengths, since it can only read
        lengths from dict items or a ``datasets`` column."""
        if self.group_lengths is None:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if len(self.group_lengths) != len(dataset):
            raise ValueError(f"group_lengths has {len(self.group_lengths)} entries for {len(dataset)} items")
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                         list(self.group_lengths), seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        build, stats = _INPUTS[self.preference_loss.input_kind]
        norms = self._pair_gradient_norms(model, inputs) if self.normalize_pair_gradients else None
        logps = getattr(self, build)(model, inputs)
        out = self.preference_loss(logps)
        loss = out.losses.mean()
        if norms is not None:
            loss = normalized_objective(loss, logps.chosen, logps.rejected, *norms)
            out.metrics.update({"grad_norm/chosen": norms[0], "grad_norm/rejected": norms[1]})
        self._stop_if_not_finite(loss)
        self._window.add(stats(logps, out.metrics), self.accelerator.gather)
        return (loss, out) if return_outputs else loss

    def _pair_gradient_norms(self, model, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-pair ‖g_w‖, ‖g_l‖ over the trainable parameters (see ``safealign.train.normalized``)."""
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise UserError("normalize_pair_gradients needs whole (unsharded) parameters: not with FSDP or DeepSpeed")
        unwrapped = self.accelerator.unwrap_model(model)
        params = [p for p in unwrapped.parameters() if p.requires_grad]
        return pair_gradient_norms(unwrapped, inputs, params, chunk_size=self.logps_chunk_size)

    def _pair_logps(self, model, inputs: dict[str, Tensor]) -> PairLogps:
        chosen, rejected, chosen_tokens, rejected_tokens = pair_logps(model, inputs, chunk_size=self.logps_chunk_size,
                                                                      impl=self.logps_impl)
        ref = self._reference(model, inputs, ("ref_chosen_logps", "ref_rejected_logps"),
                              lambda live: live.logps(model, inputs).chunk(2))
        return PairLogps(chosen=chosen, rejected=rejected, chosen_tokens=chosen_tokens,
                         rejected_tokens=rejected_tokens, ref_chosen=ref[0], ref_rejected=ref[1],
                         chosen_scores=inputs.get("chosen_scores"), chosen_safe=inputs.get("chosen_safe"),
                         rejected_safe=inputs.get("rejected_safe"))

    def _token_logps(self, model, inputs: dict[str, Tensor]) -> TokenLogps:
        """Per-token log-probs of the chosen responses; the reference is always live (nothing per token is cached)."""
        logps, mask = chosen_token_logps(model, inputs, chunk_size=self.logps_chunk_size, impl=self.logps_impl)
        ref = None
        if self.reference is not None:
            ref = reference_token_logps(self.reference, model, inputs)
        elif self.preference_loss.needs_reference:
            raise ValueError("this loss needs per-token reference log-probs, but no live reference is set")
        return TokenLogps(logps=logps, mask=mask, ref_logps=ref)

    def _unpaired_logps(self, model, inputs: dict[str, Tensor]) -> UnpairedLogps:
        own = view_logps(model, inputs, chunk_size=self.logps_chunk_size, impl=self.logps_impl)
        # the batch carries KL partner sequences only for a loss that reads KTO's KL point (needs_kl_partners)
        partners = "kl_input_ids" in inputs
        kl = None
        if partners:
            with torch.no_grad():  # KTO's KL reference point is detached: the policy scores it without a graph
                kl = view_logps(model, inputs, "kl_", chunk_size=self.logps_chunk_size, impl=self.logps_impl).logps
        ref, ref_kl = self._reference(model, inputs, ("ref_logps", "ref_kl_logps"),
                                      lambda live: (live.logps(model, inputs),
                                                    live.logps(model, inputs, "kl_") if partners else None))
        if partners and ref_kl is not None and self.accelerator.num_processes > 1:
            # KTO's reference point z is one estimate over the global batch (as TRL's): every process gathers the
            # detached KL columns of all processes, so z and the loss do not depend on how rows are sharded
            kl, ref_kl = self.accelerator.gather(kl), self.accelerator.gather(ref_kl)
        return UnpairedLogps(logps=own.logps, tokens=own.tokens, label=inputs["label"], ref_logps=ref,
                             kl_logps=kl, ref_kl_logps=ref_kl)

    def _reference(self, model, inputs, columns: tuple[str, str], live) -> tuple[Tensor | None, Tensor | None]:
        """Reference columns from the batch (cache), else from the live reference, else None."""
        if columns[0] in inputs:  # the second column is absent for unpaired rows without a KL partner
            return inputs[columns[0]], inputs.get(columns[1])
        if self.reference is not None:
            first, second = live(self.reference)
            return first.detach(), None if second is None else second.detach()
        if self.preference_loss.needs_reference:
            raise ValueError("this loss needs reference log-probs, but neither a cache nor a live reference is set")
        return None, None


class LossStateCallback(TrainerCallback):
    """Saves ``loss.state_dict()`` as ``loss_state.json`` in every checkpoint; restores it on resume.

    Restoring reads ``<output_dir>/checkpoint-<global_step>/loss_state.json`` at train begin, i.e. the
    checkpoint the Trainer resumed from (its state already holds that step). Only the main process writes it:
    under data parallelism every process holds the same state (PreferenceTrainer gathers what it folds in).
    """

    def __init__(self, loss: Any) -> None:
        self.loss = loss

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.loss.states:
            path = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}" / LOSS_STATE_NAME
            path.write_text(json.dumps(self.loss.state_dict(), indent=2))

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0 or not self.loss.states:
            return
        path = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}" / LOSS_STATE_NAME
        if not path.is_file():
            logger.warning("resuming at step %d without %s: the loss state (%s) restarts from scratch",
                           state.global_step, path, ", ".join(self.loss.states))
            return
        self.loss.load_state_dict(json.loads(path.read_text()))
        logger.info("restored loss state from %s", path)


class AdapterSaveCallback(TrainerCallback):
    """Saves LoRA adapters with ``save_embedding_layers=False`` and their base's identity.

    peft's default ("auto") decides whether the vocabulary was resized by fetching the base model's
    config from the Hub whenever the base is not a local folder (built-in names, ``tiny-random``): a
    network lookup and two warnings on every checkpoint, offline a failed one. safealign never resizes
    embeddings (a missing pad token becomes the eos token), so the base embeddings never need saving.
    Beside each saved adapter goes the identity of the base it trains on (safealign.models.identity.base_record):
    its adapter_config.json names the base only by path or hub id, and loading it onto other weights found there
    later is refused. The Trainer calls ``model.save_pretrained`` for checkpoints and the final model; this wraps
    it on the model instance at train begin.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        save = getattr(model, "save_pretrained", None)
        if not hasattr(model, "peft_config") or save is None or getattr(save, _ADAPTER_SAVE, False):
            return
        from safealign.models.identity import base_record, write_base_record

        record = base_record(model)  # hashes the base's files, not the parameters training moves

        @functools.wraps(save)
        def save_adapter(save_directory, *args, **kwargs):
            save(save_directory, *args, **{"save_embedding_layers": False, **kwargs})
            write_base_record(save_directory, record)

        setattr(save_adapter, _ADAPTER_SAVE, True)
        model.save_pretrained = save_adapter


_ADAPTER_SAVE = "_safealign_adapter_save"  # marks the wrapper, so a second train() does not wrap it again



class EpochLengthGroupedSampler(LengthGroupedSampler):
    """transformers' ``LengthGroupedSampler`` whose shuffle is seeded by (seed, epoch) instead of being drawn from
    the global random state when the epoch starts: a run resumed in a later epoch then sees that epoch's order
    (the trainer calls ``set_epoch``), not epoch 0's, and skips exactly the batches it already trained."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()
