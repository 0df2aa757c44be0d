"""Tokenizers that differ from the tiny one in ways a size check cannot see (tests of reference/teacher checks)."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from safealign.models.tiny import CHATML_TEMPLATE, SPECIAL_TOKENS


def reversed_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny tokenizer's size and specials with its byte alphabet reversed: every byte gets another id."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())[::-1]
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
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
