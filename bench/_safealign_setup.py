"""safealign runs for the DPO throughput benchmark, assembled from the same public pieces as
``safealign.train.run.run_training`` (which reads text data files; the benchmark has token ids):
``training_arguments``, ``PreferenceCollator``, ``load_or_compute_reference`` + ``CachedReferenceCollator``
or ``LiveReference``, and ``PreferenceTrainer``.

``group_by_length=True`` is a prototype of length-grouped batching that the trainer does not offer yet:
the pairs go in as a ``datasets.Dataset`` with a ``length`` column, ``train_sampling_strategy`` is
``group_by_length`` (transformers' ``LengthGroupedSampler``), and a small adapter turns the rows back
into ``EncodedPair`` for the collator.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import tempfile
from pathlib import Path
from typing import Any

import torch

from _measure import EpochTimer, Measurement, PeakMemory, StepClock, TokenCounter, measurement, quiet


def _train_config(cfg: Any, out: str, group_by_length: bool):
    from safealign.train.config import LossConfig, TrainConfig

    config = TrainConfig(model="bench", output_dir=out, per_device_train_batch_size=cfg.batch, num_train_epochs=1.0,
                         learning_rate=cfg.lr, losses=[LossConfig(name="dpo", params={"beta": cfg.beta})],
                         logging_steps=1, save_steps=10**9, save_total_limit=None, seed=cfg.seed,
                         gradient_checkpointing=cfg.gradient_checkpointing)
    config.training_args = {"disable_tqdm": True}
    if group_by_length:
        config.training_args["train_sampling_strategy"] = "group_by_length"
    config.reference.batch_size = cfg.ref_batch
    return config


def _policy(cfg: Any, model: torch.nn.Module) -> torch.nn.Module:
    if cfg.lora:
        from safealign.models import LoraSettings, apply_lora

        model = apply_lora(model, LoraSettings(r=cfg.lora_r, alpha=2 * cfg.lora_r, dropout=0.0))
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    return model


def _reference(cfg: Any, config, model, pairs: list, collate, out: str):
    """``(collator, live_reference, training_pairs)`` for ``config.reference.mode``."""
    from safealign.train.reference import CachedReferenceCollator, LiveReference, load_or_compute_reference

    if config.reference.mode == "cache":
        # older signature took the collator third; the reference pass builds its own batches now
        takes_collate = "collate" in inspect.signature(load_or_compute_reference).parameters
        cache = load_or_compute_reference(model, pairs, *((collate,) if takes_collate else ()), Path(out) / "refcache",
                                          batch_size=config.reference.batch_size, chunk_size=config.logps_chunk_size)
        stripped = [dataclasses.replace(p, ref_prompt_ids=None) for p in pairs]
        return CachedReferenceCollator(collate, cache.table), None, stripped
    ref_model = None if cfg.lora else copy.deepcopy(model).requires_grad_(False).eval()
    return collate, LiveReference(ref_model, chunk_size=config.logps_chunk_size), pairs


class _RowsToPairs:
    """Collator adapter for the length-grouped prototype: ``datasets`` rows (dicts) -> ``EncodedPair``."""

    def __init__(self, collate) -> None:
        self.collate = collate

    def __call__(self, rows: list[dict]) -> dict:
        from safealign.data.tokenize import EncodedPair

        def pair(row: dict) -> EncodedPair:
            ref = row["ref_prompt_ids"]
            return EncodedPair(index=row["index"], prompt_ids=tuple(row["prompt_ids"]),
                               ref_prompt_ids=None if ref is None else tuple(ref), chosen_ids=tuple(row["chosen_ids"]),
                               rejected_ids=tuple(row["rejected_ids"]), harmful=row["harmful"])

        return self.collate([pair(row) for row in rows])


def _dataset(pairs: list, group_by_length: bool, collator):
    from safealign.train.run import ListDataset

    if not group_by_length:
        return ListDataset(pairs), collator
    from datasets import Dataset

    columns = {f.name: [getattr(p, f.name) for p in pairs] for f in dataclasses.fields(pairs[0])}
    columns["length"] = [len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs]
    return Dataset.from_dict(columns), _RowsToPairs(collator)


def run_safealign(cfg: Any, make_model, tokenizer: Any, pairs: list, *, reference: str, e_view: bool,
                  group_by_length: bool = False) -> Measurement:
    """One epoch of safealign DPO (``e_view``: E-DPO, reference sees the prefixed prompt on harmful rows)."""
    from safealign.data import PreferenceCollator
    from safealign.train.run import build_loss_from_config, training_arguments
    from safealign.train.trainer import PreferenceTrainer

    device = torch.device(cfg.device)
    pairs = pairs if e_view else [dataclasses.replace(p, ref_prompt_ids=None) for p in pairs]
    with tempfile.TemporaryDirectory() as out, PeakMemory(device) as memory:
        config = _train_config(cfg, out, group_by_length)
        config.reference.mode = reference
        model = _policy(cfg, make_model())
        with EpochTimer(device) as timer:
            collator, live, train_pairs = _reference(cfg, config, model, pairs,
                                                     PreferenceCollator(tokenizer.pad_token_id), out)
            dataset, collator = _dataset(train_pairs, group_by_length, collator)
            counter = TokenCounter(collator)
            clock = StepClock(device, counter)
            trainer = PreferenceTrainer(model=model, args=training_arguments(config), train_dataset=dataset,
                                        data_collator=counter, processing_class=tokenizer,
                                        loss=build_loss_from_config(config), reference=live,
                                        logps_chunk_size=config.logps_chunk_size, callbacks=[clock])
            quiet(trainer)
            trainer.train()
        del live, model
    return measurement(trainer, clock, timer, memory, cfg.warmup)
