"""Shared pieces of the attacker-driven attacks (tap, pap, zero_shot, crescendo, autodan mutation).

- :func:`build_llm`: an attacker or evaluator LLM from a ``ModelConfig``-like mapping (any backend), or
  the target's bare model when the mapping is empty, so the embedded model can stand in on CPU; a defended
  target's defenses act on the target queries only, never on the red-teaming instructions.
- :class:`Budget`: the per-behavior query/time budget every search attack enforces.
- :func:`ask`: one batched generate call for many conversations, with unparseable answers retried (only
  those) up to ``retries`` times within the budget; what stays unparseable comes back as None, a failed
  attempt for the caller to record, never an exception. Each conversation is sampled with the seed of its
  key and try (:func:`~safealign.eval.backends.base.with_seeds`), never of its place in the call.
- :func:`parse_json_field`, :func:`parse_rating`, :func:`parse_yes_no`: the answer formats of docs/attacks.md.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, TypeVar

from safealign.checks import at_least, positive
from safealign.errors import UserError
from safealign.eval.backends.base import ChatModel, Conversation, GenerationParams, with_seeds
from safealign.eval.defenses.base import bare_model
from safealign.interrupt import raise_if_stop_requested

T = TypeVar("T")

_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_RATING = re.compile(r"\[\[\s*(\d+)\s*\]\]")
_YES_NO = re.compile(r"\[\[\s*(YES|NO)\s*\]\]", re.IGNORECASE)


def build_llm(spec: dict[str, Any], fallback: ChatModel | None, role: str) -> ChatModel:
    """The ChatModel a ``ModelConfig`` mapping names (``{"backend": "openai", "name": ...}``), or, when the
    mapping is empty, ``fallback`` (the target) without its defenses: a defense (self-reminder, SmoothLLM,
    a perplexity filter, DeAL) must not rewrite, perturb, filter or steer the attacker's own generations."""
    if not spec:
        if fallback is None:
            raise UserError(f"{role}: no model configured and no target to fall back on")
        return bare_model(fallback)
    from safealign.eval.backends import chat_model_from_spec

    return chat_model_from_spec(spec, role)  # typed values: `system_prompt: null` stays None, quotes in text stay


def check_llm_spec(spec: dict[str, Any], where: str) -> None:
    """Unknown ``ModelConfig`` keys in an attacker/evaluator mapping fail before any model loads."""
    import dataclasses

    from safealign.eval.config import ModelConfig

    valid = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(spec) - valid)
    if unknown:
        raise UserError(f"{where}: unknown model key(s) {unknown}; valid: {', '.join(sorted(valid))}")


@dataclass
class Budget:
    """Target queries and seconds one behavior may use; None means no limit on that axis (the attack's own
    structure, e.g. depth × width, still bounds it).

    ``max_queries`` counts every target generation made for the behavior, as it does for the attacks whose
    attempts are fixed (pap, zero_shot: one query per attempt): ``reserved`` of them are kept for the
    pipeline's answers to the search's attempts (one per attempt), the rest go to the search (``queries``)."""

    max_queries: Optional[int] = None
    max_seconds: Optional[float] = None
    reserved: int = 0
    queries: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def search_queries(self) -> Optional[int]:
        """The target queries the search may send: ``max_queries`` less the reserved final answers."""
        return None if self.max_queries is None else max(0, self.max_queries - self.reserved)

    def take(self, wanted: int) -> int:
        """How many of ``wanted`` target queries may still be sent (charged now); 0 once time is up."""
        if self.timed_out:
            return 0
        limit = self.search_queries
        allowed = wanted if limit is None else max(0, min(wanted, limit - self.queries))
        self.queries += allowed
        return allowed

    @property
    def timed_out(self) -> bool:
        return self.max_seconds is not None and time.perf_counter() - self.started >= self.max_seconds

    @property
    def exhausted(self) -> bool:
        limit = self.search_queries
        return self.timed_out or (limit is not None and self.queries >= limit)

    def describe(self) -> dict[str, Any]:
        return {"target_queries": self.queries, "seconds": round(time.perf_counter() - self.started, 3),
                "budget_exhausted": self.exhausted}  # fmt: skip


def check_budget(prefix: str, max_queries: Optional[int], max_seconds: Optional[float], minimum: int = 1) -> None:
    """``minimum``: 2 for a search that needs one target query of its own besides the pipeline's final answer."""
    at_least(f"{prefix}.max_queries", max_queries, minimum,
             "the pipeline's answer to the attempt takes one, the search needs one more" if minimum > 1 else "")
    if max_seconds is not None:
        positive(f"{prefix}.max_seconds", max_seconds)


