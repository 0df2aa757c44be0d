"""The OpenAI-compatible backend against a local fake server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safealign.eval.backends import GenerationParams
from safealign.eval.backends.base import request_seed
from safealign.eval.backends.openai_http import OpenAIChatModel
from safealign.eval.config import ModelConfig


class FakeServer:
    """Behaviour per request, chosen by the last user message: ok / fail-once / 400 / slow / junk."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.seen: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.prefill_mode = "ignore"  # how this fake treats an assistant prefill: continue | echo | ignore
        self.probe_failures = 0  # this many prefill probes are answered with a 400
        self.probes = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                left = []

                def leave():  # once, before the answer goes out: the client may start its next request
                    with server.lock:  # as soon as it reads this one, before this handler returns
                        if not left:
                            left.append(True)
                            server.in_flight -= 1

                self.leave = leave
                try:
                    server.respond(self, body)
                finally:
                    leave()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def respond(self, handler, body) -> None:
        prompt = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        last = body["messages"][-1]
        if prompt.startswith("Count from 1 to 20"):  # the prefill probe
            with self.lock:
                self.probes += 1
                failing = self.probes <= self.probe_failures
            if failing:
                return self._send(handler, 400, {"error": "probe refused"})
            # "ignore": the trailing assistant message dropped, a fresh turn counts as the user asked
            reply = {"continue": " 16, 15, 14", "echo": last["content"] + " 16, 15",
                     "ignore": ", ".join(str(n) for n in range(1, 21))}
            return self._send(handler, 200, {"choices": [{"message": {"content": reply[self.prefill_mode]}}]})
        if self.prefill_mode == "echo" and last["role"] == "assistant":
            return self._send(handler, 200, {"choices": [{"message": {"content": last["content"] + " more"}}]})
        with self.lock:
            self.seen[prompt] = self.seen.get(prompt, 0) + 1
            count = self.seen[prompt]
        if prompt == "fail-once" and count == 1:
            return self._send(handler, 503, {"error": "busy"})
        if prompt == "always-500":
            return self._send(handler, 500, {"error": "boom"})
        if prompt == "bad-request":
            return self._send(handler, 400, {"error": {"message": "invalid model"}})
        if prompt == "slow":
            time.sleep(1.0)
        if prompt == "junk":
            return self._send(handler, 200, {"unexpected": True})
        if prompt.startswith("echo-headers"):  # a server that echoes the request headers in its error body
            status = 200 if prompt.endswith("200") else 401
            echoed = {"Authorization": handler.headers["Authorization"], "api-key": "sk-live-0123456789"}
            return self._send(handler, status, {"error": "denied", "headers": echoed})
        if prompt.startswith("rate-limited") and count == 1:
            return self._send(handler, 429, {"error": "slow down"}, {"Retry-After": prompt.split(":")[1]})
        if prompt == "bad-status-once" and count == 1:  # not an HTTP response at all: http.client.BadStatusLine
            handler.leave()
            handler.wfile.write(b"garbage\r\n\r\n")
            return None
        if prompt == "cut-body-once" and count == 1:  # the connection drops mid-body: IncompleteRead from read()
            return self._send_cut(handler, 200, ("Content-Length", "1000"), b'{"choices": [')
        if prompt == "cut-error-body-once" and count == 1:  # the same in an error's body: from HTTPError.read()
            return self._send_cut(handler, 503, ("Transfer-Encoding", "chunked"), b'3e8\r\n{"error": ')
        if prompt == "cut-short":
            choice = {"message": {"content": "It was a dark"}, "finish_reason": "length"}
            usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
            return self._send(handler, 200, {"choices": [choice], "usage": usage})
        if prompt == "thought-too-long":  # a reasoning model that spent max_tokens thinking: no answer text
            message = {"content": None, "reasoning_content": "Let me think about"}
            usage = {"prompt_tokens": 9, "completion_tokens": 16, "total_tokens": 25}
            return self._send(handler, 200, {"choices": [{"message": message, "finish_reason": "length"}],
                                             "usage": usage})
        if prompt == "refused":  # OpenAI's structured refusal: the text is in `refusal`, content is null
            message = {"content": None, "refusal": "I can't help with that."}
            return self._send(handler, 200, {"choices": [{"message": message, "finish_reason": "stop"}]})
        if prompt == "null-stop":  # no text at all and not cut short: nothing to record as an answer
            return self._send(handler, 200, {"choices": [{"message": {"content": None}, "finish_reason": "stop"}]})
        if prompt.startswith("wait"):
            time.sleep(0.2)
        reply = f"echo:{prompt}" + (f"|prefill:{last['content']}" if last["role"] == "assistant" else "")
        self._send(handler, 200, {"choices": [{"message": {"role": "assistant", "content": reply}}]})

    @staticmethod
    def _send_cut(handler, status, header: tuple[str, str], partial: bytes) -> None:
        """Headers promising more body than ``partial``, which is all that is sent before the connection drops."""
        handler.leave()
        handler.send_response(status)
        handler.send_header(*header)
        handler.end_headers()
        handler.wfile.write(partial)

    @staticmethod
    def _send(handler, status, payload, headers=None) -> None:
        data = json.dumps(payload).encode()
        handler.leave()
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


