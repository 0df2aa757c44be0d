"""Conversation values inside rows: message lists, HH-RLHF transcripts, bool-ish flags.

Parsers here raise :class:`RowDrop` for a bad value; the format layer turns it into a counted,
reported :class:`~safealign.data.formats.DroppedRow` with the source and row attached.
"""

from __future__ import annotations

import re
from typing import Any

from safealign.types import Message

ROLES = ("system", "user", "assistant")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
# "\n\nHuman:" / "\n\nAssistant:" turn markers; the first turn may also start the text without blank lines.
_HH_MARKER = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


class RowDrop(Exception):
    """A row cannot be used; ``field`` is the (canonical) column at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def parse_bool(value: Any, field: str) -> bool | None:
    """True/False, 1/0 and their strings ("true", "0", "yes", ...); None or "" → None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise RowDrop(field, f"expected a boolean (true/false/1/0), got {_describe(value)}")


def require_text(value: Any, field: str) -> str:
    """A non-empty string (whitespace-only counts as empty)."""
    if value is None:
        raise RowDrop(field, "missing value")
    if not isinstance(value, str):
        raise RowDrop(field, f"expected a string, got {_describe(value)}")
    if not value.strip():
        raise RowDrop(field, "empty text")
    return value


def parse_messages(value: Any, field: str) -> tuple[Message, ...]:
    """A list of ``{"role", "content"}`` dicts (roles system/user/assistant, string content)."""
    if value is None:
        raise RowDrop(field, "missing value")
    if not isinstance(value, (list, tuple)) or not value:
        raise RowDrop(field, f"expected a non-empty list of {{role, content}} messages, got {_describe(value)}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RowDrop(field, f"message {i}: expected an object with 'role' and 'content'")
        if message["role"] not in ROLES:
            raise RowDrop(field, f"message {i}: role {message['role']!r} is not one of {', '.join(ROLES)}")
        if not isinstance(message["content"], str):
            raise RowDrop(field, f"message {i}: content must be a string, got {_describe(message['content'])}")
        messages.append({"role": message["role"], "content": message["content"]})
    return tuple(messages)


def parse_prompt(value: Any, field: str = "prompt") -> tuple[Message, ...]:
    """A prompt string (one user message) or a message list ending with a user message."""
    if isinstance(value, str):
        return ({"role": "user", "content": require_text(value, field)},)
    messages = parse_messages(value, field)
    if messages[-1]["role"] != "user":
        raise RowDrop(field, f"the prompt must end with a user message, not {messages[-1]['role']!r}")
    return require_last_user_text(messages, field)


def require_last_user_text(messages: tuple[Message, ...], field: str) -> tuple[Message, ...]:
    """``messages`` (ending with a user turn) unless that turn is empty: there would be no request to answer."""
    if not messages[-1]["content"].strip():
        raise RowDrop(field, "empty text in the last user message")
    return messages


def assistant_text(value: Any, field: str) -> str:
    """The content of a response given as a list holding exactly one assistant message (TRL style)."""
    messages = parse_messages(value, field)
    roles = [m["role"] for m in messages]
    if any(role != "assistant" for role in roles):
        raise RowDrop(field, f"expected assistant messages only, got roles {roles}")
    if len(messages) > 1:
        raise RowDrop(field, f"{len(messages)} assistant messages in one response; expected exactly one")
    return require_response(messages[0]["content"], field)


def require_response(text: str, field: str) -> str:
    if not text.strip():
        raise RowDrop(field, "empty response")
    return text


def parse_transcript(text: str, field: str) -> tuple[Message, ...]:
    """An HH-RLHF transcript ``"\\n\\nHuman: … \\n\\nAssistant: …"`` as messages (contents stripped).

    Text before the first ``Human:``/``Assistant:`` marker becomes a system message.
    """
    parts = _HH_MARKER.split(text)
    if len(parts) < 3:
        raise RowDrop(field, "unparseable transcript: no '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    preamble, markers, contents = parts[0], parts[1::2], parts[2::2]
    messages: list[Message] = []
    if preamble.strip():
        messages.append({"role": "system", "content": preamble.strip()})
    messages += [{"role": _HH_ROLES[m], "content": c.strip()} for m, c in zip(markers, contents)]
    return tuple(messages)


def transcript_prompt(text: str, field: str) -> tuple[Message, ...] | None:
    """A prompt string that clearly is an HH-style transcript, as its turns; None for any other text.

    Clearly one: it starts with ``"\\n\\nHuman:"`` or ``"Human:"`` and ends with ``"Assistant:"`` (the
    reply to come, e.g. Dahoas/rm-static's prompts). The turns before that empty assistant turn are the prompt
    and must end with a user turn.
    """
    if not (text.startswith(("\n\nHuman:", "Human:")) and text.rstrip().endswith("Assistant:")):
        return None
    messages = parse_transcript(text, field)
    if len(messages) < 2 or messages[-1] != {"role": "assistant", "content": ""} or messages[-2]["role"] != "user":
        raise RowDrop(field, "transcript prompt must end with a Human turn and then an empty '\\n\\nAssistant:'")
    return require_last_user_text(messages[:-1], field)


def has_turn_marker(text: str) -> bool:
    """Whether ``text`` holds an HH ``Human:``/``Assistant:`` turn marker (a transcript, not one reply)."""
    return _HH_MARKER.search(text) is not None


def split_conversations(
    chosen: tuple[Message, ...], rejected: tuple[Message, ...]
) -> tuple[tuple[Message, ...], str, str]:
    """Split two full conversations into (shared prompt history, chosen reply, rejected reply).

    Both must end with an assistant turn and agree on every message before it; otherwise the shared
    prefix ends inside a turn and the row cannot become one pair.
    """
    for field, messages in (("chosen", chosen), ("rejected", rejected)):
        if messages[-1]["role"] != "assistant":
            raise RowDrop(field, "conversation does not end with an assistant turn")
    if chosen[:-1] != rejected[:-1]:
        raise RowDrop(
            "rejected",
            "chosen and rejected diverge before their final assistant turn (shared prefix ends mid-turn)",
        )
    prompt = chosen[:-1]
    if not prompt or prompt[-1]["role"] != "user":
        raise RowDrop("chosen", "no user turn directly before the final assistant turn")
    return (
        require_last_user_text(prompt, "chosen"),
        require_response(chosen[-1]["content"], "chosen"),
        require_response(rejected[-1]["content"], "rejected"),
    )


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '…' if len(text) > 40 else text}"
