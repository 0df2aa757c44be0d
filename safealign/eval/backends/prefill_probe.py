"""Does a remote server continue an assistant prefill, or answer a fresh turn? One probe per backend.

A prefill attack sends a trailing assistant message ("Sure, here is") and expects the model to continue
it. OpenAI-compatible servers differ: vLLM honours ``continue_final_message``, others (e.g. llama.cpp's
server) may drop or ignore the trailing message and start a new turn, so a "prefill ASR" would silently
be a direct-request ASR. The probe asks the model to count from 1 to 20 with a prefill counting the
other way, "20, 19, 18, 17,": a continuation starts at 16; an echo starts with the prefill itself; a
fresh turn never sees the prefill and counts as asked, from 1. The prefill must be text a fresh turn would
not write: with one following the request ("1, 2, …, 7,") a fresh turn's "1, 2, 3, …" would start with it
and read as an echoed continuation. A server that continues the prefill but whose model turns back to
count up reads as ignoring it: a false warning, never a fresh turn passed off as a prefill attack. The
verdict is recorded on every prefill attempt (``completion.meta["prefill_honoured"]``) and the summary and
report flag attacks whose attempts came from a server that did not continue the prefill.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from safealign.eval.backends.base import Conversation, split_prefill
from safealign.types import Completion

PROBE_PREFILL = "20, 19, 18, 17,"  # counts down against the request: no fresh turn starts with it
PROBE: Conversation = (
    {"role": "user", "content": "Count from 1 to 20, separated by commas. Write nothing else."},
    {"role": "assistant", "content": PROBE_PREFILL},
)
HONOURED = "honoured"  # continued the prefill
ECHOED = "echoed"  # continued it, but repeated the prefill at the start of its reply (stripped from answers)
IGNORED = "ignored"  # started a fresh turn
UNCLEAR = "unclear"  # answered, but neither way recognisably
UNKNOWN = "unknown"  # the probe request itself failed
NOT_CONTINUED = (IGNORED, UNCLEAR, UNKNOWN)  # verdicts the summary and report flag
MEANING = {
    HONOURED: "continues the assistant prefill",
    ECHOED: "continues the assistant prefill, repeating it first",
    IGNORED: "ignores the assistant prefill and answers a fresh turn",
    UNCLEAR: "answered the prefill probe neither as a continuation nor as a fresh turn",
    UNKNOWN: "could not be probed (the probe request failed)",
}


def classify(completion: Completion) -> str:
    """The verdict for the probe's reply: an echo starts with the prefill; otherwise the first number of a
    continuation is 16, of a fresh turn 1."""
    if completion.error:
        return UNKNOWN
    text = completion.text.strip()
    if text.startswith(PROBE_PREFILL):
        return ECHOED
    first = re.search(r"\d+", text)
    if first is None:
        return UNCLEAR
    return {"16": HONOURED, "1": IGNORED}.get(first.group(), UNCLEAR)


def mark(conversations: Sequence[Conversation], completions: list[Completion], verdict: str) -> list[Completion]:
    """Each prefill attempt's completion with the probe verdict in its meta; an echoed prefix is removed,
    since the pipeline puts the prefill in front of the continuation itself."""
    out = []
    for conversation, completion in zip(conversations, completions):
        prefill = split_prefill(conversation)[1]
        if prefill:
            text = completion.text
            if verdict == ECHOED and text.startswith(prefill):
                text = text[len(prefill) :]
            completion = dataclasses.replace(completion, text=text,
                                             meta={**completion.meta, "prefill_honoured": verdict})  # fmt: skip
        out.append(completion)
    return out