@pytest.fixture()
def server():
    fake = FakeServer()
    yield fake
    fake.httpd.shutdown()


def _client(server, **kw) -> OpenAIChatModel:
    args = {"api_key": "sk-secret", "timeout_s": 0.5, "max_retries": 2, "backoff_s": 0.01, **kw}
    return OpenAIChatModel("m", base_url=server.url, **args)


def _conv(text):
    return ({"role": "user", "content": text},)


def test_success_payload_and_auth(server):
    client = _client(server, system_prompt="sys")
    params = GenerationParams(max_new_tokens=7, stop=("END",))
    [c] = client.generate([_conv("hello")], params)
    assert c.text == "echo:hello" and c.error is None
    body = server.requests[0]
    assert body["max_tokens"] == 7 and body["stop"] == ["END"] and body["temperature"] == 0.0
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert server.headers[0]["Authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in repr(client)


def test_prefill_is_sent_as_a_continued_assistant_turn(server):
    [c] = _client(server).generate([(*_conv("q"), {"role": "assistant", "content": "Sure"})], GenerationParams())
    assert c.text == "echo:q|prefill:Sure"
    assert server.requests[-1]["continue_final_message"] is True  # requests[0] is the prefill probe


def test_errors_are_recorded_never_faked(server):
    client = _client(server)
    convs = [_conv(t) for t in ("fail-once", "always-500", "bad-request", "slow", "junk")]
    fail_once, always, bad, slow, junk = client.generate(convs, GenerationParams())
    assert fail_once.text == "echo:fail-once" and fail_once.meta["attempts"] == 2  # retried after a 503
    assert always.text == "" and "HTTP 500" in always.error and server.seen["always-500"] == 3  # 1 + 2 retries
    assert bad.text == "" and "HTTP 400" in bad.error and server.seen["bad-request"] == 1  # not retried
    assert slow.text == "" and "timed out" in slow.error.lower() and server.seen["slow"] == 3
    assert junk.text == "" and "malformed response" in junk.error and server.seen["junk"] == 1


def test_concurrency_is_bounded_and_order_kept(server):
    client = _client(server, concurrency=2, timeout_s=5)
    convs = [_conv(f"wait{i}") for i in range(6)]
    out = client.generate(convs, GenerationParams())
    assert [c.text for c in out] == [f"echo:wait{i}" for i in range(6)]
    assert server.max_in_flight == 2



def test_seconds_are_the_calls_wall_time_per_answer_as_other_backends_and_defenses_record(server):
    """Each completion's seconds were its own request's latency while ``concurrency`` requests ran at once: a bare
    endpoint's answers then cost ~concurrency times the seconds of the same answers through a defense (whose
    seconds are the call's wall time per answer, as hf and vllm record), and a cost multiple compared the two."""
    client = _client(server, concurrency=4, timeout_s=5)
    started = time.perf_counter()
    out = client.generate([_conv(f"wait{i}") for i in range(8)], GenerationParams())  # 0.2 s each, 4 at a time
    wall = time.perf_counter() - started
    assert [c.error for c in out] == [None] * 8
    assert len({c.seconds for c in out}) == 1  # one share of the call per answer
    assert 0.4 <= sum(c.seconds for c in out) <= wall  # the call's wall time, not 8 requests' latencies (~1.6 s)

def test_identical_conversations_of_one_batch_are_sent_with_their_own_seeds(server):
    client = _client(server, concurrency=1)  # one request at a time: the server sees them in batch order
    client.generate([_conv("same")] * 3, GenerationParams(do_sample=True, seed=5))
    client.generate([_conv("same")] * 3, GenerationParams(do_sample=True, seed=5))
    seeds = [body["seed"] for body in server.requests]
    assert seeds[:3] == [request_seed(5, i) for i in range(3)] and len(set(seeds[:3])) == 3
    assert seeds[3:] == seeds[:3]  # deterministic: a re-run sends the same seeds


def test_a_seed_per_conversation_is_sent_with_its_request(server):
    client = _client(server, concurrency=1)
    client.generate([_conv("a"), _conv("b")], GenerationParams(do_sample=True, seed=5, seeds=(11, 12)))
    assert [(body["messages"][-1]["content"], body["seed"]) for body in server.requests] == [("a", 11), ("b", 12)]


def test_from_config_reads_the_environment(server, monkeypatch):
    config = ModelConfig(backend="openai", name="m", base_url_env="MY_URL", api_key_env="MY_KEY")
    with pytest.raises(ValueError, match="MY_URL"):
        OpenAIChatModel.from_config(config)
    monkeypatch.setenv("MY_URL", server.url)
    monkeypatch.setenv("MY_KEY", "k2")
    [c] = OpenAIChatModel.from_config(config).generate([_conv("x")], GenerationParams())
    assert c.text == "echo:x" and server.headers[-1]["Authorization"] == "Bearer k2"


def test_unreachable_server_is_an_error(server):
    client = OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", timeout_s=0.5, max_retries=1, backoff_s=0.01)
    [c] = client.generate([_conv("x")], GenerationParams())
    assert c.text == "" and c.error


def test_api_key_and_auth_headers_are_redacted_from_error_text(server):
    client = _client(server, api_key="sk-live-0123456789")
    unauthorized, junk = client.generate([_conv("echo-headers"), _conv("echo-headers-200")], GenerationParams())
    for completion in (unauthorized, junk):
        assert completion.error and "sk-live-0123456789" not in completion.error
        assert "Bearer" not in completion.error and "[REDACTED]" in completion.error
    assert "HTTP 401" in unauthorized.error and "malformed response" in junk.error


@pytest.mark.parametrize("text", [
    "Authorization: Bearer abc.def",
    "{'authorization': 'Bearer abc.def'}",
    '{"Api-Key": "abc.def", "x-api-key": "abc.def"}',
    "https://host/v1?api_key=abc.def&x=1",
])  # fmt: skip
def test_redact_covers_header_forms(text):
    from safealign.eval.backends.openai_http import redact

    assert "abc.def" not in redact(text, None)


def test_retry_after_is_honoured_within_the_budget(server, monkeypatch):
    import safealign.eval.backends.openai_http as http

    slept: list[float] = []
    monkeypatch.setattr(http, "wait_or_stop", lambda seconds: slept.append(seconds) or False)  # no stop requested
    client = _client(server, backoff_s=0.01, retry_budget_s=5)
    ok, too_long = client.generate([_conv("rate-limited:3"), _conv("rate-limited:60")], GenerationParams())
    assert ok.text == "echo:rate-limited:3" and ok.meta["attempts"] == 2
    assert slept == [3.0]  # the server's wait, not the 0.01 s backoff; the 60 s wait was never slept
    assert too_long.text == "" and "HTTP 429" in too_long.error and "retry budget" in too_long.error
    assert server.seen["rate-limited:60"] == 1


PREFILLED = (*_conv("q"), {"role": "assistant", "content": "Sure, here is"})


def _probes(server) -> int:
    return sum(r["messages"][0]["content"].startswith("Count from 1 to 20") for r in server.requests)


@pytest.mark.parametrize(("mode", "verdict", "text"), [
    ("continue", "honoured", "echo:q|prefill:Sure, here is"),
    ("ignore", "ignored", "echo:q|prefill:Sure, here is"),
    ("echo", "echoed", " more"),  # the repeated prefix is cut: the pipeline puts the prefill in front itself
])  # fmt: skip
def test_prefill_probe_runs_once_and_is_recorded_per_prefill_attempt(server, mode, verdict, text):
    server.prefill_mode = mode
    client = _client(server)
    assert client.generate([_conv("plain")], GenerationParams())[0].meta.get("prefill_honoured") is None
    assert _probes(server) == 0  # no prefill, no probe
    first, plain = client.generate([PREFILLED, _conv("plain")], GenerationParams())
    [second] = client.generate([PREFILLED], GenerationParams())
    assert _probes(server) == 1 and client.prefill_support == verdict
    assert first.meta["prefill_honoured"] == second.meta["prefill_honoured"] == verdict
    assert "prefill_honoured" not in plain.meta and first.text == text


def test_failed_probe_is_unknown_not_honoured(server):
    client = OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", timeout_s=0.5, max_retries=0)
    [c] = client.generate([PREFILLED], GenerationParams())
    assert c.error and c.meta["prefill_honoured"] == "unknown"


def test_summary_and_report_flag_prefill_from_a_server_that_ignores_it(server, tmp_path):
    from safealign.eval.config import EvalConfig
    from safealign.eval.pipeline import run_eval
    from safealign.eval.summary import format_table
    from safealign.report import build_report
    from safealign.types import Behavior

    from .fakes import KeywordJudge

    behaviors = [Behavior(f"b{i}", f"do {i}", target="Sure, here is") for i in range(3)]
    config = EvalConfig(attacks=["direct", "prefill"], judges=["kw"], output_dir=str(tmp_path / "run"))
    summary = run_eval(config, chat_model=_client(server), behaviors=behaviors, judges={"kw": KeywordJudge()})
    assert summary.prefill_check == {"prefill": {"ignored": 3}}
    assert "warning: attack 'prefill': not a prefill attack" in format_table(summary)
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert {r["attack"]: r["completion"]["meta"].get("prefill_honoured") for r in records} == {
        "direct": None, "prefill": "ignored"}
    _, md = build_report(tmp_path / "run")
    assert "not a prefill attack where the server did not continue the prefill" in md.read_text()


def test_garbled_or_cut_responses_are_retried_not_raised(server):
    client = _client(server, timeout_s=5)
    convs = [_conv(t) for t in ("bad-status-once", "cut-body-once", "cut-error-body-once")]
    out = client.generate(convs, GenerationParams())
    assert [c.text for c in out] == ["echo:bad-status-once", "echo:cut-body-once", "echo:cut-error-body-once"]
    assert all(c.error is None and c.meta["attempts"] == 2 for c in out)


def test_garbled_responses_to_the_last_retry_are_an_error(server):
    client = _client(server, timeout_s=5, max_retries=0)
    out = client.generate([_conv("bad-status-once"), _conv("cut-body-once")], GenerationParams())
    assert [c.text for c in out] == ["", ""]
    assert "BadStatusLine" in out[0].error and "IncompleteRead" in out[1].error


def test_finish_reason_and_usage_are_recorded(server):
    from safealign.eval.helpfulness.quality import is_truncated

    cut, plain = _client(server).generate([_conv("cut-short"), _conv("hello")], GenerationParams())
    assert cut.meta["finish"] == "length" and cut.meta["tokens"] == 4  # the HF and vLLM backends' words
    assert cut.meta["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    assert is_truncated(cut.text, cut.meta["finish"]) is True
    assert "finish" not in plain.meta  # the server sent none: unknown, not "stop"


def test_no_content_cut_at_the_token_limit_is_an_empty_answer_and_a_refusal_is_the_answer(server):
    thought, refused, empty = _client(server, max_retries=0).generate(
        [_conv("thought-too-long"), _conv("refused"), _conv("null-stop")], GenerationParams())
    assert (thought.text, thought.error) == ("", None)  # an answer cut at max_tokens, not a failed generation
    assert thought.meta["finish"] == "length" and thought.meta["tokens"] == 16
    assert thought.meta["reasoning"] == "Let me think about"
    assert (refused.text, refused.error, refused.meta["finish"]) == ("I can't help with that.", None, "stop")
    assert empty.text == "" and "malformed response: content is NoneType" in empty.error


def test_a_failed_prefill_probe_is_tried_again_a_bounded_number_of_times(server):
    from safealign.eval.backends.openai_http import PREFILL_PROBE_TRIES

    server.prefill_mode, server.probe_failures = "continue", 1
    client = _client(server)
    [first] = client.generate([PREFILLED], GenerationParams())
    assert first.meta["prefill_honoured"] == "unknown"
    [second] = client.generate([PREFILLED], GenerationParams())
    assert second.meta["prefill_honoured"] == "honoured" and _probes(server) == 2
    client.generate([PREFILLED], GenerationParams())
    assert _probes(server) == 2  # settled: not probed again

    server.requests.clear()
    server.probes, server.probe_failures = 0, 100
    client = _client(server)
    for _ in range(PREFILL_PROBE_TRIES + 2):
        [c] = client.generate([PREFILLED], GenerationParams())
        assert c.meta["prefill_honoured"] == "unknown"
    assert _probes(server) == PREFILL_PROBE_TRIES == 3


def test_a_redirect_is_an_error_and_the_key_never_reaches_the_other_address():
    """urllib would follow a 302 with the Authorization header to any host and as a GET, reading that answer as
    the completion: the backend must stop at the redirect, naming it."""
    other_requests = []

    class Other(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            other_requests.append(("GET", dict(self.headers)))
            data = json.dumps({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_GET

    other = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    target = f"http://127.0.0.1:{other.server_address[1]}/collect"

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

    first = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for httpd in (other, first):
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = OpenAIChatModel("m", base_url=f"http://127.0.0.1:{first.server_address[1]}/v1", api_key="sk-secret",
                                 timeout_s=2, max_retries=0, backoff_s=0.01)
        [c] = client.generate([_conv("hello")], GenerationParams(max_new_tokens=4))
    finally:
        first.shutdown()
        other.shutdown()
    assert c.text == "" and "HTTP 302" in c.error and "redirects to" in c.error and "sk-secret" not in c.error
    assert other_requests == []
