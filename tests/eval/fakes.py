"""Scripted fakes for eval tests: a ChatModel whose answers are chosen by a function, and a judge."""

from __future__ import annotations

from typing import Callable, Sequence

from safealign.eval.backends.base import Conversation, GenerationParams
from safealign.eval.judges.base import Judge
from safealign.types import Behavior, Completion, Verdict


class ScriptedChatModel:
    """Answers each conversation with ``reply(conversation)``; records every call."""

    def __init__(self, reply: Callable[[Conversation], str | Completion], interrupt_after: int | None = None):
        self.reply = reply
        self.calls: list[list[Conversation]] = []
        self.interrupt_after = interrupt_after  # raise KeyboardInterrupt on this call number (1-based)

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Completion]:
        self.calls.append(list(conversations))
        if self.interrupt_after is not None and len(self.calls) == self.interrupt_after:
            raise KeyboardInterrupt
        out = [self.reply(c) for c in conversations]
        return [o if isinstance(o, Completion) else Completion(text=o) for o in out]

    @property
    def n_generated(self) -> int:
        return sum(len(c) for c in self.calls)


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
