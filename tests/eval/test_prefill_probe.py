"""The prefill probe's verdicts (safealign.eval.backends.prefill_probe) from fake replies, one per kind of server."""

from __future__ import annotations

import pytest

from safealign.eval.backends import prefill_probe
from safealign.eval.backends.prefill_probe import ECHOED, HONOURED, IGNORED, PROBE, PROBE_PREFILL, UNCLEAR, UNKNOWN
from safealign.types import Completion

# what a server that drops the trailing assistant message answers: a fresh turn, counting as the user asked
FRESH_TURN = ", ".join(str(n) for n in range(1, 21))


def test_the_probe_asks_for_a_count_its_prefill_does_not_follow():
    """A fresh turn never sees the prefill, so it counts as asked; the prefill must not be what that count
    starts with, or a fresh turn would read as an echoed continuation."""
    assert PROBE[0] == {"role": "user", "content": "Count from 1 to 20, separated by commas. Write nothing else."}
    assert PROBE[-1] == {"role": "assistant", "content": PROBE_PREFILL}
    assert not FRESH_TURN.startswith(PROBE_PREFILL)


@pytest.mark.parametrize(("reply", "verdict"), [
    (" 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1", HONOURED),  # continues the prefill
    ("16, 15, 14", HONOURED),
    (PROBE_PREFILL + " 16, 15, 14", ECHOED),  # continues it, repeating it first
    (FRESH_TURN, IGNORED),  # dropped the prefill and counted from 1, as asked
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10", IGNORED),  # the reply the old probe read as an echoed continuation
    ("Sure! Here you go: 1, 2, 3", IGNORED),
    ("I'm sorry, I can't help with that.", UNCLEAR),  # no number at all
    ("8, 9, 10", UNCLEAR),  # neither the continuation's next number nor a fresh count's first
    ("20, 19, 18", UNCLEAR),  # a different count, not the prefill repeated
])  # fmt: skip
def test_each_kind_of_reply_gets_its_verdict(reply, verdict):
    assert prefill_probe.classify(Completion(reply)) == verdict


def test_a_failed_probe_request_is_unknown():
    assert prefill_probe.classify(Completion("", error="HTTP 400: probe refused")) == UNKNOWN
    assert prefill_probe.classify(Completion(PROBE_PREFILL + " 16", error="cut off")) == UNKNOWN


def test_mark_records_the_verdict_on_prefill_attempts_and_strips_only_an_echoed_prefill():
    prefilled = ({"role": "user", "content": "q"}, {"role": "assistant", "content": "Sure, here is"})
    plain = ({"role": "user", "content": "q"},)
    echoed = [Completion("Sure, here is a plan"), Completion("Sure, here is")]
    out = prefill_probe.mark([prefilled, plain], echoed, ECHOED)
    assert out[0].text == " a plan" and out[0].meta == {"prefill_honoured": ECHOED}
    assert out[1] == echoed[1] and out[1].meta == {}  # no prefill: untouched, no verdict
    for verdict in (HONOURED, IGNORED, UNCLEAR, UNKNOWN):  # only an echo is cut
        [marked] = prefill_probe.mark([prefilled], [Completion("Sure, here is a plan")], verdict)
        assert marked.text == "Sure, here is a plan" and marked.meta["prefill_honoured"] == verdict
