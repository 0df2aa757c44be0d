"""TRL 1.16 ``DPOTrainer`` runs for the DPO throughput benchmark, on safealign's exact token ids.

TRL tokenizes text itself (``_prepare_dataset``: prompt / chosen / rejected strings -> ``prompt_ids``,
``chosen_ids``, ``rejected_ids``). The benchmark hands it those three id columns directly and skips that
step, so both systems train on identical ids and identical batches; its collator, padding, fused LM
head, reference handling and loss are TRL's own and untouched.
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
import uuid
from typing import Any

import torch

from _measure import EpochTimer, Measurement, PeakMemory, StepClock, TokenCounter, measurement, quiet


def liger_status(device: torch.device) -> str | None:
    """None when TRL + Liger can run here, else why not (the table prints it)."""
    if device.type != "cuda":
        return "n/a (needs CUDA)"
    if importlib.util.find_spec("liger_kernel") is None:
        return "n/a (liger-kernel not installed)"
    return None


def _trainer_class():
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """``DPOTrainer`` whose data set already holds ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return PretokenizedDPOTrainer


def _dataset(pairs: list[Any]):
    from datasets import Dataset

    data = Dataset.from_dict({
        "prompt_ids": [list(p.prompt_ids) for p in pairs],
        "chosen_ids": [list(p.chosen_ids) for p in pairs],
        "rejected_ids": [list(p.rejected_ids) for p in pairs],
    })
    # TRL caches precomputed reference log-probs under the data set's fingerprint: a fresh one per run,
    # so every run pays for its reference pass (as safealign's runs do with a fresh cache folder).
    return data.map(lambda batch: batch, batched=True, new_fingerprint=uuid.uuid4().hex)


def _dpo_config(cfg: Any, out: str, *, precompute: bool, liger: bool):
    from trl import DPOConfig

    from safealign.train.config import OPTIMIZERS

    cuda = cfg.device == "cuda"
    optim = OPTIMIZERS[cfg.optimizer]  # the same optimizer as the safealign rows (None: the default AdamW)
    return DPOConfig(
        output_dir=out, per_device_train_batch_size=cfg.batch, num_train_epochs=1, learning_rate=cfg.lr,
        beta=cfg.beta, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=1, save_strategy="no", report_to=[], seed=cfg.seed, data_seed=cfg.seed,
        bf16=cuda, gradient_checkpointing=cfg.gradient_checkpointing, max_length=None,
        precompute_ref_log_probs=precompute, precompute_ref_batch_size=cfg.ref_batch,
        use_liger_kernel=liger, dataloader_pin_memory=cuda, disable_tqdm=True, **({"optim": optim} if optim else {}),
    )


def _peft_config(cfg: Any):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def run_trl(cfg: Any, make_model, tokenizer: Any, pairs: list[Any], *, precompute: bool,
            liger: bool) -> Measurement:
    """One epoch of TRL DPO over ``pairs``; the reference is a frozen copy (full FT) or the adapter-off base."""
    device = torch.device(cfg.device)
    dataset = _dataset(pairs)
    with tempfile.TemporaryDirectory() as out, PeakMemory(device) as memory:
        model = make_model()
        args = _dpo_config(cfg, out, precompute=precompute, liger=liger)
        with EpochTimer(device) as timer:
            # Full fine-tuning on a model without a hub path: TRL cannot reload one, so it gets a frozen copy.
            # Made inside the epoch time, as safealign's live reference copy is (and as TRL's own LoRA wrap is).
            ref_model = None if (cfg.lora or precompute) else copy.deepcopy(model).requires_grad_(False).eval()
            trainer = _trainer_class()(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                                       processing_class=tokenizer, peft_config=_peft_config(cfg))
            counter = TokenCounter(trainer.data_collator)
            trainer.data_collator = counter
            clock = StepClock(device, counter)
            trainer.add_callback(clock)
            quiet(trainer)
            trainer.train()
        del ref_model, model
    return measurement(trainer, clock, timer, memory, cfg.warmup)
