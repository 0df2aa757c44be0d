"""Build a training run from a ``TrainConfig`` and execute it (``safealign train`` calls this)."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from safealign.config import save_config, to_dict
from safealign.train.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    final_dir: Path
    metrics_path: Path
    reference: str
    steps: int
    wall_seconds: float


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def build_loss_from_config(config: TrainConfig):
    from safealign.losses import LossSpec, build_loss

    return build_loss([LossSpec(name=l.name, weight=l.weight, params=dict(l.params)) for l in config.losses])


def _load_policy(config: TrainConfig, model=None, tokenizer=None):
    from safealign.models import LoraSettings, load_model

    lora = None
    if config.lora.enabled:
        lora = LoraSettings(r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout,
                            target_modules=config.lora.target_modules)
    if model is None:
        return load_model(config.model, trust_remote_code=config.trust_remote_code, lora=lora, for_training=True)
    if lora is not None and not hasattr(model, "peft_config"):
        from safealign.models import apply_lora

        model = apply_lora(model, lora)
    return model, tokenizer


def encode_training_data(config: TrainConfig, tokenizer):
    """Load, parse and tokenize the preference data with the configured reference view."""
    from safealign.data import PairEncoder, build_transform, load_preferences

    parsed = load_preferences(config.data.path, format=config.data.format, columns=dict(config.data.columns) or None,
                              split=config.data.split, harmful=config.data.harmful, limit=config.data.limit)
    for drop in parsed.dropped[:20]:
        logger.warning("dropped %s row %s (%s): %s", drop.source, drop.row, drop.field, drop.reason)
    if parsed.dropped:
        logger.warning("dropped %d of %d rows in total", len(parsed.dropped), parsed.rows)
    if not parsed.items:
        raise ValueError(f"{config.data.path}: no usable rows ({len(parsed.dropped)} dropped)")
    transform = build_transform(config.reference.transform, **dict(config.reference.transform_params))
    encoder = PairEncoder(tokenizer, transform=transform, max_length=config.data.max_length,
                          max_prompt_length=config.data.max_prompt_length)
    encoded, report = encoder.encode_all(parsed.items)
    encoded = [dataclasses.replace(item, index=i) for i, item in enumerate(encoded)]
    return parsed, encoded, report, transform


def _reference_setup(config, model, encoded, collate, loss):
    """Return (collator, live_reference, description, encoded_for_training)."""
    from safealign.train.reference import CachedReferenceCollator, LiveReference, load_or_compute_reference

    if not loss.needs_reference:
        return collate, None, "none (reference-free loss)", encoded
    ref_model = None
    if config.reference.model:
        from safealign.models import load_model

        ref_model, _ = load_model(config.reference.model, trust_remote_code=config.trust_remote_code)
        ref_model.requires_grad_(False).eval()
    if config.reference.mode == "cache":
        from safealign.models.embedded import cache_root

        cache_dir = config.reference.cache_dir or str(cache_root() / "reference")
        cache = load_or_compute_reference(ref_model or model, encoded, collate, cache_dir,
                                          batch_size=config.reference.batch_size,
                                          chunk_size=config.logps_chunk_size,
                                          describe={"model": config.reference.model or config.model,
                                                    "transform": config.reference.transform})
        # the policy never needs the reference view once the table exists
        stripped = [dataclasses.replace(item, ref_prompt_ids=None) for item in encoded]
        return CachedReferenceCollator(collate, cache.table), None, cache.describe(), stripped
    if config.reference.mode != "live":
        raise ValueError(f"reference.mode must be 'cache' or 'live', got {config.reference.mode!r}")
    if ref_model is None and not hasattr(model, "peft_config"):
        ref_model = copy.deepcopy(model).requires_grad_(False).eval()  # full fine-tuning: a frozen copy
    live = LiveReference(ref_model, chunk_size=config.logps_chunk_size)
    return collate, live, live.describe(), encoded


def training_arguments(config: TrainConfig) -> TrainingArguments:
    extra = dict(config.training_args)
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=config.output_dir,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        bf16=extra.pop("bf16", cuda and torch.cuda.is_bf16_supported()),
        report_to=list(config.report_to),
        remove_unused_columns=False,
        dataloader_pin_memory=cuda,
        **({"gradient_checkpointing": True} if config.gradient_checkpointing else {}),
        **extra,
    )


def run_training(config: TrainConfig, *, resume: bool = False, model=None, tokenizer=None) -> TrainResult:
    """Train according to ``config``; ``model``/``tokenizer`` may be passed to skip loading."""
    from safealign.data import PreferenceCollator
    from safealign.train.trainer import PreferenceTrainer

    start = time.time()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    loss = build_loss_from_config(config)  # fail fast on a bad loss before loading anything heavy
    model, tokenizer = _load_policy(config, model, tokenizer)
    parsed, encoded, report, _ = encode_training_data(config, tokenizer)
    collate = PreferenceCollator(tokenizer.pad_token_id)
    collator, live, ref_desc, encoded = _reference_setup(config, model, encoded, collate, loss)
    logger.info("reference: %s", ref_desc)
    if config.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    metrics_path = out / "metrics.jsonl"
    checkpoint = get_last_checkpoint(str(out)) if resume else None
    if resume and checkpoint is None:
        raise ValueError(f"--resume: no checkpoint found in {out}")
    _truncate_metrics(metrics_path, _checkpoint_step(checkpoint) if checkpoint else 0)
    trainer = PreferenceTrainer(
        model=model, args=training_arguments(config), train_dataset=ListDataset(encoded),
        data_collator=collator, processing_class=tokenizer, loss=loss, reference=live,
        logps_chunk_size=config.logps_chunk_size, metrics_path=metrics_path,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    final = out / "final"
    trainer.save_model(str(final))
    summary = {
        "reference": ref_desc, "transform": config.reference.transform, "losses": to_dict(config)["losses"],
        "pairs": len(encoded), "rows": parsed.rows, "dropped": len(parsed.dropped),
        "truncation": dataclasses.asdict(report) if dataclasses.is_dataclass(report) else str(report),
        "steps": trainer.state.global_step, "wall_seconds": round(time.time() - start, 2),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return TrainResult(out, final, metrics_path, ref_desc, trainer.state.global_step, summary["wall_seconds"])


def _checkpoint_step(checkpoint: str) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metrics logged after the checkpoint (they will be logged again)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))
