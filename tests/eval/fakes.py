"""Scripted fakes for the tests: a ChatModel whose answers are chosen by a function, and a judge.

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
    ``calls`` keeps the conversations of every ``generate`` call (one list per call); ``conversations``
    is the same, flattened. ``name`` is what evaluators record as the judge model's name.
    """

    def __init__(self, reply: Callable[[Conversation], str | Completion | Exception], *, name: str = "scripted",
                 interrupt_after: int | None = None):
        self.reply = reply
        self.name = name
        self.calls: list[list[Conversation]] = []
        self.interrupt_after = interrupt_after  # raise KeyboardInterrupt on this call number (1-based)

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Completion]:
        self.calls.append(list(conversations))
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


def user_text(conversation: Conversation) -> str:
    return next(m["content"] for m in conversation if m["role"] == "user")
