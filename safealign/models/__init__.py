"""Model loading: HF hub ids, local folders, GGUF files, the embedded default model, LoRA adapters.

``tiny`` (random test models) is imported on demand so this package does not pull in transformers.
"""

from safealign.models.embedded import DEFAULT_MODEL, ModelUnavailableError, ensure_embedded, is_cached
from safealign.models.load import TINY_RANDOM, load_model, load_tokenizer, resolve_device_dtype, resolve_spec
from safealign.models.lora import LoraSettings, apply_lora

__all__ = [
    "DEFAULT_MODEL",
    "TINY_RANDOM",
    "LoraSettings",
    "ModelUnavailableError",
    "apply_lora",
    "ensure_embedded",
    "is_cached",
    "load_model",
    "load_tokenizer",
    "resolve_device_dtype",
    "resolve_spec",
]
