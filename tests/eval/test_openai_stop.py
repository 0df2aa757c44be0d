"""A stop request (SIGTERM) while requests to a slow endpoint are in flight: generate() raises at once
instead of waiting out their timeouts, and the conversations still queued are never sent."""

from __future__ import annotations

import threading
import time

import pytest

from safealign.eval.backends import GenerationParams
from safealign.eval.backends.openai_http import OpenAIChatModel
from safealign.interrupt import StopRequested, request_stop, stop_on_sigterm

from .test_backend_openai import FakeServer


class HangingServer(FakeServer):
    """Holds every request until released (or 30 s), like a server busy with long generations."""

    def __init__(self) -> None:
        self.release = threading.Event()
        super().__init__()

    def respond(self, handler, body) -> None:
        self.release.wait(30)
        super().respond(handler, body)


def test_stop_request_abandons_requests_in_flight():
    server = HangingServer()
    client = OpenAIChatModel("m", base_url=server.url, api_key="k", timeout_s=30, max_retries=2, concurrency=2)
    conversations = [({"role": "user", "content": f"question {i}"},) for i in range(5)]
    timer = threading.Timer(0.5, request_stop)
    start = time.monotonic()
    try:
        with stop_on_sigterm(), pytest.raises(StopRequested):
            timer.start()
            client.generate(conversations, GenerationParams(max_new_tokens=5))
        elapsed = time.monotonic() - start
    finally:
        timer.cancel()
        server.release.set()
        server.httpd.shutdown()
    assert elapsed < 10  # generous: the two requests in flight would hold it for 30 s
    assert len(server.requests) == 2  # the three queued conversations were never sent
