"""The training recipe schema (``safealign train CONFIG.yaml key=value ...``)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from safealign import checks
from safealign.errors import UserError, close_match


@dataclass
class DataConfig:
    path: str = "???"
    format: str = "auto"
    split: Optional[str] = None
    columns: dict[str, str] = field(default_factory=dict)
    harmful: Optional[bool] = None  # dataset-level switch: fills rows without a `harmful` flag
    # split each preference pair into a desirable (chosen) and an undesirable (rejected) example, for
    # unpaired losses (KTO, BCO) on paired data such as HH-RLHF (TRL's unpair_preference_dataset)
    unpair: bool = False
    # row transforms run in order after parsing, e.g. [{name: safety_order}] for SafeDPO or
    # [{name: flags_from_harmful}, {name: recovery, params: {probability: 0.5}}] (docs/safety-training.md)
    transforms: list[Any] = field(default_factory=list)
    limit: Optional[int] = None
    max_length: int = 512
    max_prompt_length: int = 256

    def validate(self, prefix: str = "data.") -> None:
        from safealign.data.row_transforms import validate_specs

        validate_specs(self.transforms, prefix + "transforms")
        checks.at_least(prefix + "limit", self.limit, 1)
        checks.at_least(prefix + "max_length", self.max_length, 2)
        checks.at_least(prefix + "max_prompt_length", self.max_prompt_length, 1)
        if self.max_prompt_length >= self.max_length:
            raise UserError(f"{prefix}max_prompt_length ({self.max_prompt_length}) must be below "
                                   f"{prefix}max_length ({self.max_length}), or no response token fits")


@dataclass
class LossConfig:
    name: str = "dpo"
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)

    def validate(self, prefix: str = "losses.0.") -> None:
        checks.at_least(prefix + "weight", self.weight, 0)
        # the loss's own parameters are checked against its signature and ranges when the loss is built


@dataclass
class ReferenceConfig:
    """Where reference log-probs come from and which prompt view the reference sees.

    ``transform`` selects the E-variant: ``identity`` is the plain loss; ``safety_prefix`` makes
    E-DPO/E-IPO/... (params e.g. ``{prefix: community_guidelines, apply_to: harmful}``).
    ``mode``: ``cache`` precomputes once and reuses across runs; ``live`` runs a no-grad forward
    each step (adapter disabled for LoRA, else a frozen copy or ``model``).
    """

    transform: str = "identity"
    transform_params: dict[str, Any] = field(default_factory=dict)
    mode: str = "cache"
    model: Optional[str] = None  # a separate reference model; default: the policy's starting weights
    cache_dir: Optional[str] = None  # default: <safealign cache>/reference
    # the cached reference pass (no autograd, rows sorted longest first): at most batch_size pairs and, when
    # set, at most batch_tokens padded tokens per forward; on a CUDA out-of-memory error the batch is halved
    # and retried, so a generous batch_size finds the largest batch that fits (docs/performance.md)
    batch_size: int = 8
    batch_tokens: Optional[int] = None

    def validate(self, prefix: str = "reference.") -> None:
        checks.at_least(prefix + "batch_size", self.batch_size, 1)
        checks.at_least(prefix + "batch_tokens", self.batch_tokens, 2)


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"
    last_layers: Optional[int] = None  # adapt only the last N blocks (cheaper backward)

    def validate(self, prefix: str = "lora.") -> None:
        if self.enabled:
            checks.at_least(prefix + "r", self.r, 1)
            checks.positive(prefix + "alpha", self.alpha)
            checks.within(prefix + "dropout", self.dropout, 0, 1, open_high=True)
            checks.at_least(prefix + "last_layers", self.last_layers, 1)


@dataclass
class DiagnosticsConfig:
    """Gradient-entanglement probe during training (arXiv 2410.13828), written to diagnostics.jsonl."""

    entanglement_every: int = 0  # measure every N optimizer steps (and at start and end); 0 = off
    probe_pairs: int = 16
    params: str = "trainable"  # see safealign.train.grads.select_parameters

    def validate(self, prefix: str = "diagnostics.") -> None:
        checks.at_least(prefix + "entanglement_every", self.entanglement_every, 0)
        checks.at_least(prefix + "probe_pairs", self.probe_pairs, 1)


@dataclass
class ObjectiveConfig:
    """A training objective over hidden states (circuit breakers, ReFAT; docs/objectives.md) that replaces the
    preference ``losses``: ``name`` as listed by ``safealign losses``, ``params`` its parameters. Unset: the
    ``losses`` train. Its parameters and data needs are checked against the objective before any model loads."""

    name: Optional[str] = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    trainer: str = "preference"  # the recipe's trainer key (safealign train): this schema is the preference trainer's
    model: str = "smollm2-135m-instruct"
    # a hub id's branch, tag or commit (None: what the local cache or hub has as main); also where reference.model
    # names the same hub id (same_model_revision). A saved adapter records it as its base's revision
    model_revision: Optional[str] = None
    output_dir: str = "runs/train"
    trust_remote_code: bool = False
    # the attention kernels the policy and a reference.model load with (transformers' attn_implementation: eager,
    # sdpa, flash_attention_2, ...; check_attn_implementation). None: transformers' default, SDPA where the model
    # has it. With flash attention, packing: pairs runs flash-attention's varlen kernels (docs/performance.md)
    attn_implementation: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    losses: list[LossConfig] = field(default_factory=lambda: [LossConfig()])
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    learning_rate: float = 5e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_steps: float = 0.0  # int = steps, float in [0, 1) = ratio of total steps
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: Optional[int] = 2
    seed: int = 0
    gradient_checkpointing: bool = False  # activation checkpointing: recompute each block's activations in backward
    # how response log-probs are computed (safealign/train/logps.py, docs/performance.md): "fused" runs the LM
    # head and log-softmax over response positions only, logps_chunk_size at a time, recomputing each chunk's
    # logits in backward; "naive" takes the model's full (N, T, V) logits (the baseline it is tested against)
    logps: str = "fused"
    logps_chunk_size: int = 1024
    # "pairs": a pair's chosen and rejected sequences share one row, position ids restarting per sequence,
    # so no padding sits between them (padding-free; the same losses; pair losses only); "off": padded rows
    packing: str = "off"
    # batches of similar length (transformers' LengthGroupedSampler): each epoch's shuffled order is cut
    # into megabatches of up to 50 batches, each sorted longest first, so batches hold similar lengths and pad
    # less; the batch order and composition differ from the plain shuffle, so the trained model differs
    group_by_length: bool = False
    # "adamw" (TrainingArguments' default AdamW); with bitsandbytes installed: "adamw_8bit", "paged_adamw_8bit"
    # (8-bit states, paged to CPU under memory pressure) or "paged_adamw_32bit" (docs/performance.md)
    optimizer: str = "adamw"
    # pairwise-normalised update (arXiv 2410.13828): each pair's chosen and rejected log-prob gradients are
    # normalised to unit length before the loss weights them; ~2x the cost of a step (safealign.train.normalized)
    normalize_pair_gradients: bool = False
    report_to: list[str] = field(default_factory=lambda: ["none"])
    # any other transformers.TrainingArguments field (e.g. {deepspeed: ds.json, fsdp: ...}); a field this schema
    # sets from its own key, or a name TrainingArguments lacks, is refused (check_training_args)
    training_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Value ranges, before anything loads (training calls it again: fields may be set after init)."""
        if self.trainer != "preference":
            raise UserError(f"trainer: {self.trainer!r} recipes have their own schema (safealign train picks it); "
                            "this one is the preference trainer's")
        check_model_revision(self.model, self.model_revision)
        check_attn_implementation(self.attn_implementation)
        self.data.validate()
        secrets = [k for k in self.training_args if re.search(r"token|secret|password|api_key", str(k), re.I)]
        if secrets:  # they would be written to config.yaml, fingerprint.json and the report
            raise UserError(f"training_args.{secrets[0]}: a secret does not belong in a config (it is saved with the "
                            "run and shown in its report); set it in the environment (HF_TOKEN for the Hub)")
        check_training_args(self.training_args)
        if not self.losses:
            raise UserError("losses is empty: name at least one loss, e.g. losses: [{name: dpo}]")
        for i, loss in enumerate(self.losses):
            loss.validate(f"losses.{i}.")
        if not any(loss.weight > 0 for loss in self.losses):
            raise UserError("losses: every weight is 0, so nothing would be trained")
        self.reference.validate()
        self.lora.validate()
        self.diagnostics.validate()
        checks.at_least("learning_rate", self.learning_rate, 0, "0 is allowed: a run that only measures")
        checks.positive("num_train_epochs", self.num_train_epochs)
        if self.max_steps == 0 or self.max_steps < -1:
            raise UserError(f"max_steps must be -1 (use num_train_epochs) or >= 1, got {self.max_steps}")
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps",
                    "logps_chunk_size"):  # fmt: skip
            checks.at_least(key, getattr(self, key), 1)
        checks.at_least("warmup_steps", self.warmup_steps, 0)
        checks.at_least("weight_decay", self.weight_decay, 0)
        checks.at_least("max_grad_norm", self.max_grad_norm, 0)
        checks.at_least("save_total_limit", self.save_total_limit, 1)
        for key, allowed in (("logps", LOGPS_IMPLS), ("packing", PACKING_MODES), ("optimizer", tuple(OPTIMIZERS))):
            if getattr(self, key) not in allowed:
                raise UserError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")


