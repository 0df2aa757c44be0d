"""OpenAI-compatible chat endpoint over stdlib HTTP: timeouts, retries with backoff, bounded concurrency.

The base URL and API key are read from environment variables named in the config; the key is sent
only in the Authorization header and never logged or stored: error text from the server is redacted
(the key itself, and any ``Authorization``/``api-key`` header value it echoes) before it is kept. A call
that still fails after the retries becomes ``Completion(text="", error=...)`` — never a fake answer.
A 429/503 with ``Retry-After`` waits that long when it fits in the remaining ``retry_budget_s``.

Network failures (refused or reset connections, timeouts, a malformed or cut-short HTTP response:
``http.client.HTTPException`` such as ``BadStatusLine`` or ``IncompleteRead``) are retried like a 5xx.

Prefill (a trailing assistant message) is sent as-is together with ``prefill_params`` (by default
vLLM's ``continue_final_message``); servers that do not support it answer a fresh turn instead, so the
first batch with a prefill runs one probe (:mod:`safealign.eval.backends.prefill_probe`) whose verdict
is recorded on every prefill attempt. A probe whose request failed (verdict ``unknown``) is tried again
with the next prefill batch, up to ``PREFILL_PROBE_TRIES`` probes in all.

Each completion's meta holds the server's ``finish`` reason (``choices[0].finish_reason``: ``"stop"`` or
``"length"`` as the HF and vLLM backends write it, or whatever else the server says), ``usage`` when the
server sends it, and ``tokens`` (its ``completion_tokens``).

Request ``i`` of a batch is sent with its conversation's seed from ``params.seeds`` (the evaluation's attempts
carry one each), else ``seed = request_seed(params.seed, i)``
(:func:`safealign.eval.backends.base.conversation_seeds`): servers seed each request (vLLM does), so one shared
seed would answer identical conversations of a batch identically.

A reply with no text (``content`` null) is an answer when the server says why: its ``refusal`` text (OpenAI's
structured refusals), or an empty answer cut at ``max_tokens`` (``finish_reason`` ``"length"``: a reasoning
model that spent them thinking; its ``reasoning_content``/``reasoning`` text is kept in meta as ``reasoning``).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

from safealign.errors import UserError
from safealign.eval.backends import prefill_probe
from safealign.eval.backends.base import (
    Conversation,
    GenerationParams,
    conversation_seeds,
    split_prefill,
    with_system_prompt,
)
from safealign.interrupt import raise_if_stop_requested, wait_or_stop
from safealign.types import Completion

logger = logging.getLogger(__name__)


class _RefuseRedirect(urllib.request.HTTPRedirectHandler):
    """urllib follows a redirect by copying every header, the API key's included, to whatever address it names,
    and turns the POST into a GET whose answer would be read as the completion: a 3xx is an error instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None  # urllib then raises HTTPError with the 3xx status


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirect())

_POLL_S = 0.1  # how often a waiting generate() checks for a stop request
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
DEFAULT_PREFILL_PARAMS = {"continue_final_message": True, "add_generation_prompt": False}
PREFILL_PROBE_TRIES = 3  # probes sent while every one so far failed (verdict unknown)


# Header values a server may echo back in an error body (JSON, "Key: value" or key=value forms).
_SECRET_HEADERS = re.compile(
    r"""(?P<name>["']?(?:authorization|proxy-authorization|x-api-key|api[-_]key)["']?\s*[:=]\s*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^\s,;}&]+(?:[ \t]+[^\s,;}&"']+)?)""",
    re.IGNORECASE,
)


