"""``load_model(spec)`` / ``load_tokenizer(spec)`` for every kind of model spec safealign accepts.

A spec is one of: ``"tiny-random"`` (tests), a built-in name (``smollm2-135m-instruct``), a ``.gguf``
file (de-quantised to float32), a local Hugging Face folder, a saved LoRA adapter folder (its base
model is loaded from ``base_model_name_or_path``), or a Hugging Face hub id, optionally pinned to a ``revision``
(branch, tag or commit; :func:`check_revision`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from safealign.errors import UserError, did_you_mean
from safealign.models.embedded import (
    BUILTIN_MODELS, ModelUnavailableError, damaged_message, ensure_embedded, hub_reachable,
)
from safealign.models.lora import (
    ADAPTER_CONFIG, LoraSettings, adapter_base_revision, adapter_base_spec, apply_lora, is_adapter_dir, load_adapter,
)

logger = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"
SPEC_ATTR = "safealign_spec"  # on every loaded model: the spec its weights came from (see models/identity.py)
REVISION_ATTR = "safealign_revision"  # beside it: the hub revision it was loaded at (None: the cache's main)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSource:
    """What a spec string names. ``kind``: tiny | builtin | gguf | dir | adapter | hub."""

    kind: str
    location: str  # name, path or hub id


def resolve_spec(spec: str) -> ModelSource:
    """Classify ``spec`` without loading or downloading anything."""
    if spec == TINY_RANDOM:
        return ModelSource("tiny", spec)
    if spec in BUILTIN_MODELS:
        return ModelSource("builtin", spec)
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"GGUF file not found: {spec}")
        return ModelSource("gguf", str(path.resolve()))
    if path.is_dir():
        if is_adapter_dir(path):
            return ModelSource("adapter", str(path.resolve()))
        if (path / "config.json").is_file():
            # absolute, so an adapter trained on it records a base that loads from any working dir
            return ModelSource("dir", str(path.resolve()))
        raise UserError(f"{spec}: folder has neither config.json (a model) nor adapter_config.json (a LoRA adapter)")
    if spec.startswith((".", "/", "~")) or path.exists() or not _HUB_ID.match(spec):
        raise UserError(
            f"model spec {spec!r} is not an existing folder or .gguf file, a hub id (owner/name), "
            f"or a built-in name ({', '.join(sorted(BUILTIN_MODELS))}, {TINY_RANDOM})"
        )
    return ModelSource("hub", spec)


_NOT_HUB = {"tiny": "the tiny random test model", "builtin": "a built-in model, whose weights the project pins",
            "gguf": "a .gguf file", "dir": "a local folder",
            "adapter": "a LoRA adapter folder, whose base its adapter_config.json names"}  # fmt: skip


def check_revision(source: ModelSource, revision: str | None, field: str = "revision") -> None:
    """A revision picks a commit of a hub repository; every other kind of spec names its files itself, so a
    revision given with one is refused (``field`` names the setting) rather than silently ignored."""
    if revision is None:
        return
    if not revision.strip():
        raise UserError(f"{field}: empty; give a branch, tag or commit of the hub repository, or leave it unset")
    if source.kind != "hub":
        raise UserError(f"{field}={revision!r}: a revision pins a commit of a Hugging Face hub id, but "
                        f"{source.location!r} is {_NOT_HUB[source.kind]}; leave {field} unset")


def resolve_device_dtype(device: str | torch.device | None = None,
                         dtype: str | torch.dtype | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA + bf16 when available (bf16 where the GPU computes in it, not where it is emulated: V100, T4), else
    CPU + fp32; explicit arguments win. A device this machine lacks is a UserError naming it."""
    resolved_device = _check_device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        bf16_ok = resolved_device.type == "cuda" and _native_bf16(resolved_device)
        return resolved_device, torch.bfloat16 if bf16_ok else torch.float32
    if isinstance(dtype, torch.dtype):
        return resolved_device, dtype
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
    return resolved_device, _DTYPES[dtype]


def _check_device(device: str | torch.device) -> torch.device:
    """``device`` as torch names it, refused before any weights load when torch does not know it (torch's own error
    is a RuntimeError listing its backends) or this machine lacks it (a CUDA or MPS device failed after the
    load)."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"device={str(device)!r}: torch knows no such device; use cpu, cuda, cuda:N or mps, or "
                        f"leave it unset ({_unset_means()})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={str(device)!r}: CUDA is not available here (torch {torch.__version__}); use "
                        f"device=cpu or leave it unset ({_unset_means()})")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(f"device={str(device)!r}: this machine has {count} CUDA device{'s' * (count != 1)} "
                        f"({', '.join(f'cuda:{i}' for i in range(count))})")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device={str(device)!r}: MPS is not available here; use device=cpu or leave it unset "
                        f"({_unset_means()})")
    return resolved


def _unset_means() -> str:
    """What a device left unset gets on this machine, and whether CUDA and MPS are available."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    return (f"here unset means {'cuda' if cuda else 'cpu'}: CUDA is {'' if cuda else 'not '}available, MPS is "
            f"{'' if mps else 'not '}available")


