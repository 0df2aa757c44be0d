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


def _save(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


CONVERSATION = [{"role": "user", "content": "hi"}]
LONG = "a much longer answer that pads the short one on the left"


def test_left_padding_does_not_shift_an_absolute_position_model(tmp_path):
    """GPT-2 adds a learned embedding per position: a left-padded row must still start at position 0, as it does
    scored alone (position ids from the attention mask, as ``generate`` derives them)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from safealign.eval.reward_scorer import load_reward_scorer
    from safealign.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=4, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    score = load_reward_scorer(_save(GPT2ForSequenceClassification(config).eval(), tokenizer, tmp_path / "rm"))
    alone = score([CONVERSATION], ["ok"])[0]
    assert score([CONVERSATION] * 2, ["ok", LONG])[0] == pytest.approx(alone, abs=1e-5)


def test_an_encoder_classifier_scores_the_same_in_any_batch(tmp_path):
    """BERT pools its first position and numbers positions itself: it is right-padded (left padding would pool a
    pad token), and given no position ids."""
    from transformers import BertConfig, BertForSequenceClassification

    from safealign.eval.reward_scorer import load_reward_scorer
    from safealign.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    score = load_reward_scorer(_save(BertForSequenceClassification(config).eval(), tokenizer, tmp_path / "rm"))
    alone = score([CONVERSATION], ["ok"])[0]
    assert score([CONVERSATION] * 2, ["ok", LONG])[0] == pytest.approx(alone, abs=1e-5)


@pytest.mark.parametrize("configured_pad", [None, "bos"])
def test_a_template_ending_with_eos_is_scored_at_the_eos(tmp_path, configured_pad):
    """A tokenizer without a pad token pads with eos; the model's pad id (none, or its own) must not become eos,
    or transformers' rule (the rightmost id != pad) skips the closing eos the template writes and reads the
    token before it."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from safealign.eval.reward_scorer import load_reward_scorer
    from safealign.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.chat_template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
                               "'<|im_end|>' }}{% endfor %}")  # the assistant turn ends with eos itself
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, num_labels=1,
                         pad_token_id=tokenizer.bos_token_id if configured_pad else None)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config).eval()
    score = load_reward_scorer(_save(model, tokenizer, tmp_path / "rm"))
    texts = ["hello", "hello there"]
    got = score([CONVERSATION] * 2, texts)
    for text, value in zip(texts, got):
        rendered = tokenizer.apply_chat_template([*CONVERSATION, {"role": "assistant", "content": text}],
                                                 tokenize=False)
        ids = tokenizer(rendered, add_special_tokens=False, return_tensors="pt")["input_ids"]
        assert ids[0, -1] == tokenizer.eos_token_id
        with torch.no_grad():
            at_eos = model.score(model.model(input_ids=ids).last_hidden_state)[0, -1, 0].item()
        assert value == pytest.approx(at_eos, abs=1e-5)
        if configured_pad:  # as transformers scores the one conversation with the model's own pad id
            assert value == pytest.approx(model(input_ids=ids).logits[0, 0].item(), abs=1e-5)
