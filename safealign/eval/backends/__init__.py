"""Generation backends: the one place that talks to models. See :mod:`.base` for the protocol."""

from safealign.eval.backends.base import ChatModel, Conversation, GenerationParams, split_prefill

__all__ = ["ChatModel", "Conversation", "GenerationParams", "split_prefill", "build_chat_model", "chat_model_from_spec",
           "chat_model_identity", "config_identity"]


def build_chat_model(config, *, model=None, tokenizer=None) -> ChatModel:
    """A ChatModel from a :class:`~safealign.eval.config.ModelConfig` (or any object with its fields).

    ``model``/``tokenizer`` reuse an already-loaded HF model instead of loading ``config.name``.
    """
    from safealign.eval.registries import BACKENDS

    cls = BACKENDS.get(config.backend)
    return cls.from_config(config, model=model, tokenizer=tokenizer)


def chat_model_from_spec(spec: dict, where: str) -> ChatModel:
    """The ChatModel a ``ModelConfig`` mapping names (an attacker's or an LLM judge's ``{backend: openai, name:
    ...}``), its values assigned typed, never re-read as ``key=value`` text: ``system_prompt: null`` stays None
    (not the text 'None') and quotes in a text stay. ``where`` names the mapping in errors."""
    from safealign.config import Value, load_config
    from safealign.eval.config import ModelConfig

    return build_chat_model(load_config(ModelConfig, None, [Value(k, v, where) for k, v in spec.items()]))


def chat_model_identity(target: ChatModel) -> dict:
    """Which weights answer through ``target`` (safealign.models.identity): a local model's load spec or
    parameters; for a backend that loads weights by name itself (vLLM: ``target.spec``) that name's identity
    when it is a local or hub spec, else the name as a remote-style identity; the model name a remote
    endpoint was asked for; else unknown (a fake, a custom backend)."""
    from safealign.errors import UserError
    from safealign.models.identity import loaded_identity, model_identity, remote_identity

    inner = getattr(target, "model", None)  # an HF model, or a remote model's name
    if hasattr(inner, "state_dict"):
        return loaded_identity(inner)
    if isinstance(inner, str):
        return remote_identity(type(target).__name__, inner)
    spec = getattr(target, "spec", None)  # the name vLLM loaded: a folder, a hub id, or a name of its own
    if isinstance(spec, str):
        try:
            return model_identity(spec, getattr(target, "revision", None))
        except UserError:
            return remote_identity(getattr(target, "backend", type(target).__name__), spec)
    return {"spec": type(target).__name__, "kind": "unknown", "fingerprint": None}


def config_identity(config) -> dict:
    """What :func:`chat_model_identity` gives for the model ``build_chat_model(config)`` builds, known before it
    loads, so a run can check and claim its output directory first: on the hf backend the identity of the load
    spec as the loaded model records it (a folder by its absolute path, as ``load_model`` resolves it); on vllm
    that of the name vLLM is given, else the name as a remote-style identity; an endpoint's model name. Reads and
    hashes weight files; loads no model (a spec that names nothing is a UserError here, before any load)."""
    from safealign.errors import UserError
    from safealign.eval.registries import BACKENDS
    from safealign.models.identity import model_identity, remote_identity
    from safealign.models.load import resolve_spec

    cls = BACKENDS.get(config.backend)
    revision = getattr(config, "revision", None)
    if config.backend == "hf":
        return model_identity(resolve_spec(config.name).location, revision)
    if config.backend == "vllm":
        try:
            return model_identity(config.name, revision)
        except UserError:
            return remote_identity(getattr(cls, "backend", cls.__name__), config.name)
    if config.backend == "openai":
        return remote_identity(cls.__name__, config.name)
    return {"spec": cls.__name__, "kind": "unknown", "fingerprint": None}
