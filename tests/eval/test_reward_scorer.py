"""A sequence-classification reward model scores the chat-formatted conversation exactly as its template writes it."""

from __future__ import annotations

import pytest
import torch


def test_a_template_that_writes_bos_is_not_given_a_second_one(tmp_path):
    """Llama-3 / Gemma style: the tokenizer adds BOS by itself and the chat template writes ``{{ bos_token }}`` too;
    tokenizing the rendered text with special tokens would start every scored sequence with two BOS."""
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from safealign.eval.reward_scorer import load_reward_scorer
    from safealign.models.tiny import CHATML_TEMPLATE, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    bos = tokenizer.bos_token
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    tokenizer.chat_template = "{{ bos_token }}" + CHATML_TEMPLATE
    assert tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id  # it adds BOS itself
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    conversation = [{"role": "user", "content": "hi"}]
    score = load_reward_scorer(str(tmp_path / "rm"))([conversation], ["hello"])
    rendered = tokenizer.apply_chat_template([*conversation, {"role": "assistant", "content": "hello"}], tokenize=False)
    once = tokenizer(rendered, add_special_tokens=False, return_tensors="pt")
    twice = tokenizer(rendered)["input_ids"]
    assert twice[:2] == [tokenizer.bos_token_id] * 2 and twice[1:] == once["input_ids"][0].tolist()
    with torch.no_grad():
        expected = model(**once).logits[0, 0].item()
    assert score == [pytest.approx(expected, abs=1e-6)]