def redact(text: str, secret: str | None) -> str:
    """``text`` with the API key and any auth header values replaced by ``[REDACTED]``."""
    if secret:
        text = text.replace(secret, "[REDACTED]")
    return _SECRET_HEADERS.sub(lambda m: m.group("name") + "[REDACTED]", text)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIChatModel:
    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 4,
        backoff_s: float = 0.5,
        retry_budget_s: float = 120.0,
        system_prompt: str | None = None,
        prefill_params: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = max(1, concurrency)
        self.backoff_s = backoff_s
        self.retry_budget_s = retry_budget_s
        self.system_prompt = system_prompt
        self.prefill_params = DEFAULT_PREFILL_PARAMS if prefill_params is None else prefill_params
        self.prefill_support: str | None = None  # the probe's verdict, once a prefill has been sent
        self.prefill_probes = 0  # probes sent so far
        self._probe_lock = threading.Lock()

    def __repr__(self) -> str:  # no key in reprs or logs
        return f"OpenAIChatModel(model={self.model!r}, url={self.url!r})"

    @classmethod
    def from_config(cls, config: Any, *, model: Any = None, tokenizer: Any = None) -> "OpenAIChatModel":
        base_url = os.environ.get(config.base_url_env)
        if not base_url:
            raise UserError(f"openai backend: set the base URL in the environment variable {config.base_url_env}")
        return cls(
            config.name,
            base_url=base_url,
            api_key=os.environ.get(config.api_key_env),
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            retry_budget_s=config.retry_budget_s,
            concurrency=config.concurrency,
            system_prompt=config.system_prompt,
        )

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Completion]:
        """Up to ``concurrency`` requests at a time, on daemon threads: on a stop request (SIGTERM) this
        raises at once, abandoning the requests in flight instead of waiting out their timeouts and retries.
        Each completion's ``seconds`` is the call's wall time per conversation, as the hf and vllm backends and a
        defense (DefendedChatModel) record it: a request's own latency, while others run beside it, would count
        the same wall time up to ``concurrency`` times and make a defended answer look cheaper than a bare one."""
        start = time.perf_counter()
        has_prefill = any(split_prefill(c)[1] for c in conversations)
        verdict = self.probe_prefill(params) if has_prefill else None
        results: list[Any] = [None] * len(conversations)
        slots = threading.BoundedSemaphore(self.concurrency)
        seeds = conversation_seeds(params, len(conversations))

        def work(i: int, conversation: Conversation) -> None:
            try:
                results[i] = self._one(conversation, dataclasses.replace(params, seed=seeds[i], seeds=None))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
                results[i] = exc
            finally:
                slots.release()

        threads = []
        for i, conversation in enumerate(conversations):
            while not slots.acquire(timeout=_POLL_S):
                raise_if_stop_requested()
            raise_if_stop_requested()
            threads.append(threading.Thread(target=work, args=(i, conversation), daemon=True))
            threads[-1].start()
        for thread in threads:
            while thread.is_alive():
                thread.join(_POLL_S)
                raise_if_stop_requested()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        seconds = (time.perf_counter() - start) / max(1, len(conversations))
        results = [dataclasses.replace(r, seconds=seconds) for r in results]
        return prefill_probe.mark(conversations, results, verdict) if verdict else results

    def probe_prefill(self, params: GenerationParams) -> str:
        """Whether this server continues an assistant prefill: one probe request the first time it is asked,
        another each later time while every probe failed (``unknown``), up to ``PREFILL_PROBE_TRIES``."""
        with self._probe_lock:
            unsettled = self.prefill_support in (None, prefill_probe.UNKNOWN)
            if unsettled and self.prefill_probes < PREFILL_PROBE_TRIES:
                self.prefill_probes += 1
                probe = GenerationParams(max_new_tokens=16, seed=params.seed)
                self.prefill_support = prefill_probe.classify(self._one(prefill_probe.PROBE, probe))
                log = logger.info if self.prefill_support == prefill_probe.HONOURED else logger.warning
                tries = ""
                if self.prefill_support == prefill_probe.UNKNOWN:
                    left = PREFILL_PROBE_TRIES - self.prefill_probes
                    tries = f" (probe {self.prefill_probes} of at most {PREFILL_PROBE_TRIES}" + (
                        "; tried again with the next prefill batch)" if left else "; not tried again)")
                log("%s: prefill probe: the server %s%s", self.url, prefill_probe.MEANING[self.prefill_support], tries)
            return self.prefill_support  # type: ignore[return-value]

    def _payload(self, conversation: Conversation, params: GenerationParams) -> dict[str, Any]:
        messages, prefill = split_prefill(conversation)
        messages = with_system_prompt(messages, self.system_prompt)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature if params.do_sample else 0.0,
            "top_p": params.top_p if params.do_sample else 1.0,
            "seed": params.seed,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if prefill:
            body["messages"].append({"role": "assistant", "content": prefill})
            body.update(self.prefill_params)
        return body

    def _one(self, conversation: Conversation, params: GenerationParams) -> Completion:
        data = json.dumps(self._payload(conversation, params)).encode()
        error = "no attempt made"
        wait = 0.0
        waited = 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                if wait_or_stop(wait):  # stopping: the caller drops this batch anyway
                    break
                waited += wait
            try:
                text, meta = self._post(data)
                return Completion(text=text, meta={**meta, "attempts": attempt + 1})
            except _Retryable as exc:
                error = str(exc)
                logger.debug("retryable error from %s (try %d): %s", self.url, attempt + 1, error)
                wait = self._wait(attempt, exc.retry_after)
                if exc.retry_after is not None and attempt < self.max_retries and waited + wait > self.retry_budget_s:
                    error += f" (Retry-After {exc.retry_after:g} s is past the retry budget, {self.retry_budget_s:g} s)"
                    break
            except ValueError as exc:
                error = str(exc)
                break
        return Completion(text="", error=error)

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        """The server's Retry-After when it sent one, else exponential backoff with jitter."""
        if retry_after is not None:
            return retry_after
        return self.backoff_s * 2**attempt * (1 + random.random())

    def _post(self, data: bytes) -> tuple[str, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with _NO_REDIRECTS.open(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                raise ValueError(f"HTTP {exc.code}: the endpoint redirects to {exc.headers.get('Location')!r}; "
                                 "set the base URL to the final address (redirects are not followed: the "
                                 "request would carry the API key to another address, or arrive as a GET)") from None
            message = f"HTTP {exc.code}: {self._error_detail(exc)}"
            if exc.code in RETRY_STATUS:
                raise _Retryable(message, _retry_after(exc.headers.get("Retry-After"))) from None
            raise ValueError(message) from None
        # HTTPException (BadStatusLine, IncompleteRead, ...) is no OSError: a garbled or cut-short response
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable(redact(f"{type(exc).__name__}: {reason}", self._api_key)) from None
        return _parse_content(body, self._api_key)

    def _error_detail(self, exc: urllib.error.HTTPError) -> str:
        """The start of an error response's body, redacted; reading it may fail like any response."""
        try:
            body = exc.read(64_000)
        except (OSError, http.client.HTTPException) as read_error:
            return f"(body unreadable: {type(read_error).__name__})"
        # Redact before cutting, so a key straddling the cut cannot survive in part.
        return redact(body.decode("utf-8", "replace"), self._api_key)[:300]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _parse_content(body: bytes, secret: str | None = None) -> tuple[str, dict[str, Any]]:
    """The answer text and its meta: ``finish`` (``choices[0].finish_reason``), ``usage`` and ``tokens``."""
    try:
        reply = json.loads(body)
        choice = reply["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        text = body[:64_000].decode("utf-8", "replace")
        raise ValueError(f"malformed response: {redact(text, secret)[:200]!r}") from None
    meta: dict[str, Any] = {}
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    if isinstance(finish, str):
        meta["finish"] = finish  # "stop" / "length", the HF and vLLM backends' words too
    if content is None:
        content = _no_content(choice["message"], finish, meta)
    if not isinstance(content, str):
        raise ValueError(f"malformed response: content is {type(content).__name__}")
    usage = reply.get("usage") if isinstance(reply, dict) else None
    if isinstance(usage, dict):
        meta["usage"] = usage
        if isinstance(usage.get("completion_tokens"), int):
            meta["tokens"] = usage["completion_tokens"]
    return content, meta


def _no_content(message: Any, finish: Any, meta: dict[str, Any]) -> str | None:
    """The answer of a message whose ``content`` is null: its ``refusal`` text, or "" when it was cut at the token
    limit (a reasoning model that spent ``max_tokens`` thinking; that text kept in ``meta["reasoning"]``); None
    (malformed) otherwise."""
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("refusal"), str):
        return message["refusal"]
    if finish != "length":
        return None
    reasoning = message.get("reasoning_content", message.get("reasoning"))
    if isinstance(reasoning, str):
        meta["reasoning"] = reasoning
    return ""
