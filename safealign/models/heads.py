"""Extra LM heads on a shared backbone (MAH-DPO, Shen et al. 2025, arXiv 2510.01167; docs/seed-methods.md).

Head 0 is the model's own LM head; heads ``1..K-1`` are ``nn.Linear`` copies of it, held in a ``ModuleList``
attribute :data:`HEADS_ATTR` of the underlying transformers model (under peft or DDP wrappers too). They are
trainable with LoRA and with full fine-tuning alike (head 0 too: under LoRA, MAH-DPO trains it as a peft
``modules_to_save`` copy, ``train_output_head`` of :class:`safealign.models.LoraSettings`, which the adapter
folder holds). The extra heads are saved beside the model as :data:`HEADS_FILE` (an adapter folder lacks them),
with the attribute each head trains in its metadata (:data:`NAMES_KEY`), so a run that continues them can check
its attribute list against theirs; :func:`safealign.models.load_model` attaches them again when a folder has that
file. Inference mixes heads
with user weights: :func:`mixed_heads` swaps in a head computing ``Σ_k w_k · logits_k`` (the official code's
ensemble), so ``generate`` and every log-prob path work unchanged.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from safealign.errors import UserError

HEADS_ATTR = "mah_heads"
HEADS_FILE = "mah_heads.safetensors"
NAMES_KEY = "attributes"  # HEADS_FILE metadata (str -> str): a JSON list of each head's attribute, head 0 first


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model under DDP/FSDP (``.module``) and peft (``get_base_model``) wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def extra_heads(model: nn.Module) -> nn.ModuleList | None:
    return getattr(base_model(model), HEADS_ATTR, None)


def lm_heads(model: nn.Module) -> list[nn.Module]:
    """``[head 0 (the model's own), head 1, ...]``."""
    return [base_model(model).get_output_embeddings(), *(extra_heads(model) or [])]


def head_attributes(model: nn.Module) -> list[str] | None:
    """The attribute each head trains, head 0 first; None without extra heads or when unknown (heads loaded from a
    file saved before the names were)."""
    return getattr(extra_heads(model), "attribute_names", None)


def heads_source(model: nn.Module) -> Path | None:
    """The :data:`HEADS_FILE` the extra heads were loaded from; None for heads added in memory."""
    return getattr(extra_heads(model), "source", None)


def add_heads(model: nn.Module, count: int, *, noise_std: float = 0.0, seed: int = 42,
              names: Sequence[str] | None = None) -> nn.Module:
    """Give ``model`` ``count`` heads in all (head 0 kept): the extra ones copy head 0's weights, plus
    ``N(0, noise_std²)`` noise with seed ``seed + 100·i`` for head ``i`` when ``noise_std > 0``. ``names``: the
    attribute each head trains, head 0 first, saved with the heads."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise UserError(f"a multi-head model needs at least 2 heads, got {count!r}")
    if names is not None and len(names) != count:
        raise UserError(f"{len(names)} attribute names for {count} heads: {list(names)}")
    host = base_model(model)
    if getattr(host, HEADS_ATTR, None) is not None:
        raise UserError(f"the model already has {len(getattr(host, HEADS_ATTR)) + 1} heads")
    head0 = host.get_output_embeddings()
    heads = nn.ModuleList()
    for i in range(1, count):
        head = _copy_head(head0)
        if noise_std > 0:
            gen = torch.Generator().manual_seed(seed + 100 * i)
            noise = torch.randn(head.weight.shape, generator=gen, dtype=torch.float32) * noise_std
            with torch.no_grad():
                head.weight.add_(noise.to(head.weight))
        heads.append(head)
    _label(heads, names, None)
    setattr(host, HEADS_ATTR, heads)
    return model


def _label(heads: nn.ModuleList, names: Sequence[str] | None, source: Path | None) -> None:
    """Plain attributes of the ModuleList (not submodules), so the names travel with the heads they describe."""
    heads.attribute_names = None if names is None else list(names)
    heads.source = source


def _copy_head(head0: nn.Module) -> nn.Linear:
    weight = head0.weight
    bias = getattr(head0, "bias", None)
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    return head.requires_grad_(True)


def save_heads(model: nn.Module, folder: str | Path) -> Path | None:
    """Write the extra heads to ``folder/HEADS_FILE``, with their attribute names when known; None when the model
    has none."""
    heads = extra_heads(model)
    if heads is None:
        return None
    path = Path(folder) / HEADS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}
    metadata = {"heads": json.dumps(len(heads) + 1)}
    if head_attributes(model) is not None:
        metadata[NAMES_KEY] = json.dumps(head_attributes(model))
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_heads(model: nn.Module, folder: str | Path) -> bool:
    """Attach (or overwrite) the extra heads saved in ``folder``, with their attribute names (None for a file saved
    before the names were); False when it has none."""
    path = Path(folder) / HEADS_FILE
    if not path.is_file():
        return False
    tensors = load_file(str(path))
    count = 1 + len({key.split(".", 1)[0] for key in tensors})
    names = _saved_names(path, count)
    if extra_heads(model) is None:
        add_heads(model, count)
    heads = extra_heads(model)
    if len(heads) + 1 != count:
        raise UserError(f"{path}: holds {count} heads but the model has {len(heads) + 1}")
    head0 = lm_heads(model)[0].weight
    heads.load_state_dict({k: v.to(head0.device, head0.dtype) for k, v in tensors.items()})
    if names is None:  # a file saved before the names were: those of heads already there stay (a resumed run's)
        names = head_attributes(model)
    _label(heads, names, path)
    return True


def _saved_names(path: Path, count: int) -> list[str] | None:
    """The attribute names in ``path``'s metadata; None when it has none (saved before they were)."""
    with safe_open(str(path), "pt") as f:
        text = (f.metadata() or {}).get(NAMES_KEY)
    if text is None:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or len(names) != count or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: metadata {NAMES_KEY!r} must be a JSON list of {count} attribute names (one per "
                        f"head), got {text!r}")
    return names


class MixedHead(nn.Module):
    """``Σ_k w_k · head_k(h)``: one head standing in for K weighted ones at inference."""

    def __init__(self, heads: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        self.heads = list(heads)  # not registered: the model owns them
        self.weights = [float(w) for w in weights]

    @property
    def weight(self) -> Tensor:
        """Head 0's weight: code that reads an output head's shape, dtype or device sees the heads' common ones."""
        return self.heads[0].weight

    def forward(self, hidden: Tensor) -> Tensor:
        return sum(w * head(hidden) for w, head in zip(self.weights, self.heads) if w != 0)


def check_weights(weights: Sequence[float], count: int) -> list[float]:
    values = [float(w) for w in weights]
    if len(values) != count:
        raise UserError(f"head weights: {len(values)} given for a model with {count} heads")
    if any(not torch.isfinite(torch.tensor(w)) for w in values) or not any(values):
        raise UserError(f"head weights must be finite and not all 0, got {values}")
    return values


@contextlib.contextmanager
def mixed_heads(model: nn.Module, weights: Sequence[float]) -> Iterator[nn.Module]:
    """Inside the block the model's output head is ``Σ_k w_k · logits_k`` (weights as given, e.g. summing to
    1; ``[0, 1, 0]`` selects head 1); the original head is restored after."""
    host = base_model(model)
    heads = lm_heads(model)
    values = check_weights(weights, len(heads))
    host.set_output_embeddings(MixedHead(heads, values))
    try:
        yield model
    finally:
        host.set_output_embeddings(heads[0])
