"""The ChatModel protocol every backend implements, and the generation parameters it takes.

A conversation is a tuple of ``{"role", "content"}`` messages. When its last message has role
``assistant`` it is a *prefill*: the model continues that text instead of starting a fresh turn, and
the returned ``Completion.text`` holds only the continuation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any, Protocol, Sequence, runtime_checkable

from safealign.errors import UserError
from safealign.types import Completion, Message

Conversation = tuple[Message, ...]


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    batch_size: int = 16
    seed: int = 0
    # False: send the single message's content as the raw prompt, no chat template (classifier judges)
    chat_template: bool = True
    # True: the tokenizer adds its special tokens (BOS) to the rendered prompt, as HarmBench and WildGuard
    # tokenise their raw classifier prompts; chat templates already contain BOS, so the default is False.
    add_special_tokens: bool = False
    max_prompt_tokens: int | None = None  # local backends: longer prompts are not run (an error per attempt)
    # One sampling seed per conversation of a generate call, in its order (:func:`with_seeds`: from each
    # conversation's key, e.g. its attempt's), so a sample depends on what is answered, not on its place in the
    # call; None: request ``i`` gets ``request_seed(seed, i)`` (:func:`conversation_seeds`). Unused when greedy.
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:  # library callers get the same range checks as EvalConfig.generation
        from safealign.checks import at_least

        at_least("generation.max_new_tokens", self.max_new_tokens, 1)
        at_least("generation.batch_size", self.batch_size, 1)
        at_least("generation.temperature", self.temperature, 0)


@runtime_checkable
class ChatModel(Protocol):
    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Completion]:
        """One Completion per conversation, in order; failures are ``Completion(text="", error=...)``."""
        ...


def request_seed(seed: int, index: int) -> int:
    """The sampling seed of request ``index`` (0-based) of a batch generated with ``seed`` and no per-conversation
    ``seeds`` (:func:`conversation_seeds`), for backends that seed every request on its own (vLLM's
    ``SamplingParams.seed``, the ``seed`` of an OpenAI-compatible request). One shared seed would make identical
    conversations of one batch (TAP's branches, PAIR's streams, zero-shot's cases) come back identical. A seed by
    place repeats across calls: row ``i`` of every call draws alike, so callers that know what they ask (the
    evaluation's attempts, search queries, over-refusal prompts) pass ``seeds`` instead (:func:`with_seeds`).
    Without them the HF backend draws each batch from one stream seeded with ``request_seed(seed, start)``,
    ``start`` the batch's offset in the call, so the rows of a batch differ as successive draws and the batches
    differ from each other. The first 31 bits of
    ``sha256("<seed>:<index>")``: deterministic, so a re-run draws the same seeds, and unlike ``seed + index``
    it does not repeat the seeds of a neighbouring ``seed``."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def key_seed(seed: int, *key: Any) -> int:
    """The sampling seed of the conversation named by ``key`` (an attempt's behavior id, attack and attempt id; a
    search query's behavior, stream and round; an over-refusal prompt's id) in a run seeded with ``seed``: the first
    31 bits of ``sha256`` of the seed and the key's parts. It depends on nothing else, so the same attempt draws the
    same sample in any batch, at any place in it, and in a resumed run, and two attempts never share their draws."""
    text = "\x1f".join([str(seed), "key", *map(str, key)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def with_seeds(params: GenerationParams, keys: Sequence[Sequence[Any]]) -> GenerationParams:
    """``params`` with the seed of each key (:func:`key_seed`), one per conversation of the call, in order; greedy
    ``params`` are returned as they are (seeds change nothing there, and a greedy run's requests stay as they were)."""
    if not params.do_sample:
        return params
    return replace(params, seeds=tuple(key_seed(params.seed, *key) for key in keys))


def conversation_seeds(params: GenerationParams, n: int) -> list[int]:
    """The sampling seed of each of the ``n`` conversations of a call: ``params.seeds``, else request ``i``'s
    :func:`request_seed` (the caller named no conversation: a sample then depends on its place in the call)."""
    if params.seeds is None:
        return [request_seed(params.seed, i) for i in range(n)]
    if len(params.seeds) != n:
        raise ValueError(f"generation: {len(params.seeds)} sampling seeds for {n} conversations (GenerationParams."
                         "seeds holds one per conversation of the call, in order)")
    return list(params.seeds)


def prompt_limit(params: GenerationParams, context: int | None) -> tuple[int | None, str]:
    """The most prompt tokens a local backend starts a generation from, and where that number comes from:
    ``params.max_prompt_tokens``, else the model's context length ``context`` minus ``max_new_tokens``."""
    if params.max_prompt_tokens is not None:
        return params.max_prompt_tokens, "generation.max_prompt_tokens"
    if context is None:
        return None, "unknown context length"
    return context - params.max_new_tokens, f"context length {context} - max_new_tokens {params.max_new_tokens}"


def too_long(lengths: Sequence[int], limit: int | None, source: str, logger: Any) -> list[Completion | None]:
    """Per prompt: an error Completion when its ``lengths`` entry is over ``limit`` (it is not run), else None."""
    out: list[Completion | None] = [None] * len(lengths)
    for i, n in enumerate(lengths):
        if limit is not None and n > limit:  # past the context the model would produce garbage, or fail
            out[i] = Completion(text="", error=f"prompt too long: {n} tokens, over {limit} ({source})",
                                meta={"prompt_tokens": n, "too_long": True})  # fmt: skip
    if any(c is not None for c in out):
        logger.warning("%d of %d prompts are longer than %s tokens (%s): not run, recorded as errors",
                       sum(c is not None for c in out), len(out), limit, source)  # fmt: skip
    return out


def split_prefill(conversation: Conversation) -> tuple[Conversation, str]:
    """``(messages, prefill)``: a trailing assistant message is a prefill, not a finished turn."""
    if conversation and conversation[-1].get("role") == "assistant":
        return conversation[:-1], conversation[-1].get("content", "")
    return conversation, ""


def with_system_prompt(conversation: Conversation, system_prompt: str | None) -> Conversation:
    """Prepend a default system prompt unless the conversation already has one."""
    if not system_prompt or any(m.get("role") == "system" for m in conversation):
        return conversation
    return ({"role": "system", "content": system_prompt}, *conversation)


def render_prompt(tokenizer, conversation: Conversation, params: GenerationParams, system_prompt: str | None) -> str:
    """The exact prompt text a local model sees: chat template + generation prompt + any prefill."""
    messages, prefill = split_prefill(conversation)
    if not params.chat_template:
        return "".join(m["content"] for m in messages) + prefill
    messages = with_system_prompt(messages, system_prompt)
    return apply_chat_template(tokenizer, messages) + prefill


def apply_chat_template(tokenizer: Any, messages: Conversation) -> str:
    """The chat template's text for ``messages`` plus the generation prompt. A template that refuses a system
    turn (Gemma-2's raises "System role not supported", older Mistral's requires user/assistant alternation)
    gets the system text folded into the start of the first user message instead, as FastChat's and
    HarmBench's conversation templates do for system-less models: the attacker and evaluator conversations of
    pair, tap and crescendo open with a system turn, and with no attacker configured the target writes them.
    A template that takes the system turn renders exactly as before; any other template error is raised."""
    from jinja2 import TemplateError

    # tokenize=False then tokenize: transformers 5 returns a BatchEncoding when tokenize=True.
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    except TemplateError as refused:
        if not any(m.get("role") == "system" for m in messages):
            raise
        try:
            return tokenizer.apply_chat_template(list(fold_system(messages)), tokenize=False,
                                                 add_generation_prompt=True)  # fmt: skip
        except TemplateError:
            raise refused from None


def fold_system(messages: Conversation) -> Conversation:
    """``messages`` without system turns: their text, and a blank line, start the first user message (one of
    its own when none comes before an assistant turn)."""
    system = "\n\n".join(m["content"] for m in messages if m.get("role") == "system")
    rest = [m for m in messages if m.get("role") != "system"]
    if rest and rest[0].get("role") == "user":
        return ({**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:])
    return ({"role": "user", "content": system}, *rest)


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; ``(text, stopped)``."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def special_stops(tokenizer: Any, stop: Sequence[str]) -> dict[str, int]:
    """The stop strings of ``stop`` that are exactly one of ``tokenizer``'s special tokens, each with its id.
    Answers are decoded without special tokens (hf and vllm alike), so such a string never appears in an answer's
    text: both local backends end the answer at the token instead, as at eos (hf: the token ends the row and is
    not counted; vllm: it is sent as a ``stop_token_ids`` entry besides the string), the answer being the text
    before it. A stop string holding a special token's text together with other text (``"<|im_end|>\n"``) would
    match in the hf backend's token strings but never in vLLM's text: refused, naming ``generation.stop``."""
    if not stop:
        return {}
    special = {t.content: i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
               if getattr(t, "special", False) and t.content}  # fmt: skip
    for text in stop:
        inside = next((name for name in special if name in text and name != text), None)
        if inside is not None:
            raise UserError(f"generation.stop: {text!r} holds the special token {inside!r} and other text; answers "
                            "are decoded without special tokens, so the vllm backend would never meet it (the hf "
                            f"backend would): give the special token alone ({inside!r}) or text without it")
    return {text: special[text] for text in stop if text in special}


# prompt tokens decoded before an answer's (decode_answer): enough for a decoder to see the answer is not the
# text's start, few enough to cost nothing
ANSWER_CONTEXT_TOKENS = 8


def decode_answer(tokenizer: Any, prompt_ids: Sequence[int], answer_ids: Sequence[int]) -> str:
    """The text of ``answer_ids`` (special tokens skipped) as it reads after the prompt ``prompt_ids``: the prompt's
    last tokens and the answer decoded together, less the decoded prompt tokens (the incremental detokenization
    vLLM uses). Decoded alone, an answer loses its first space under SentencePiece decoders that strip the text's
    leading space (Llama-2's and Mistral v0.1's Strip, Metaspace): a prefill "Sure, here" continued "▁is ▁how" read
    "Sure, hereis how". For byte-level BPE (GPT-2, SmolLM2, the tiny model) the text is the answer decoded alone,
    byte for byte. Where the prompt's decoded text is not the start of the joined text (a clean-up of spaces
    across the two), the answer is decoded alone, as before."""
    answer = list(answer_ids)
    alone = tokenizer.decode(answer, skip_special_tokens=True)
    context = list(prompt_ids)[-ANSWER_CONTEXT_TOKENS:]
    if not context or not answer:
        return alone
    before = tokenizer.decode(context, skip_special_tokens=True)
    joined = tokenizer.decode(context + answer, skip_special_tokens=True)
    return joined[len(before) :] if joined.startswith(before) else alone


def eos_ids(tokenizer: Any, model: Any) -> set[int]:
    """The ids at which the model's own ``generate`` ends an answer: the tokenizer's eos and every id of
    ``model.generation_config.eos_token_id`` (a chat model's end of turn, e.g. Gemma-2's ``<end_of_turn>``,
    Phi-3's ``<|end|>``, is often listed only there)."""
    found = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    found.update(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    return {i for i in found if i is not None}


def stop_ids(tokenizer: Any, model: Any) -> set[int]:
    """Where an answer ends, for the HF backend and the token-level defenses alike: :func:`eos_ids` and the pad
    token (generate pads a finished row)."""
    return eos_ids(tokenizer, model) | {t for t in (tokenizer.pad_token_id,) if t is not None}
