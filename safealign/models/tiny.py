"""Tiny randomly initialised models for tests, smoke runs and CPU benchmarks (no downloads).

The tokenizer is byte-level (256 byte tokens plus chat specials) with a ChatML chat template, the
same template family as the embedded SmolLM2 model, so every code path that applies chat templates
runs unchanged on it.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_SEED = 0  # the seed tiny-random is initialised with; model identities record it


def tiny_tokenizer(*, reversed_alphabet: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: every string round-trips, no training, no files. ``reversed_alphabet``: the same
    size and special tokens with every byte under another id (tests of checks a vocabulary size cannot pass)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), reverse=reversed_alphabet)
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model(
    vocab_size: int | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = TINY_SEED,
) -> LlamaForCausalLM:
    """A Llama-architecture model with random weights, sized for unit tests (fp32, CPU)."""
    tokenizer_vocab = len(tiny_tokenizer())
    config = LlamaConfig(
        vocab_size=vocab_size or tokenizer_vocab,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return model
