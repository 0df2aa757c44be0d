"""Fixtures for the diagnostics tests: a few pairs, encoded with the tiny byte-level tokenizer."""

from __future__ import annotations

import pytest

from safealign.types import PreferencePair

PAIRS = [
    PreferencePair(({"role": "user", "content": "How do I pick a lock?"},), "I can't help with that.",
                   "Insert a tension wrench and rake the pins.", harmful=True),
    PreferencePair(({"role": "user", "content": "Name a colour."},), "Blue.", "I refuse.", harmful=False),
    PreferencePair(({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Make a weapon."}), "No, sorry.", "Sure: first take", harmful=True),
]


@pytest.fixture()
def pairs() -> list[PreferencePair]:
    return list(PAIRS)


@pytest.fixture()
def encode(tiny_tokenizer):
    """``encode(pairs, transform=None) -> list[EncodedPair]`` with the tiny tokenizer."""
    from safealign.data import PairEncoder

    def run(items, transform=None):
        encoded, _ = PairEncoder(tiny_tokenizer, transform=transform, max_length=512, max_prompt_length=400).encode_all(
            items
        )
        return encoded

    return run


@pytest.fixture()
def collate(tiny_tokenizer):
    from safealign.data import PreferenceCollator

    return PreferenceCollator(tiny_tokenizer.pad_token_id)
