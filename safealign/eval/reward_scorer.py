"""One scalar reward per (conversation, answer), from either kind of reward model a user has:

- a folder written by a ``trainer: reward`` recipe (``safealign/eval/reward_model.py``: a backbone and a
  scalar head), scored with its own encoding;
- any ``AutoModelForSequenceClassification`` (a folder or hub id): the first logit on the chat-formatted
  conversation plus answer (tokenized as the chat template writes it, without adding special tokens again),
  left-padded so every row's last position is a real token.

Used by DeAL's reward (``eval/defenses/deal.py``) and the reward-model win rate (``safealign diagnose
win-rate --reward-model``). ``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from safealign.errors import UserError
from safealign.types import Message

Conversation = Sequence[Message]
RewardScorer = Callable[[Sequence[Conversation], Sequence[str]], list[float]]


def load_reward_scorer(spec: str, *, batch_size: int = 8, what: str = "reward model") -> RewardScorer:
    """A scorer for ``spec`` (either kind above); errors name ``what`` (e.g. "defense 'deal': reward_model")."""
    from safealign.eval.reward_model import check_kind, is_reward_model_dir

    if is_reward_model_dir(spec):
        check_kind(spec, "reward", what)  # a cost model (cost > 0 = unsafe) would prefer unsafe answers
        return _trained_scorer(spec, batch_size)
    return _sequence_classifier(spec, batch_size, what)


def _trained_scorer(path: str, batch_size: int) -> RewardScorer:
    from safealign.eval.reward_model import load_reward_model, score_texts

    model, tokenizer, _ = load_reward_model(path)

    def score(conversations: Sequence[Conversation], texts: Sequence[str]) -> list[float]:
        return score_texts(model, tokenizer, [tuple(c) for c in conversations], list(texts), batch_size=batch_size)

    return score


def _sequence_classifier(spec: str, batch_size: int, what: str) -> RewardScorer:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(spec).eval()
        tokenizer = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise UserError(f"{what}: cannot load {spec!r} as a sequence-classification model or a safealign reward "
                        f"model folder: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "left"  # every row's last position is a real token, whichever rule the model uses

    templated = bool(tokenizer.chat_template)

    def score(conversations: Sequence[Conversation], texts: Sequence[str]) -> list[float]:
        full = [[*c, {"role": "assistant", "content": t}] for c, t in zip(conversations, texts)]
        rendered = [tokenizer.apply_chat_template(m, tokenize=False) if templated
                    else "\n".join(x["content"] for x in m) for m in full]  # fmt: skip
        scores: list[float] = []
        for start in range(0, len(rendered), batch_size):
            # a chat template writes its own special tokens ({{ bos_token }}): adding them again would score a
            # sequence that starts with two BOS, one the model never saw in training
            enc = tokenizer(rendered[start:start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=not templated)
            with torch.no_grad():
                scores.extend(model(**enc).logits[:, 0].float().tolist())
        return scores

    return score
