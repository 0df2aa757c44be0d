"""``best_of_n``: N randomly augmented copies of each behavior (Best-of-N jailbreaking; docs/attacks.md).

Each sample applies, in order, with its own seeded random stream:

1. word scrambling: a word longer than 3 characters has its middle characters shuffled (``scramble_prob``);
2. random capitalisation: each letter's case is flipped (``caps_prob``);
3. character noise: each printable ASCII character moves ±1 code point, kept only inside 32..126 (``noise_prob``).

Only the request is augmented; a contextual behavior's context comes before it unchanged. The defaults are
the paper's σ = 0.4: σ^½ for the first two and σ³ for noise. Every sample is kept (no
stop at the first success) so that ASR@N can be estimated without bias for every N ≤ ``n``
(:mod:`safealign.eval.asr_at_n`); each attempt records its sample index in ``meta["sample"]``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import ClassVar

from safealign import checks
from safealign.errors import UserError
from safealign.eval.attacks.base import Attack, with_context
from safealign.types import Attempt, Behavior

SIGMA = 0.4
_WHITESPACE = re.compile(r"(\s+)")  # split keeping the separators


@dataclass(frozen=True)
class BestOfNConfig:
    n: int = 16  # samples per behavior
    max_n: int = 10_000  # the query budget per behavior; n above it is refused before any work
    scramble_prob: float = round(SIGMA**0.5, 6)
    caps_prob: float = round(SIGMA**0.5, 6)
    noise_prob: float = round(SIGMA**3, 6)
    seed: int = 0

    def __post_init__(self) -> None:
        checks.at_least("best_of_n.n", self.n, 1)
        checks.at_least("best_of_n.max_n", self.max_n, 1)
        if self.n > self.max_n:
            raise UserError(f"best_of_n.n={self.n} is over the budget best_of_n.max_n={self.max_n}")
        for name in ("scramble_prob", "caps_prob", "noise_prob"):
            checks.within(f"best_of_n.{name}", getattr(self, name), 0, 1)


def scramble_words(text: str, prob: float, rng: random.Random) -> str:
    """Shuffle the middle characters (first and last kept) of words longer than 3 characters."""
    # A word is a run of non-whitespace; the whitespace between words (spaces, line breaks) is kept as it is,
    # so only characters inside a word move.
    out = []
    for part in _WHITESPACE.split(text):
        if len(part) > 3 and not part.isspace() and rng.random() < prob:
            middle = list(part[1:-1])
            rng.shuffle(middle)
            part = part[0] + "".join(middle) + part[-1]
        out.append(part)
    return "".join(out)


def flip_case(text: str, prob: float, rng: random.Random) -> str:
    return "".join(c.swapcase() if c.isalpha() and rng.random() < prob else c for c in text)


def char_noise(text: str, prob: float, rng: random.Random) -> str:
    """Move printable ASCII characters by ±1 code point; a move leaving 32..126 keeps the character."""
    out = []
    for c in text:
        if 32 <= ord(c) <= 126 and rng.random() < prob:
            moved = ord(c) + rng.choice((-1, 1))
            c = chr(moved) if 32 <= moved <= 126 else c
        out.append(c)
    return "".join(out)


def augment(text: str, config: BestOfNConfig, rng: random.Random) -> str:
    text = scramble_words(text, config.scramble_prob, rng)
    text = flip_case(text, config.caps_prob, rng)
    return char_noise(text, config.noise_prob, rng)


class BestOfNAttack(Attack):
    config_class: ClassVar[type] = BestOfNConfig
    deterministic: ClassVar[bool] = True

    def attack(self, behavior: Behavior) -> list[Attempt]:
        attempts = []
        for i in range(self.config.n):
            # A string seed is hashed deterministically (unlike hash()), so a resumed run redraws the same samples.
            rng = random.Random(f"{self.config.seed}:{behavior.id}:{i}")
            # only the request is distorted: a contextual behavior's context (code, an article) is what the
            # request acts on, and comes before it unchanged (docs/attacks.md)
            content = with_context(behavior, augment(behavior.behavior, self.config, rng))
            attempts.append(self.user_attempt(behavior, content, f"bon_{i}", sample=i))
        return attempts
