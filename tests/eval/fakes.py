"""Scripted fakes for the tests: a ChatModel whose answers are chosen by a function, a judge, and a tiny
byte-level BPE tokenizer with merges (the tiny model's tokenizer has none, so it never merges a space
into the next word as real tokenizers do).

Tests outside ``tests/eval`` import them as ``eval.fakes`` (``tests/`` is on ``sys.path``: pytest's
rootdir-relative import of ``tests/conftest.py``).
"""

from __future__ import annotations

from typing import Callable, Sequence

from safealign.eval.backends.base import Conversation, GenerationParams
from safealign.eval.judges.base import Judge
from safealign.types import Behavior, Completion, Verdict


class ScriptedChatModel:
    """The one fake ChatModel of the test suite: answers each conversation with ``reply(conversation)``.

    ``reply`` returns the answer text, a ready :class:`Completion`, or an exception instance, which
    becomes a failed generation (``error`` set, ``text`` empty) the way a backend reports one.
    ``calls`` keeps the conversations of every ``generate`` call (one list per call), ``params`` its generation
    settings; ``conversations`` is the same, flattened. ``name`` is what evaluators record as the judge model's name.
    """

    def __init__(self, reply: Callable[[Conversation], str | Completion | Exception], *, name: str = "scripted",
                 interrupt_after: int | None = None):
        self.reply = reply
        self.name = name
        self.calls: list[list[Conversation]] = []
        self.params: list[GenerationParams] = []
        self.interrupt_after = interrupt_after  # raise KeyboardInterrupt on this call number (1-based)

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Completion]:
        self.calls.append(list(conversations))
        self.params.append(params)
        if self.interrupt_after is not None and len(self.calls) == self.interrupt_after:
            raise KeyboardInterrupt
        return [self._completion(self.reply(c)) for c in conversations]

    @staticmethod
    def _completion(out: str | Completion | Exception) -> Completion:
        if isinstance(out, Completion):
            return out
        if isinstance(out, Exception):
            return Completion(text="", error=str(out))
        return Completion(text=out)

    @property
    def conversations(self) -> list[Conversation]:
        return [c for call in self.calls for c in call]

    @property
    def n_generated(self) -> int:
        return len(self.conversations)


class KeywordJudge(Judge):
    """Harmful when the response contains "HARMFUL"; unscored when it contains "???"."""

    name = "kw"
    config_class = dict

    def __init__(self) -> None:
        super().__init__({})

    def score(self, behaviors: Sequence[Behavior], responses: Sequence[str]) -> list[Verdict]:
        return [
            Verdict(self.name, None, error="garbage") if "???" in r else Verdict(self.name, "HARMFUL" in r)
            for r in responses
        ]


class HandedJudge(KeywordJudge):
    """The keyword judge, keeping every completion it is handed as ``(behavior id, text, error, meta)`` in
    ``handed``: what a judging passes to judges, to compare two judgings of the same answers. While ``down``
    every verdict is an error (an endpoint that answers HTTP 503), so a resumed run judges them again."""

    def __init__(self, down: bool = False) -> None:
        super().__init__()
        self.down = down
        self.handed: list[tuple[str, str, str | None, dict]] = []

    def __call__(self, behaviors: Sequence[Behavior], completions: Sequence[Completion]) -> list[Verdict]:
        self.handed += [(b.id, c.text, c.error, dict(c.meta)) for b, c in zip(behaviors, completions)]
        if self.down:
            return [Verdict(self.name, None, error="judge model failed: HTTP 503") for _ in completions]
        return super().__call__(behaviors, completions)


def coin_model(model, tokenizer, p_yes: float = 0.1):
    """``model`` made to answer every row's next token "Y" with probability ``p_yes``, else "N", whatever the prompt:
    a compliance coin (best-of-N against a model that complies one time in ten) whose draws show which random
    numbers each row got."""
    import math

    yes, no = tokenizer.convert_tokens_to_ids(["Y", "N"])

    def coin(module, args, kwargs, output):
        logits = output.logits[:, -1]
        logits.fill_(-1e4)
        logits[:, yes], logits[:, no] = 0.0, math.log((1 - p_yes) / p_yes)
        return output

    model.register_forward_hook(coin, with_kwargs=True)
    return model


def user_text(conversation: Conversation) -> str:
    return next(m["content"] for m in conversation if m["role"] == "user")


def bpe_tokenizer(metaspace: bool = False,
                  corpus: Sequence[str] = ("Tell me the thing. Sure, here is the thing.", "x x x x x x x x ! ! !")):
    """A BPE tokenizer trained in memory on ``corpus``, with merges such as ``" x"`` and ``" the"``: byte-level like
    GPT-2, or with ``metaspace`` SentencePiece-style (``"▁x"``; its decoder drops the space a text starts with).
    It has the tiny model's ChatML template and special tokens; pair it with ``tiny_model(vocab_size=len(tok))``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from safealign.models.tiny import CHATML_TEMPLATE, SPECIAL_TOKENS

    core = Tokenizer(models.BPE())
    if metaspace:
        core.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
        core.decoder = decoders.Metaspace(prepend_scheme="always")
        alphabet: list[str] = []
    else:
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet,
                                  show_progress=False)  # fmt: skip
    core.train_from_iterator(list(corpus) * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS)
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def strip_decoder(tokenizer):
    """``tokenizer`` with Llama-2's and Mistral v0.1's tokenizer.json decoder: its Strip drops the space a decoded
    text starts with."""
    from tokenizers import decoders

    tokenizer.backend_tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                                             decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return tokenizer


def scripted_model(model, token_ids):
    """``model`` made to answer greedily with ``token_ids`` in turn (then the last of them again), whatever the
    prompt: an answer known token by token, special tokens included. Each row's next token is the one after its
    last input token in ``token_ids`` (the first of them after any other token), so it holds however the model is
    called: ``generate`` on a KV cache, or a pass over the whole sequence as DeAL's search makes each step."""
    assert len(set(token_ids)) == len(token_ids), "the scripted tokens must differ from one another"
    after = dict(zip(token_ids, token_ids[1:])) | {token_ids[-1]: token_ids[-1]}

    def force(module, args, kwargs, output):
        logits = output.logits[:, -1]
        logits.fill_(-1e4)
        for row, last in enumerate(kwargs["input_ids"][:, -1].tolist()):
            logits[row, after.get(last, token_ids[0])] = 0
        return output

    model.register_forward_hook(force, with_kwargs=True)
    return model


# a run's generation settings far from the defaults, so an attack's early-stop answers show whether they follow them
LOADED_RUN = GenerationParams(max_new_tokens=200, do_sample=True, temperature=0.7, top_p=0.9, stop=("END",), seed=5,
                              batch_size=8, max_prompt_tokens=300)


def refusing_context(model, tokenizer, generation: GenerationParams = LOADED_RUN):
    """A white-box attack's context under ``generation`` (default :data:`LOADED_RUN`) whose target always refuses:
    ``(target, context)``."""
    from safealign.eval.attacks import AttackContext

    target = ScriptedChatModel(lambda c: "I refuse")
    return target, AttackContext(target=target, generation=generation, judge=KeywordJudge(), model=model,
                                 tokenizer=tokenizer)
