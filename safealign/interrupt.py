"""Stop requests: SIGTERM (how batch schedulers and ``timeout`` end a job) sets a flag that long loops
check at safe points -- a generation step, a batch boundary -- instead of an exception landing anywhere.

A backend's generation loop polls :func:`stop_requested` between tokens and ends the batch; the caller
then raises :class:`StopRequested` before recording anything from the cut batch, so a resumed run redoes
it. A second SIGTERM raises at once, for a process stuck outside any checked loop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_requested = threading.Event()
_signal_name = ["SIGTERM"]


class StopRequested(KeyboardInterrupt):
    """A stop was requested (SIGTERM): the work in flight was dropped, everything recorded is kept.

    A KeyboardInterrupt, so every path that already saves partial work on Ctrl-C does the same here.
    """

    exit_code = 128 + signal.SIGTERM  # the shell's convention for a process ended by SIGTERM


def stop_requested() -> bool:
    return _requested.is_set()


def wait_or_stop(seconds: float) -> bool:
    """Sleep up to ``seconds``, waking early on a stop request; True if a stop was requested."""
    return _requested.wait(max(0.0, seconds))


def raise_if_stop_requested() -> None:
    if _requested.is_set():
        raise StopRequested(f"stopped by {_signal_name[0]}: the batch in flight was dropped, records written so far "
                            "are kept; re-run the same command to resume")


def request_stop(signum: int | None = None, frame: object = None) -> None:
    """The signal handler: the first request sets the flag, a second one stops at once."""
    if signum is not None:
        _signal_name[0] = signal.Signals(signum).name
    if _requested.is_set():
        raise_if_stop_requested()
    _requested.set()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM requests a stop (see the module doc); the previous handler is restored
    after. Outside the main thread (where Python can't install handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, request_stop)
    _requested.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _requested.clear()