def check_model_revision(model: str, revision: Optional[str], key: str = "model_revision") -> None:
    """A revision pins which commit of the hub id ``model`` names is loaded; with any other spec (a built-in name,
    a local folder, a .gguf file, an adapter, whose adapter_config.json names its base and that base's revision) it
    would be ignored, so it is refused when the config loads, naming ``key``. Loads torch only when it is set."""
    if revision is None:
        return
    from safealign.models.load import check_revision, resolve_spec

    check_revision(resolve_spec(model), revision, key)


def check_attn_implementation(name: Optional[str], key: str = "attn_implementation") -> None:
    """``name`` must be an attention implementation the installed transformers knows (``eager`` and the names in
    its ``ALL_ATTENTION_FUNCTIONS``, less the ``paged|`` ones, which serve generation's paged KV cache): a typo
    would otherwise surface only when the model loads, after the data and the run directory, or as a hub kernel
    transformers tries to download. Whether the model and machine can run it (flash_attention_2 needs the
    flash-attn package and CUDA) is checked when it loads (safealign.models.load). Loads transformers only when set."""
    if name is None:
        return
    import transformers
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = sorted({"eager", *(k for k in ALL_ATTENTION_FUNCTIONS.valid_keys() if not k.startswith("paged|"))})
    if name not in known:
        raise UserError(f"{key}={name!r} must be one of {', '.join(known)} (the attention implementations "
                        f"transformers {transformers.__version__} knows), or left unset for its default (SDPA)")


