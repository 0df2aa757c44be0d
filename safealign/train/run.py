"""Build a training run from a ``TrainConfig`` and execute it (``safealign train`` calls this)."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from safealign.config import load_config, save_config, to_dict
from safealign.errors import UserError
from safealign.io import read_jsonl, write_json, write_jsonl
from safealign.models.identity import loaded_identity, model_identity, setup_fingerprint, setup_keys
from safealign.train.config import TrainConfig, same_model_revision

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

    return build_loss([LossSpec(name=s.name, weight=s.weight, params=dict(s.params)) for s in config.losses])


def _load_policy(config: TrainConfig, device: torch.device, model=None, tokenizer=None, *,
                 train_output_head: bool = False):
    """Load the policy on the device training runs on (``use_cpu`` means CPU and fp32, even where CUDA exists).

    ``train_output_head``: a fresh LoRA adapter trains the output head too (as a copy; MAH-DPO trains every head)."""
    from safealign.models import LoraSettings, load_model

    lora = None
    if config.lora.enabled:
        lora = LoraSettings(r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout,
                            target_modules=config.lora.target_modules, last_layers=config.lora.last_layers,
                            train_output_head=train_output_head)
    if model is None:
        return load_model(config.model, device=device, trust_remote_code=config.trust_remote_code,
                          revision=config.model_revision, lora=lora, for_training=True,
                          attn_implementation=config.attn_implementation)
    if lora is not None and not hasattr(model, "peft_config"):
        from safealign.models import apply_lora

        model = apply_lora(model, lora)
    return model, tokenizer


REFERENCE_MODES = ("cache", "live")


def check_config(config: TrainConfig) -> None:
    """Checks that need no model (the loss is checked by building it): fail before anything loads."""
    from safealign.data import build_transform

    config.validate()  # again here: fields may have been set after the config was built
    if config.reference.mode not in REFERENCE_MODES:
        raise UserError(f"reference.mode must be one of {', '.join(REFERENCE_MODES)}, got {config.reference.mode!r}")
    build_transform(config.reference.transform, **dict(config.reference.transform_params))
    check_diagnostics(config)


def _reference_setup(config, model, encoded, kind, collate, loss, device: torch.device, tokenizer=None,
                     report=None):
    """Return (collator, live_reference, description, encoded_for_training, reference_pass_seconds).

    The reference is ``reference.model`` when set, else the starting policy: with a fresh LoRA adapter the policy
    with that adapter disabled; with a trained adapter being continued (``model:`` an adapter folder) the policy
    as it starts, adapter included (docs/algorithms.md, "Which πref"); under full fine-tuning the starting
    weights. A separate reference model is loaded on the training device in the policy's dtype, so cached and
    live reference log-probs come from the same precision the policy trains in. A cached table is computed
    before training moves the policy, so it scores the policy itself; a live reference of the starting weights
    is a frozen copy. The reference views (``report``'s overrun past ``max_length``) are checked against the
    context of the model that scores them (:func:`~safealign.train.data.check_reference_fits`): ``reference.model``
    when set (the policy never scores them then), else the policy, before any reference pass.
    """
    from safealign.train.data import check_reference_fits
    from safealign.train.reference import (
        CachedReferenceCollator,
        LiveReference,
        load_or_compute_reference,
        load_reference_model,
        separate_reference,
        starts_from_trained_adapter,
    )

    if not loss.needs_reference:
        return collate, None, "none (reference-free loss)", encoded, 0.0
    ref_model = (load_reference_model(config.reference.model, model, device, trust_remote_code=config.trust_remote_code,
                                      revision=reference_revision(config), policy_tokenizer=tokenizer,
                                      attn_implementation=config.attn_implementation)
                 if config.reference.model else None)
    check_reference_fits(ref_model or model, config.data.max_length, report)
    trained_adapter = ref_model is None and starts_from_trained_adapter(model)
    if trained_adapter:
        logger.info("reference: %s starts from a trained LoRA adapter, so the reference is that starting policy, "
                    "adapter included (not its base model); set reference.model to choose another", config.model)
    if config.reference.mode == "cache" and kind.ref_columns is None:
        logger.info("reference: loss %s needs per-token reference log-probs, which are not cached; live forward",
                    kind.name)
    elif config.reference.mode == "cache":
        from safealign.models.embedded import cache_root

        cache_dir = config.reference.cache_dir or str(cache_root() / "reference")
        cache = load_or_compute_reference(ref_model or model, encoded, cache_dir,
                                          batch_size=config.reference.batch_size,
                                          batch_tokens=config.reference.batch_tokens,
                                          chunk_size=config.logps_chunk_size, impl=config.logps,
                                          describe={"model": config.reference.model or config.model,
                                                    "transform": config.reference.transform, "kind": kind.name},
                                          with_adapter=ref_model is not None or trained_adapter)
        # the policy never needs the reference view once the table exists
        stripped = [kind.strip_reference_view(item) for item in encoded]
        collator = CachedReferenceCollator(collate, cache.table, kind.ref_columns)
        what = "the starting policy with its trained LoRA adapter" if trained_adapter else None
        return collator, None, cache.describe() + (f" of {what}" if what else ""), stripped, cache.seconds
    what = None
    if ref_model is None:  # a trained adapter's or a fully fine-tuned policy's frozen copy, or none (fresh adapter)
        ref_model, what = separate_reference(None, model, device, trust_remote_code=config.trust_remote_code)
    live = LiveReference(ref_model, chunk_size=config.logps_chunk_size, impl=config.logps, what=what)
    return collate, live, live.describe(), encoded, 0.0


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
        **_optimizer_args(config.optimizer),
        **extra,
    )


def _optimizer_args(name: str) -> dict[str, str]:
    """``TrainingArguments.optim`` for ``optimizer``; a UserError before anything loads when it needs
    bitsandbytes and that is not installed."""
    import importlib.util

    from safealign.train.config import OPTIMIZERS

    optim = OPTIMIZERS[name]
    if optim is None:
        return {}
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"optimizer={name} needs bitsandbytes, which is not installed: pip install bitsandbytes "
                        "(CUDA; see docs/performance.md), or use optimizer=adamw")
    return {"optim": optim}


def check_training_options(config: TrainConfig, loss, items: Sequence[Any] = ()) -> None:
    """Options that depend on the loss and the parsed ``items``: packing needs chosen/rejected pairs, whole rows
    per pair, and no DeRTa transition row (the collator lays its per-position targets out on padded rows; refused
    here, not at the first batch, after the model has loaded and the output directory is claimed); a batch-coupled
    loss (AOT) needs at least two pairs per micro-batch."""
    if loss.batch_coupled and config.per_device_train_batch_size < 2:
        raise UserError(f"loss {', '.join(loss.batch_coupled)} compares each pair with the others of its micro-batch "
                        f"(it sorts them): per_device_train_batch_size={config.per_device_train_batch_size} makes "
                        "every step plain cDPO; set per_device_train_batch_size to at least 2 "
                        "(gradient_accumulation_steps does not join micro-batches)")
    if config.packing != "off" and loss.input_kind != "pair":
        raise UserError(f"packing={config.packing} packs a pair's chosen and rejected sequences into one row; loss "
                        f"{', '.join(c.name for c in config.losses)} takes {loss.input_kind} examples: use packing=off")
    if config.packing != "off" and config.normalize_pair_gradients:
        raise UserError("normalize_pair_gradients takes each pair's rows apart, which a packed batch does not have: "
                        "use packing=off with it")
    transition = next((x for x in items if getattr(x, "chosen_target_refusal", None) is not None), None)
    if config.packing != "off" and transition is not None:
        raise UserError(f"packing={config.packing} cannot pack DeRTa's transition rows (data transform derta, e.g. "
                        f"the one from {transition.source} row {transition.row}): their targets are laid out on "
                        "padded rows; use packing=off, or the derta transform with params {rto: false}")


def _check_objective_ignores_nothing(config: TrainConfig) -> None:
    """The preference trainer's batch options (docs/performance.md) do not reach an objective's trainer: refuse
    them rather than let a recipe believe it packs or groups its batches."""
    set_keys = [f"{key}={getattr(config, key)}" for key, default in (("packing", "off"), ("group_by_length", False),
                                                                       ("logps", "fused"))
                if getattr(config, key) != default]
    if set_keys:
        raise UserError(f"objective {config.objective.name!r} trains on hidden states with its own batches; "
                        f"{', '.join(set_keys)} applies to preference losses only: remove it")


def item_tokens(item: Any) -> int:
    """Policy tokens an encoded training item puts in a batch (both of its sequences): the length grouping key."""
    from safealign.train.reference import reference_view

    example = getattr(item, "example", item)  # an unpaired row wraps its example
    prompt = example.prompt_ids
    _, responses = reference_view(item)
    return sum(len(prompt) + len(r) for r in responses)


def run_training(config: TrainConfig, *, resume: bool = False, overwrite: bool = False, model=None,
                 tokenizer=None, overwrite_flag: str = "--overwrite") -> TrainResult:  # fmt: skip
    """Train according to ``config``; ``model``/``tokenizer`` may be passed to skip loading.

    ``resume`` continues the last checkpoint of a run with the same fingerprint (safealign.io.rundir);
    ``overwrite`` deletes an earlier run's outputs in ``output_dir`` first. ``overwrite_flag``: how the calling
    command offers ``overwrite``, named in a refusal (``safealign demo`` says ``--fresh``).
    """
    if config.objective.name:  # the second plug-in kind: a hidden-state objective (docs/objectives.md)
        from safealign.train.objectives.run import run_objective_training

        _check_objective_ignores_nothing(config)

        return run_objective_training(config, resume=resume, overwrite=overwrite, model=model, tokenizer=tokenizer,
                                      overwrite_flag=overwrite_flag)
    from safealign.train.data import (
        DATA_KINDS, check_loss_inputs, encode_training_items, load_training_items,
    )
    from safealign.train.trainer import PreferenceTrainer

    start = time.time()
    # fail fast on a bad loss, config or data/loss mismatch before loading anything heavy
    loss = build_loss_from_config(config)
    check_config(config)
    if config.normalize_pair_gradients and loss.input_kind != "pair":
        raise UserError(f"normalize_pair_gradients needs a paired loss (chosen and rejected per row), not an "
                        f"{loss.input_kind} one ({', '.join(c.name for c in config.losses)})")
    parsed, items = load_training_items(config, loss.input_kind)
    check_loss_inputs(config, parsed.format, items, loss)
    check_training_options(config, loss, items)
    kind = DATA_KINDS[loss.input_kind]
    out = Path(config.output_dir)
    args = training_arguments(config)
    checkpoint = open_run(config, args, resume=resume, overwrite=overwrite, model=model, overwrite_flag=overwrite_flag)
    model, tokenizer = _load_policy(config, args.device, model, tokenizer)
    identities = _starting_identities(config, model)  # before training changes the weights
    encoded, report = encode_training_items(config, tokenizer, items, kind, joint_logps=loss.joint_logps,
                                            kl_partners=loss.needs_kl_partners)
    collate = kind.collator(tokenizer.pad_token_id, **({"pack": True} if config.packing == "pairs" else {}))
    if config.packing == "pairs":  # not every architecture keeps packed sequences apart: check this one
        from safealign.train.packing import check_packing

        check_packing(model, encoded, tokenizer.pad_token_id, chunk_size=config.logps_chunk_size, impl=config.logps)
    with args.main_process_first(local=False, desc="reference log-probs"):
        collator, live, ref_desc, encoded, ref_seconds = _reference_setup(config, model, encoded, kind, collate,
                                                                          loss, args.device, tokenizer, report)
    logger.info("reference: %s", ref_desc)
    if config.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    metrics_path = out / "metrics.jsonl"
    trainer = PreferenceTrainer(
        model=model, args=args, train_dataset=ListDataset(encoded),
        data_collator=collator, processing_class=tokenizer, loss=loss, reference=live,
        logps_chunk_size=config.logps_chunk_size, metrics_path=metrics_path,
        normalize_pair_gradients=config.normalize_pair_gradients, logps_impl=config.logps,
        group_lengths=[item_tokens(item) for item in encoded] if config.group_by_length else None,
        callbacks=_diagnostic_callbacks(config, encoded, loss, tokenizer),
    )
    summary = {
        "reference": ref_desc, "transform": config.reference.transform, "losses": to_dict(config)["losses"],
        "input": loss.input_kind, "examples": len(encoded), "rows": parsed.rows, "dropped": len(parsed.dropped),
        "duplicate_rows": len(parsed.duplicates()),
        "truncation": dataclasses.asdict(report) if dataclasses.is_dataclass(report) else str(report),
        **identities,
    }
    return finish_run(trainer, checkpoint, summary, start, reference_seconds=ref_seconds)


def open_run(config: TrainConfig, args: TrainingArguments, *, resume: bool, overwrite: bool, model=None,
             overwrite_flag: str = "--overwrite") -> str | None:
    """Claim ``output_dir`` for this run and save its config; the checkpoint to resume, if any.

    Under accelerate launch every process runs the training function: the main process claims the run directory
    (and computes a reference cache) first; the others wait, then resume its checkpoint and reuse its cache.
    """
    out = Path(config.output_dir)
    main = args.process_index == 0
    with args.main_process_first(local=False, desc="claiming the run directory"):
        if main:
            checkpoint = _claim(out, config, resume, overwrite, model, overwrite_flag)
            save_config(config, out / "config.yaml")
        else:
            checkpoint = get_last_checkpoint(str(out)) if resume else None
    if main:
        _truncate_metrics(out / "metrics.jsonl", _checkpoint_step(checkpoint) if checkpoint else 0)
    return checkpoint


def finish_run(trainer: Any, checkpoint: str | None, summary: dict[str, Any], start: float, *,
               reference_seconds: float = 0.0) -> TrainResult:
    """Train (from ``checkpoint``), save the final weights and write ``train_summary.json`` (``summary`` plus the
    steps, wall time, the reference pass's share of the epoch time, final weights' identity and the run's
    fingerprint). ``reference_seconds``: the cached reference pass before training (0 when reused or live)."""
    from safealign.io.rundir import read_fingerprint

    train_started = time.time()
    trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.time() - train_started
    total = reference_seconds + train_seconds
    ref_share = reference_seconds / total if total > 0 else 0.0
    logger.info("reference pass %.1f s, training %.1f s: the reference pass is %.1f%% of the epoch time",
                reference_seconds, train_seconds, 100 * ref_share)
    out = Path(trainer.args.output_dir)
    final = out / "final"
    trainer.save_model(str(final))
    summary = {**summary, "steps": trainer.state.global_step, "wall_seconds": round(time.time() - start, 2),
               "reference_pass_seconds": round(reference_seconds, 2), "train_seconds": round(train_seconds, 2),
               "reference_pass_share": round(ref_share, 4)}
    if trainer.args.process_index == 0:  # only the main process saved the final weights and claimed the run dir
        summary["final_identity"] = model_identity(str(final))
        summary["run_fingerprint"] = read_fingerprint(out).digest
        write_json(out / "train_summary.json", summary)
    return TrainResult(out, final, out / "metrics.jsonl", summary["reference"], trainer.state.global_step,
                       summary["wall_seconds"])


TRAIN_OUTPUTS = ("checkpoint-*", "final", "metrics.jsonl", "diagnostics.jsonl", "train_summary.json", "config.yaml",
                 "runs")  # what --overwrite removes; "runs" is TrainingArguments' default logging_dir


def _claim(out: Path, config: TrainConfig, resume: bool, overwrite: bool, model: Any = None,
           overwrite_flag: str = "--overwrite") -> str | None:  # fmt: skip
    """Check ``out`` may hold this run before anything is written there; the checkpoint to resume, if any."""
    from safealign.io.rundir import claim_run_dir, legacy_fingerprint, train_fingerprint

    if resume and overwrite:
        raise UserError("--resume continues the run in output_dir and --overwrite deletes it: pass one of them")
    found: list[str | None] = [None]

    def legacy(run: Path):
        return legacy_fingerprint(run / "config.yaml", lambda p: to_dict(load_config(TrainConfig, p)),
                                  train_fingerprint)

    def check(continues: bool) -> None:
        found[0] = get_last_checkpoint(str(out)) if continues and not overwrite else None
        if resume and found[0] is None:
            raise UserError(f"--resume: no checkpoint of this run found in {out}")
        if not resume and found[0] is not None:
            raise UserError(f"{out} holds a run with the same settings and checkpoint {Path(found[0]).name}; "
                            "pass --resume to continue it, or --overwrite to delete it and start over")

    # the weights training starts from, known before loading: a passed-in model's, or the ones the spec names
    policy = loaded_identity(model) if model is not None else model_identity(config.model, config.model_revision)
    reference = model_identity(config.reference.model, reference_revision(config)) if config.reference.model else {}
    fingerprint = train_fingerprint(to_dict(config), weights=policy.get("fingerprint"),
                                    reference_weights=reference.get("fingerprint"), setup=setup_fingerprint(policy),
                                    reference_setup=setup_fingerprint(reference), defaults=to_dict(TrainConfig()),
                                    more_setup={**setup_keys(policy, "model."), **setup_keys(reference, "reference.")})
    claim_run_dir(out, fingerprint, outputs=TRAIN_OUTPUTS, overwrite=overwrite,
                  legacy=legacy, check=check, overwrite_flag=overwrite_flag)
    return found[0]


def _starting_identities(config: TrainConfig, model: Any) -> dict[str, Any]:
    """What training starts from (safealign.models.identity): the policy's weights and a separate reference's."""
    identities = {"model_identity": loaded_identity(model)}
    if config.reference.model:
        identities["reference_identity"] = model_identity(config.reference.model, reference_revision(config))
    return identities


def reference_revision(config: TrainConfig) -> str | None:
    """The revision ``reference.model`` loads at: ``model_revision`` where it names the policy's hub id, else none
    (safealign.train.config.same_model_revision)."""
    return same_model_revision(config.reference.model, config.model, config.model_revision)


def check_diagnostics(config: TrainConfig) -> None:
    """The entanglement probe (safealign.train.probe) runs forward and backward passes on the main process alone.
    Where every process holds only a shard of the parameters (FSDP, DeepSpeed ZeRO-3) those passes gather shards
    from processes that never join them, so the run would hang until ``ddp_timeout``: refused here, before anything
    loads. Read from ``training_args`` (``fsdp``; ``deepspeed``, a dict or a JSON file, at ``zero_optimization.stage``
    3); DDP and ZeRO-1/2 keep whole parameters on every process and are fine."""
    every = config.diagnostics.entanglement_every
    sharding = _sharding(config.training_args) if every > 0 else None
    if sharding:
        raise UserError(f"diagnostics.entanglement_every={every}: the entanglement probe runs on the main process "
                        f"alone, which cannot run the model when {sharding} shards its parameters over the processes "
                        "(it would wait for them until ddp_timeout); set diagnostics.entanglement_every=0, or train "
                        "without sharded parameters (DDP, ZeRO-1/2)")


def _sharding(training_args: dict[str, Any]) -> str | None:
    """What shards the parameters over the processes, as ``training_args`` sets it, or None. A ``deepspeed`` file
    that cannot be read is left to TrainingArguments, which names it."""
    import json

    if training_args.get("fsdp"):
        return f"training_args.fsdp ({training_args['fsdp']!r})"
    deepspeed = training_args.get("deepspeed")
    if isinstance(deepspeed, str):
        try:
            deepspeed = json.loads(Path(deepspeed).read_text())
        except (OSError, ValueError):
            return None
    stage = (deepspeed.get("zero_optimization") or {}).get("stage") if isinstance(deepspeed, dict) else None
    return "training_args.deepspeed (ZeRO stage 3)" if str(stage) == "3" else None


def _diagnostic_callbacks(config: TrainConfig, encoded: list, loss, tokenizer) -> list:
    every = config.diagnostics.entanglement_every
    if every <= 0:
        return []
    if loss.input_kind != "pair":
        raise UserError("diagnostics.entanglement_every needs a paired loss (chosen and rejected per row)")
    from safealign.data import PreferenceCollator
    from safealign.train.probe import EntanglementCallback, choose_probe

    probe = choose_probe(encoded, config.diagnostics.probe_pairs, seed=config.seed)
    return [EntanglementCallback(probe, PreferenceCollator(tokenizer.pad_token_id), every_n_steps=every,
                                 params=config.diagnostics.params, chunk_size=config.logps_chunk_size)]


def _checkpoint_step(checkpoint: str) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metrics logged after the checkpoint (they will be logged again)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    write_jsonl(path, [row for row in read_jsonl(path) if row.get("step", 0) <= step])
