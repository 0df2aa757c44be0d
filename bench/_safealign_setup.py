"""safealign runs for the DPO throughput benchmark, assembled from the same public pieces as
``safealign.train.run.run_training`` (which reads text data files; the benchmark has token ids):
``training_arguments``, ``PreferenceCollator``, ``load_or_compute_reference`` + ``CachedReferenceCollator``
or ``LiveReference``, and ``PreferenceTrainer`` with the recipe's speed options (docs/performance.md):
``logps`` (fused or naive), ``packing`` (padding-free pair rows), ``group_by_length`` and ``optimizer``.
Like the TRL runs (``save_strategy="no"``) they save no checkpoint; like a real run they pay the packing check.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch

from _measure import EpochTimer, Measurement, PeakMemory, StepClock, TokenCounter, measurement, quiet


def _train_config(cfg: Any, out: str, *, logps: str, packing: bool, group_by_length: bool):
    from safealign.train.config import LossConfig, TrainConfig

    config = TrainConfig(model="bench", output_dir=out, per_device_train_batch_size=cfg.batch, num_train_epochs=1.0,
                         learning_rate=cfg.lr, losses=[LossConfig(name="dpo", params={"beta": cfg.beta})],
                         logging_steps=1, seed=cfg.seed,
                         gradient_checkpointing=cfg.gradient_checkpointing, logps=logps,
                         packing="pairs" if packing else "off", group_by_length=group_by_length,
                         optimizer=cfg.optimizer)
    config.training_args = {"disable_tqdm": True}
    config.reference.batch_size = cfg.ref_batch
    return config


def _training_args(config):
    """``run_training``'s arguments without checkpoints: with ``save_strategy="steps"`` transformers saves a full
    checkpoint (weights and optimizer state) at the last step, inside the timed epoch, which the TRL runs
    (``save_strategy="no"``) never pay. Real runs keep saving (``training_arguments`` is unchanged)."""
    from safealign.train.run import training_arguments

    return training_arguments(config).set_save(strategy="no")


def _packing_check(config, model, pairs: list, tokenizer: Any) -> None:
    """The check ``run_training`` makes before training with ``packing: pairs`` (forwards on the first pairs,
    padded and packed): part of what a padding-free run costs, so it is inside the timed epoch here too."""
    if config.packing == "pairs":
        from safealign.train.packing import check_packing

        check_packing(model, pairs, tokenizer.pad_token_id, chunk_size=config.logps_chunk_size, impl=config.logps)


def _policy(cfg: Any, model: torch.nn.Module) -> torch.nn.Module:
    if cfg.lora:
        from safealign.models import LoraSettings, apply_lora

        model = apply_lora(model, LoraSettings(r=cfg.lora_r, alpha=2 * cfg.lora_r, dropout=0.0))
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    return model


def _reference(cfg: Any, config, model, pairs: list, collate, out: str):
    """``(collator, live_reference, training_pairs, reference_pass_seconds)`` for ``config.reference.mode``."""
    from safealign.train.reference import CachedReferenceCollator, LiveReference, load_or_compute_reference

    if config.reference.mode == "cache":
        cache = load_or_compute_reference(model, pairs, Path(out) / "refcache", batch_size=config.reference.batch_size,
                                          chunk_size=config.logps_chunk_size, impl=config.logps)
        stripped = [dataclasses.replace(p, ref_prompt_ids=None) for p in pairs]
        return CachedReferenceCollator(collate, cache.table), None, stripped, cache.seconds
    ref_model = None if cfg.lora else copy.deepcopy(model).requires_grad_(False).eval()
    return collate, LiveReference(ref_model, chunk_size=config.logps_chunk_size, impl=config.logps), pairs, 0.0


def run_safealign(cfg: Any, make_model, tokenizer: Any, pairs: list, *, reference: str, e_view: bool,
                  group_by_length: bool = False, logps: str = "fused", packing: bool = False) -> Measurement:
    """One epoch of safealign DPO (``e_view``: E-DPO, reference sees the prefixed prompt on harmful rows)."""
    from safealign.data import PreferenceCollator
    from safealign.train.run import ListDataset, build_loss_from_config, item_tokens
    from safealign.train.trainer import PreferenceTrainer

    device = torch.device(cfg.device)
    pairs = pairs if e_view else [dataclasses.replace(p, ref_prompt_ids=None) for p in pairs]
    with tempfile.TemporaryDirectory() as out, PeakMemory(device) as memory:
        config = _train_config(cfg, out, logps=logps, packing=packing, group_by_length=group_by_length)
        config.reference.mode = reference
        model = make_model()
        # Timed like the TRL runs: the LoRA wrap and the frozen reference copy (full fine-tuning, live reference)
        # are inside the epoch time on both sides (TRL wraps the model and copies the reference in here too).
        with EpochTimer(device) as timer:
            model = _policy(cfg, model)
            _packing_check(config, model, pairs, tokenizer)  # where run_training makes it: before the reference
            collate = PreferenceCollator(tokenizer.pad_token_id, pack=packing)
            collator, live, train_pairs, ref_seconds = _reference(cfg, config, model, pairs, collate, out)
            counter = TokenCounter(collator)
            clock = StepClock(device, counter)
            lengths = [item_tokens(p) for p in train_pairs] if group_by_length else None
            trainer = PreferenceTrainer(model=model, args=_training_args(config),
                                        train_dataset=ListDataset(train_pairs), data_collator=counter,
                                        processing_class=tokenizer, loss=build_loss_from_config(config),
                                        reference=live, logps_chunk_size=config.logps_chunk_size,
                                        logps_impl=config.logps, group_lengths=lengths, callbacks=[clock])
            quiet(trainer)
            trainer.train()
        del live, model
    return dataclasses.replace(measurement(trainer, clock, timer, memory, cfg.warmup), reference_s=ref_seconds)