@dataclass
class AskResult:
    parsed: list[Any]  # one per conversation: the parsed value, or None after every retry failed
    raw: list[str]  # the last raw answer per conversation
    calls: int = 0  # attacker generations made (including retries)
    tries: list[int] = field(default_factory=list)  # generations made per conversation (pair counts per stream)


def ask(llm: ChatModel, conversations: Sequence[Conversation], params: GenerationParams,
        parse: Callable[[str], Optional[T]], retries: int, *, keys: Sequence[Sequence[Any]]) -> AskResult:  # fmt: skip
    """Generate for all conversations in one call; re-ask only the unparseable ones, each retry with a new
    seed so a sampling attacker does not repeat itself. ``keys`` (one per conversation: behavior id, attack, role
    and the query's place in the search, :meth:`~safealign.eval.attacks.base.Attack.query_keys`) seed each
    sampled conversation by what it asks and its try (:func:`with_seeds`): seeds by place in the call would give
    row ``i`` of every call, of every behavior, the same draws, and a resumed run other ones."""
    if len(keys) != len(conversations):
        raise ValueError(f"ask: {len(keys)} seed keys for {len(conversations)} conversations")
    parsed: list[Any] = [None] * len(conversations)
    raw = [""] * len(conversations)
    todo = list(range(len(conversations)))
    tries = [0] * len(conversations)
    calls = 0
    for attempt in range(retries + 1):
        if not todo:
            break
        raise_if_stop_requested()
        seeded = with_seeds(params if attempt == 0 else _reseed(params, attempt),
                            [(*keys[i], "try", attempt) for i in todo])  # fmt: skip
        answers = llm.generate([conversations[i] for i in todo], seeded)
        calls += len(todo)
        failed = []
        for i, answer in zip(todo, answers):
            tries[i] += 1
            raw[i] = answer.text if answer.error is None else f"(error: {answer.error})"
            value = None if answer.error else parse(answer.text)
            if value is None:
                failed.append(i)
            else:
                parsed[i] = value
        todo = failed
    return AskResult(parsed, raw, calls, tries)


def _reseed(params: GenerationParams, attempt: int) -> GenerationParams:
    import dataclasses

    return dataclasses.replace(params, seed=params.seed + 1000 * attempt)


def parse_json_field(text: str, key: str) -> Optional[str]:
    """The non-empty string ``key`` of the first JSON object in ``text`` that has it, or None."""
    for match in _JSON_OBJECT.finditer(text):
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def parse_field(text: str, key: str, lenient: bool = False) -> Optional[str]:
    """``key`` of the attacker's JSON answer; failing that, the value of a ``"key": "...`` that a cut-off or
    malformed object still holds (answers end at max_new_tokens); with ``lenient``, failing both, the whole
    answer (quotes stripped), for small attackers that cannot write JSON at all."""
    value = parse_json_field(text, key)
    if value is None:
        match = re.search(rf'"{re.escape(key)}"\s*:\s*"((?:[^"\\]|\\.)+)', text)
        if match:
            try:
                value = json.loads(f'"{match.group(1)}"').strip() or None
            except json.JSONDecodeError:  # a cut inside an escape sequence
                value = match.group(1).strip() or None
    if value is None and lenient:
        value = text.strip().strip('"').strip() or None
    return value


def parse_rating(text: str) -> Optional[int]:
    """``Rating: [[k]]`` with 1 <= k <= 10, or None."""
    match = _RATING.search(text)
    value = int(match.group(1)) if match else None
    return value if value is not None and 1 <= value <= 10 else None


def parse_yes_no(text: str) -> Optional[bool]:
    """``[[YES]]`` → True, ``[[NO]]`` → False, anything else None."""
    match = _YES_NO.search(text)
    return None if match is None else match.group(1).upper() == "YES"


def parse_line(text: str) -> Optional[str]:
    """The first non-empty line, surrounding quotes stripped (PAP and zero-shot test cases)."""
    for line in text.splitlines():
        line = line.strip().strip('"').strip()
        if line:
            return line
    return None


def attacker_params(max_new_tokens: int, temperature: float, seed: int) -> GenerationParams:
    return GenerationParams(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, seed=seed)


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}
