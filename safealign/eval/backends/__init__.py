"""Generation backends: the one place that talks to models. See :mod:`.base` for the protocol."""

from safealign.eval.backends.base import ChatModel, Conversation, GenerationParams, split_prefill

__all__ = ["ChatModel", "Conversation", "GenerationParams", "split_prefill", "build_chat_model"]


def build_chat_model(config, *, model=None, tokenizer=None) -> ChatModel:
    """A ChatModel from a :class:`~safealign.eval.config.ModelConfig` (or any object with its fields).

    ``model``/``tokenizer`` reuse an already-loaded HF model instead of loading ``config.name``.
    """
    from safealign.eval.registries import BACKENDS

    cls = BACKENDS.get(config.backend)
    return cls.from_config(config, model=model, tokenizer=tokenizer)
