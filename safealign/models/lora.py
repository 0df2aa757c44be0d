"""LoRA adapters through peft: settings, applying them, and loading a saved adapter folder."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from safealign.errors import UserError

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
# beside it, written by safealign: the identity of the base the adapter was trained on (safealign.models.identity)
BASE_RECORD = "base_identity.json"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyperparameters. ``target_modules="all-linear"`` adapts every linear layer but the LM head."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    bias: str = "none"  # peft: "none" | "all" | "lora_only"
    # adapt only the last N transformer blocks: backward then stops there, so a step costs less
    last_layers: int | None = None
    # also train the output head, as a full trainable copy (peft ``modules_to_save``): the frozen original stays
    # what the adapter-disabled model (the reference) uses, and tied input embeddings stay frozen as they are
    train_output_head: bool = False

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise UserError(f"LoRA r must be a positive integer, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.bias not in {"none", "all", "lora_only"}:
            raise UserError(f"LoRA bias must be one of none, all, lora_only; got {self.bias!r}")
        if self.last_layers is not None and self.last_layers <= 0:
            raise UserError(f"LoRA last_layers must be a positive integer or None, got {self.last_layers}")


def apply_lora(model: nn.Module, settings: LoraSettings, *, revision: str | None = None) -> nn.Module:
    """Wrap ``model`` in a trainable peft LoRA adapter (base weights frozen); returns the PeftModel.

    ``revision``: the hub revision ``model`` was loaded at; the saved adapter's ``adapter_config.json`` records it
    (peft's ``revision``) beside its base, so loading the adapter loads the base at it (:func:`adapter_base_revision`).
    """
    from peft import LoraConfig, get_peft_model

    targets: Any = settings.target_modules
    if not isinstance(targets, str):
        targets = list(targets)
    elif targets == "all-linear" and settings.last_layers is not None:
        targets = _linear_names(model)  # peft's layer selection needs explicit module names
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias=settings.bias,
        task_type="CAUSAL_LM",
        layers_to_transform=_last_layers(model, settings.last_layers),
        modules_to_save=[_output_head_name(model)] if settings.train_output_head else None,
        revision=revision,
    )
    with _quiet_peft(), warnings.catch_warnings():
        # a tied head in modules_to_save: peft warns that the copy is not tied to the embeddings; that is the intent
        # (the input embeddings stay frozen), said once below in words that fit
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings=True.*tied layer is part of the adapter")
        peft_model = get_peft_model(model, config)
    if settings.train_output_head and _tied_head(model):
        logger.info("the output head is tied to the input embeddings: it trains as a separate copy, so the input "
                    "embeddings stay frozen and the trained head is no longer tied to them")
    trainable, total = _count_parameters(peft_model)
    logger.info("LoRA r=%d on %s: %d of %d parameters trainable (%.2f%%)",
                settings.r, settings.target_modules, trainable, total, 100.0 * trainable / max(total, 1))
    return peft_model


def _linear_names(model: nn.Module) -> list[str]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, nn.Linear) and module is not head})


def _output_head_name(model: nn.Module) -> str:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    name = next((n for n, m in model.named_modules() if head is not None and m is head and n), None)
    if name is None:
        raise UserError(f"{type(model).__name__} exposes no output head module (get_output_embeddings) to train")
    return name


def _tied_head(model: nn.Module) -> bool:
    inputs = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = getattr(model.get_output_embeddings(), "original_module", model.get_output_embeddings())
    return inputs is not None and getattr(head, "weight", None) is getattr(inputs, "weight", object())


def _last_layers(model: nn.Module, last: int | None) -> list[int] | None:
    if last is None:
        return None
    total = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(total, int):
        raise UserError("LoRA last_layers needs a model config with num_hidden_layers")
    return list(range(max(0, total - last), total))


def _count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base_spec(path: str | Path) -> str:
    """The base model an adapter folder was trained on (``base_model_name_or_path``)."""
    config_path = Path(path) / ADAPTER_CONFIG
    try:
        base = json.loads(config_path.read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{config_path}: unreadable adapter config ({exc})") from None
    if not base or not isinstance(base, str):
        raise UserError(
            f"{config_path}: field base_model_name_or_path is missing; cannot tell which base model to load"
        )
    return base


def adapter_base_revision(path: str | Path) -> str | None:
    """The hub revision of the base an adapter folder was trained on (peft's ``revision``); None: its base's main,
    or a base that is no hub id."""
    revision = json.loads((Path(path) / ADAPTER_CONFIG).read_text()).get("revision")
    return revision if isinstance(revision, str) else None


def load_adapter(base: nn.Module, path: str | Path, *, trainable: bool) -> nn.Module:
    """Attach the saved adapter in ``path`` to ``base``; frozen unless ``trainable``. An adapter that does not fit
    ``base`` (another architecture or size: peft's size mismatch, missing target modules) is a UserError naming both."""
    from peft import PeftModel

    try:
        with _quiet_peft():
            return PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
    except (UserError, MemoryError, torch.OutOfMemoryError):
        raise
    except (RuntimeError, ValueError, KeyError) as exc:
        name = getattr(base, "name_or_path", None) or type(base).__name__
        why = " ".join(str(exc).split())  # peft's message lists every mismatched tensor, over many lines
        why = why if len(why) <= 300 else why[:297] + "..."
        raise UserError(f"adapter {path} does not fit the base model {name} it was loaded onto ({why}); it was "
                        "trained on a base of another architecture or size: load it onto that base (its "
                        f"{ADAPTER_CONFIG}'s base_model_name_or_path), or retrain it on this one") from exc


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft reads a deprecated transformers alias whenever it wraps a model: a warning no user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
        yield