def _native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes in bf16 itself (compute capability 8.0+); torch's default answer also
    counts emulation, which runs slower than fp32."""
    if device.index is None:  # the current device, as torch asks it
        return torch.cuda.is_bf16_supported(including_emulation=False)
    with torch.cuda.device(device.index):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def load_tokenizer(spec: str, *, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    """The tokenizer for ``spec`` (a hub id at ``revision``), with a pad token (eos when it has none) and its chat
    template kept."""
    source = resolve_spec(spec)
    check_revision(source, revision)
    if source.kind == "tiny":
        from safealign.models.tiny import tiny_tokenizer

        return _prepare_tokenizer(tiny_tokenizer())
    if source.kind == "adapter" and not (Path(source.location) / "tokenizer_config.json").is_file():
        base, base_revision = _adapter_base(source)
        return load_tokenizer(base, trust_remote_code=trust_remote_code, revision=base_revision)
    from transformers import AutoTokenizer

    args, kwargs = _pretrained_args(source, revision)
    tokenizer = _from_pretrained(AutoTokenizer, source, *args, trust_remote_code=trust_remote_code, **kwargs)
    return _prepare_tokenizer(tokenizer)


def _prepare_tokenizer(tokenizer: Any) -> Any:
    pad_with_eos(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        logger.warning("tokenizer %s has no chat template; chat formatting will fail", tokenizer.name_or_path)
    return tokenizer


def pad_with_eos(tokenizer: Any) -> Any:
    """``tokenizer``, padding with its eos token when it has no pad token (Llama's, Mistral's): batched generation
    pads. Raises a UserError naming the tokenizer when it has neither."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_length(model: Any) -> int | None:
    """The model's position limit from its config (``max_position_embeddings``, GPT-2's ``n_positions``, ...), or
    None where the config names none: what a generation or a scored sequence must fit."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def load_model(
    spec: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    lora: LoraSettings | None = None,
    for_training: bool = False,
    attn_implementation: str | None = None,
) -> tuple[nn.Module, Any]:
    """Load ``(model, tokenizer)`` for ``spec``; optionally add a fresh LoRA adapter.

    ``revision``: a hub id's branch, tag or commit (None: what the cache or hub has as ``main``); refused for
    other specs. ``for_training`` puts the model in train mode without a KV cache (and makes a loaded adapter
    trainable); otherwise it is in eval mode. ``attn_implementation``: the attention kernels the model (an adapter's
    base) runs, as transformers names them (``eager``, ``sdpa``, ``flash_attention_2``, ...); None asks what it
    always did, transformers' default (SDPA where the model has it).
    """
    source = resolve_spec(spec)
    check_revision(source, revision)  # before a built-in model is fetched
    resolved_device, resolved_dtype = resolve_device_dtype(device, dtype)
    started = time.perf_counter()
    if source.kind == "adapter":
        if lora is not None:
            raise UserError(f"{spec} already is a LoRA adapter; pass lora=None to load (and continue training) it")
        base_spec, base_revision = _adapter_base(source)
        base, tokenizer = load_model(base_spec, device=resolved_device, dtype=resolved_dtype,
                                     trust_remote_code=trust_remote_code, revision=base_revision,
                                     attn_implementation=attn_implementation)
        from safealign.models.identity import check_adapter_base

        # the base it was trained on? Asked once the base loaded: online, an unpinned hub id's main is what the load
        # resolved (and fetched) just now, which the local cache knows only then
        check_adapter_base(source.location, base_spec, base_revision)
        if (Path(source.location) / "tokenizer_config.json").is_file():
            tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code)
        model = load_adapter(base, source.location, trainable=for_training).to(resolved_device)
    else:
        model = _load_weights(source, resolved_dtype, trust_remote_code, revision,
                              attn_implementation).to(resolved_device)
        # Adapters saved later record this as their base, so keep it a spec that loads anywhere.
        model.name_or_path = source.location
        model.config._name_or_path = source.location
        tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code, revision=revision)
        if lora is not None:
            model = apply_lora(model, lora, revision=revision)  # the adapter it saves names its base's revision
    if source.kind in ("dir", "adapter"):
        from safealign.models.heads import load_heads

        if load_heads(model, source.location):  # a multi-head (MAH-DPO) model's extra heads
            logger.info("%s: attached its extra LM heads", spec)
    _set_mode(model, for_training)
    setattr(model, SPEC_ATTR, source.location)
    setattr(model, REVISION_ATTR, revision)
    logger.info("loaded %s (%s, %s on %s) in %.1f s", spec, source.kind, resolved_dtype, resolved_device,
                time.perf_counter() - started)
    return model, tokenizer


def merge_adapter(model: nn.Module) -> nn.Module:
    """Fold a loaded LoRA adapter into its base weights (generation skips the LoRA detour); other models pass.

    The merged model keeps the adapter's spec, which names exactly these weights; without one (an adapter
    attached in memory) the base's spec would be wrong for them, so it is dropped.
    """
    if not hasattr(model, "merge_and_unload"):
        return model
    spec = model.__dict__.get(SPEC_ATTR)  # the adapter's own, not the base's that peft would forward to
    revision = model.__dict__.get(REVISION_ATTR)
    merged = model.merge_and_unload()
    merged.__dict__.pop(SPEC_ATTR, None)
    merged.__dict__.pop(REVISION_ATTR, None)
    if spec is not None:
        setattr(merged, SPEC_ATTR, spec)
        setattr(merged, REVISION_ATTR, revision)
    return merged


def _adapter_base(source: ModelSource) -> tuple[str, str | None]:
    """The base an adapter folder names and the hub revision it was trained at (None: its main), both from its
    adapter_config.json (``base_model_name_or_path``, peft's ``revision``)."""
    base = adapter_base_spec(source.location)
    try:
        base_source = resolve_spec(base)
    except UserError as exc:
        raise UserError(f"adapter {source.location} was trained on base model {base!r}, which cannot be loaded "
                        f"here ({exc}); fix base_model_name_or_path in its adapter_config.json") from None
    if base_source.kind == "adapter":
        raise UserError(f"adapter {source.location}: its base {base!r} is itself an adapter; merge it first")
    revision = adapter_base_revision(source.location)
    check_revision(base_source, revision, f"{Path(source.location) / ADAPTER_CONFIG}: revision")
    return base, revision


def _load_weights(source: ModelSource, dtype: torch.dtype, trust_remote_code: bool,
                  revision: str | None = None, attn_implementation: str | None = None) -> nn.Module:
    if source.kind == "tiny":
        from safealign.models.tiny import tiny_model

        model = tiny_model().to(dtype)
        if attn_implementation is not None:
            try:
                model.set_attn_implementation(attn_implementation)
            except (ImportError, ValueError) as exc:
                raise UserError(_attention_refused(source, attn_implementation, exc)) from exc
        return model
    from transformers import AutoModelForCausalLM

    args, kwargs = _pretrained_args(source, revision)
    if attn_implementation is not None:  # unset: from_pretrained is asked exactly what it always was
        kwargs["attn_implementation"] = attn_implementation
    # A GGUF is de-quantised to float32 first; the cast to the run's dtype follows.
    load_dtype = torch.float32 if source.kind == "gguf" else dtype
    model = _from_pretrained(AutoModelForCausalLM, source, *args, dtype=load_dtype,
                             trust_remote_code=trust_remote_code, **kwargs)
    return model.to(dtype)


def _pretrained_args(source: ModelSource, revision: str | None = None) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Positional path and keyword arguments for ``from_pretrained`` on this source (a hub id's ``revision`` only
    when given, so an unpinned load asks exactly what it always did)."""
    if source.kind == "builtin":
        return (str(ensure_embedded(source.location)),), {}
    if source.kind == "gguf":
        path = Path(source.location)
        return (str(path.parent),), {"gguf_file": path.name}
    if source.kind == "hub":
        # Offline, only the local Hugging Face cache can answer; asking the network would hang.
        pinned = {"revision": revision} if revision is not None else {}
        return (source.location,), {"local_files_only": not hub_reachable(source.location), **pinned}
    return (source.location,), {}


def _from_pretrained(cls: Any, source: ModelSource, *args: Any, **kwargs: Any) -> Any:
    offline = source.kind != "hub" or bool(kwargs.get("local_files_only"))
    try:
        with _hub_offline(offline):
            return cls.from_pretrained(*args, **kwargs)
    except OSError as exc:
        revision = kwargs.get("revision")
        if source.kind == "hub" and kwargs.get("local_files_only"):
            as_hub = "not in the local hub cache, and the hub is not reachable"
            raise ModelUnavailableError(_no_such_folder(source.location, as_hub)
                                        or _not_in_the_cache(source.location, revision)) from exc
        _damaged_builtin(source, args, exc)
        if source.kind == "hub":
            as_hub = f"not one the hub could give ({' '.join(str(exc).split())})"
            raise UserError(_no_such_folder(source.location, as_hub)
                            or _not_on_the_hub(source.location, exc, revision)) from exc
        raise
    except (UserError, MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:  # safetensors, tokenizers and JSON errors name no file
        attention = kwargs.get("attn_implementation")
        if attention is not None and isinstance(exc, (ImportError, ValueError)) and "attention" in str(exc).lower():
            raise UserError(_attention_refused(source, attention, exc)) from exc  # not a damaged cache entry
        _damaged_builtin(source, args, exc)
        raise


def _attention_refused(source: ModelSource, attn_implementation: str, exc: BaseException) -> str:
    """transformers' refusal of an attention implementation (its package missing, the model or device without
    it), in its own words, naming the setting."""
    why = " ".join(str(exc).split())
    return (f"attn_implementation={attn_implementation!r}: {source.location} cannot load with it ({why}); "
            "install what it needs (flash_attention_2: the flash-attn package, on CUDA) or leave "
            "attn_implementation unset for transformers' default (SDPA)")


def _no_such_folder(spec: str, as_hub: str) -> str | None:
    """A hub id the hub (or the offline cache) could not give whose owner part is a folder here: most likely a
    folder mistyped or not written yet (``outputs/final``), named as such rather than sent to the hub (``as_hub``:
    why it did not load as a hub id); None otherwise."""
    parent = Path(spec).parent
    if parent == Path(".") or not parent.is_dir():
        return None
    return f"model spec {spec!r}: no folder {Path(spec).resolve()} (the folder {parent.resolve()} exists); as a " \
           f"hub id, it is {as_hub}"


def _not_in_the_cache(repo_id: str, revision: str | None) -> str:
    """Offline, a hub id (at ``revision``) the local hub cache lacks: where to get it."""
    if revision is None:
        return (f"the Hugging Face hub is not reachable and {repo_id!r} is not in the local hub cache. Download it "
                f"on a connected machine (huggingface-cli download {repo_id} --local-dir DIR) and pass DIR as the "
                "model spec.")
    return (f"the Hugging Face hub is not reachable and {repo_id!r} at revision {revision!r} is not in the local "
            f"hub cache. Fetch it into the cache on a connected machine (huggingface-cli download {repo_id} "
            f"--revision {revision}), or download it with --local-dir DIR and pass DIR as the model spec with no "
            "revision.")


def _not_on_the_hub(spec: str, exc: OSError, revision: str | None = None) -> str:
    """A hub id the hub (reachable) could not give: most often a misspelt built-in name or hub id, else a gated or
    private repository (transformers' own words say which); the built-in names and the closest spec are named."""
    builtins = [*sorted(BUILTIN_MODELS), TINY_RANDOM]
    known = [*builtins, *(model.hub_id for model in BUILTIN_MODELS.values())]
    why = " ".join(str(exc).split())  # transformers' message spans lines; a UserError is one
    at = f" at revision {revision!r}" if revision is not None else ""
    return (f"model spec {spec!r}{at}: the Hugging Face hub could not give it ({why}){did_you_mean(spec, known)}; "
            f"built-in names: {', '.join(builtins)}; a model spec is also a local folder, a .gguf file or a LoRA "
            "adapter folder")


def _damaged_builtin(source: ModelSource, args: tuple[Any, ...], exc: BaseException) -> None:
    """A built-in model's cache entry that fails to load (a file cut short or overwritten, in an entry whose marker
    predates recorded sizes): a UserError naming the folder and the command that replaces it."""
    if source.kind == "builtin" and args:
        raise UserError(damaged_message(source.location, Path(args[0]),
                                        f"loading it failed ({type(exc).__name__}: {exc})")) from exc


@contextlib.contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    """Hub offline mode for one call: even with ``local_files_only`` transformers otherwise probes the
    hub (for adapter configs) with retries, which takes half a minute when the network is down."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _set_mode(model: nn.Module, for_training: bool) -> None:
    model.train(for_training)
    config = getattr(model, "config", None)
    if for_training and config is not None and hasattr(config, "use_cache"):
        config.use_cache = False  # a KV cache is useless in training and wastes memory
