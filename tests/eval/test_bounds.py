"""Input bounds (safealign/eval/bounds.py): oversized behaviors are rejected, skipped or truncated per
``behaviors.too_long`` with a count in the summary; prompts past the model's context are never run."""

from __future__ import annotations

import json

import pytest

from safealign.errors import UserError
from safealign.eval.backends import GenerationParams
from safealign.eval.backends.hf import HFChatModel
from safealign.eval.config import EvalConfig
from safealign.eval.pipeline import run_eval
from safealign.eval.summary import format_table
from safealign.report import build_report
from safealign.types import Behavior

from .fakes import KeywordJudge, ScriptedChatModel, user_text

HUGE = "x" * 5_000_000  # the 5 MB behavior that used to stall an evaluation


def _behaviors(long_text: str, context: str = "") -> list[Behavior]:
    return [Behavior("short", "do a", source="b.jsonl", row=0),
            Behavior("long", long_text, context=context, source="b.jsonl", row=1)]  # fmt: skip


def _config(tmp_path, **behaviors) -> EvalConfig:
    config = EvalConfig(judges=["kw"], output_dir=str(tmp_path / "run"))
    for key, value in behaviors.items():
        setattr(config.behaviors, key, value)
    return config


def test_huge_behavior_is_rejected_by_default_before_the_model_loads(tmp_path, no_model_load):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"id": "ok", "behavior": "do a"}) + "\n" + json.dumps({"id": "big", "behavior": HUGE}))
    config = EvalConfig(output_dir=str(tmp_path / "run"))
    config.behaviors.path = str(path)
    with pytest.raises(UserError, match=r"1 of 2 behaviors are longer than 32000 characters.*'big'.*row 1, 5000000"):
        run_eval(config)


def test_skip_drops_and_counts(tmp_path):
    fake = ScriptedChatModel(lambda c: "I refuse")
    summary = run_eval(_config(tmp_path, too_long="skip"), chat_model=fake, behaviors=_behaviors(HUGE),
                       judges={"kw": KeywordJudge()})  # fmt: skip
    assert [user_text(c) for call in fake.calls for c in call] == ["do a"]
    assert summary.input_bounds == {"too_long": "skip", "skipped": 1, "truncated": 0}
    assert summary.attacks["direct"]["kw"].n == 1
    assert "warning: 1 behavior(s) skipped for length (behaviors.too_long=skip)" in format_table(summary)
    _, md = build_report(tmp_path / "run")
    assert "1 behavior(s) skipped for length" in md.read_text()


def test_truncate_cuts_the_context_first(tmp_path):
    fake = ScriptedChatModel(lambda c: "I refuse")
    config = _config(tmp_path, too_long="truncate", max_chars=100)
    summary = run_eval(config, chat_model=fake, behaviors=_behaviors("do b", context="c" * 500),
                       judges={"kw": KeywordJudge()})  # fmt: skip
    sent = [user_text(c) for call in fake.calls for c in call]
    assert sent[1] == "c" * 89 + "\n\n---\n\ndo b" and len(sent[1]) == 100  # the request itself is kept whole
    assert summary.input_bounds["truncated"] == 1


def test_token_bound_from_the_config_rejects_or_truncates(tmp_path, tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    long_text = "word " * 300
    config = _config(tmp_path)
    config.generation.max_prompt_tokens = 40
    config.generation.max_new_tokens = 2
    with pytest.raises(UserError, match=r"longer than 40 prompt tokens \(generation.max_prompt_tokens"):
        run_eval(config, chat_model=chat, behaviors=_behaviors(long_text), judges={"kw": KeywordJudge()})
    config.behaviors.too_long = "truncate"
    config.output_dir = str(tmp_path / "run2")
    summary = run_eval(config, chat_model=chat, behaviors=_behaviors(long_text), judges={"kw": KeywordJudge()})
    assert summary.input_bounds["truncated"] == 1
    records = [json.loads(line) for line in (tmp_path / "run2" / "records.jsonl").read_text().splitlines()]
    params = GenerationParams()
    for record in records:
        assert chat.prompt_tokens(tuple(record["messages"]), params) <= 40 and record["completion"]["error"] is None


def test_default_token_limit_is_the_context_length(tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    limit, source = chat.prompt_limit(GenerationParams(max_new_tokens=48))
    assert limit == tiny_model.config.max_position_embeddings - 48 and "context length" in source


def test_backend_never_runs_a_prompt_past_the_limit(tiny_model, tiny_tokenizer, monkeypatch):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    seen = []
    original = chat._generate_batch

    def spy(prompts, params, **kwargs):
        seen.extend(prompts)
        return original(prompts, params, **kwargs)

    monkeypatch.setattr(chat, "_generate_batch", spy)
    convs = [({"role": "user", "content": "hi"},), ({"role": "user", "content": "word " * 200},)]
    ok, too_long = chat.generate(convs, GenerationParams(max_new_tokens=2, max_prompt_tokens=30))
    assert ok.error is None and len(seen) == 1 and "word" not in seen[0]
    assert too_long.text == "" and too_long.error.startswith("prompt too long:") and too_long.meta["too_long"]


def test_cut_gives_a_prompt_of_the_asked_length():
    """``cut(b, n)`` is ``b`` with its prompt (``behavior_prompt``: context, HarmBench's separator, request) cut to
    ``n`` characters: the context goes first, and the room for it leaves out the separator's own length."""
    from safealign.data.behaviors import CONTEXT_JOIN, behavior_prompt
    from safealign.eval.bounds import cut

    behavior = Behavior("c", "do b", context="c" * 50)
    full = len(behavior_prompt(behavior))
    for n in range(full + 1):
        kept = cut(behavior, n)
        assert len(behavior_prompt(kept)) <= n
        if n > len(CONTEXT_JOIN) + len("do b"):  # room for some context: the request is kept whole
            assert behavior_prompt(kept) == "c" * (n - len(CONTEXT_JOIN) - 4) + CONTEXT_JOIN + "do b"
            assert len(behavior_prompt(kept)) == n
    assert cut(behavior, full) == behavior
