"""One scalar reward per (conversation, answer), from either kind of reward model a user has:

- a folder written by a ``trainer: reward`` recipe (``safealign/eval/reward_model.py``: a backbone and a
  scalar head), scored with its own encoding;
- any ``AutoModelForSequenceClassification`` (a folder or hub id): the first logit on the chat-formatted
  conversation plus answer (tokenized as the chat template writes it, without adding special tokens again),
  as transformers scores that one conversation unpadded, in whatever batch it comes. A decoder-only model
  reads the rightmost token whose id is not its configured pad id (the last token where it configures none):
  its rows are left-padded so that token is in the last column, with position ids that start at 0 on each
  row's first real token (as ``generate`` numbers them; GPT-2's learned positions would shift otherwise). An
  encoder (BERT, RoBERTa, DeBERTa: it pools its first position) or an encoder-decoder is right-padded.

Used by DeAL's reward (``eval/defenses/deal.py``) and the reward-model win rate (``safealign diagnose
win-rate --reward-model``). ``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

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
    from safealign.eval.reward_model import load_reward_model, score_texts, scoring_lengths

    model, tokenizer, meta = load_reward_model(path)
    lengths = scoring_lengths(meta)  # those it was trained with

    def score(conversations: Sequence[Conversation], texts: Sequence[str]) -> list[float]:
        return score_texts(model, tokenizer, [tuple(c) for c in conversations], list(texts), batch_size=batch_size,
                           **lengths)

    return score


def _sequence_classifier(spec: str, batch_size: int, what: str) -> RewardScorer:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from safealign.eval.defenses.tokens import Batch

    try:
        model = AutoModelForSequenceClassification.from_pretrained(spec).eval()
        tokenizer = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise UserError(f"{what}: cannot load {spec!r} as a sequence-classification model or a safealign reward "
                        f"model folder: {exc}") from exc
    if tokenizer.pad_token_id is None:  # what fills the padding only: the attention mask hides it
        tokenizer.pad_token = tokenizer.eos_token
    decoder = _decoder_only(model.config)
    text_config = model.config.get_text_config()
    if decoder and text_config.pad_token_id is None:
        # transformers refuses a batch without a pad id. Not eos: its rule (the rightmost id != pad) would skip
        # the closing eos a chat template writes and read the token before it. -1 is no token's id, so the rule
        # reads the last column, which left padding makes every row's last real token, as for one unpadded row.
        text_config.pad_token_id = -1
    tokenizer.padding_side = "left" if decoder else "right"
    positions = decoder and "position_ids" in inspect.signature(model.forward).parameters
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
            if positions:
                enc["position_ids"] = Batch(enc["input_ids"], enc["attention_mask"]).positions
            with torch.no_grad():
                scores.extend(model(**enc).logits[:, 0].float().tolist())
        return scores

    return score


def _decoder_only(config: Any) -> bool:
    """A decoder-only architecture: one with a causal-LM class and no masked-LM one (BERT and RoBERTa have
    both) and not an encoder-decoder."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    kind = config.model_type
    return (kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
            and not config.is_encoder_decoder)
