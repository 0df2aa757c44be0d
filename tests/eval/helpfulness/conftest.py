"""A scripted fake ChatModel for the helpfulness tests."""

from __future__ import annotations

from typing import Callable

import pytest

from safealign.types import Completion


class ScriptedChatModel:
    """Answers each conversation with ``script(conversation)``; a returned Exception becomes an error."""

    name = "scripted"

    def __init__(self, script: Callable[[tuple], str | Exception]) -> None:
        self.script = script
        self.calls: list[tuple] = []

    def generate(self, conversations, params):
        out = []
        for conversation in conversations:
            self.calls.append(conversation)
            result = self.script(conversation)
            if isinstance(result, Exception):
                out.append(Completion(text="", error=str(result), seconds=0.5))
            else:
                out.append(Completion(text=result, seconds=0.5))
        return out


@pytest.fixture()
def scripted():
    return ScriptedChatModel
