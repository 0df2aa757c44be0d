"""The helpfulness tests' fake model: the shared scripted ChatModel (``tests/eval/fakes.py``)."""

from __future__ import annotations

import pytest

from eval.fakes import ScriptedChatModel


@pytest.fixture()
def scripted():
    return ScriptedChatModel