def same_model_revision(spec: Optional[str], model: str, revision: Optional[str]) -> Optional[str]:
    """The revision ``spec`` loads at: ``model_revision`` where it names the policy's own ``model`` (a
    ``reference.model`` or a diagnostic's ``ref`` naming the same hub id is the same model, so it loads at the same
    commit); None for any other spec, loaded as it names itself (a hub id at its main, an adapter's base at the
    revision its adapter_config.json records). The default reference, the policy's starting weights, needs no
    load: it is the policy as loaded."""
    return revision if spec == model else None


# TrainingArguments fields safealign.train.run.training_arguments sets from this schema's own keys (field -> key)
SET_BY_CONFIG = {"output_dir": "output_dir", "learning_rate": "learning_rate", "num_train_epochs": "num_train_epochs",
                 "max_steps": "max_steps", "per_device_train_batch_size": "per_device_train_batch_size",
                 "gradient_accumulation_steps": "gradient_accumulation_steps", "warmup_steps": "warmup_steps",
                 "lr_scheduler_type": "lr_scheduler_type", "weight_decay": "weight_decay",
                 "max_grad_norm": "max_grad_norm", "logging_steps": "logging_steps", "save_steps": "save_steps",
                 "save_total_limit": "save_total_limit", "seed": "seed", "data_seed": "seed",
                 "report_to": "report_to", "gradient_checkpointing": "gradient_checkpointing", "optim": "optimizer",
                 "group_by_length": "group_by_length"}
# and those it sets itself, with why
SET_BY_SAFEALIGN = {"save_strategy": "a checkpoint every save_steps, which --resume continues from",
                    "remove_unused_columns": "the collators need every column the data encoder makes",
                    "dataloader_pin_memory": "on exactly when CUDA is available"}


def check_training_args(training_args: dict[str, Any]) -> None:
    """Each ``training_args`` key must be a ``transformers.TrainingArguments`` field this schema does not set itself:
    ``TrainingArguments(**training_args)`` fails on a typo (TypeError) or a field given twice ("multiple values"),
    and it runs only when the first stage trains -- in a demo after the pair build and the base evaluation. Checked
    here instead, where a config is validated; transformers (and torch) load only when there is a key to check."""
    if not training_args:
        return
    from transformers import TrainingArguments

    fields = [f.name for f in dataclasses.fields(TrainingArguments) if f.init and not f.name.startswith("_")]
    for key in map(str, training_args):
        if key in SET_BY_CONFIG:
            own = SET_BY_CONFIG[key]
            raise UserError(f"training_args.{key}: the config sets it from its own key {own}, so it would be given "
                            f"twice: set {own} instead")
        if key in SET_BY_SAFEALIGN:
            raise UserError(f"training_args.{key}: safealign sets it itself ({SET_BY_SAFEALIGN[key]}); remove it")
        if key not in fields:
            match = close_match(key, sorted({*fields, *SET_BY_CONFIG}))
            hint = ""
            if match in SET_BY_CONFIG:
                hint = f" (did you mean the config key {SET_BY_CONFIG[match]}?)"
            elif match:
                hint = f" (did you mean {match!r}?)"
            raise UserError(f"training_args.{key}: not a field of transformers.TrainingArguments{hint}; "
                            "training_args passes the fields of TrainingArguments that the config has no key for")


LOGPS_IMPLS = ("fused", "naive")  # safealign.train.logps.LOGPS_IMPLS, kept here so a config check loads no torch
PACKING_MODES = ("off", "pairs")
# optimizer -> TrainingArguments.optim (None: its default AdamW)
OPTIMIZERS = {"adamw": None, "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
              "paged_adamw_32bit": "paged_adamw_32bit"}
