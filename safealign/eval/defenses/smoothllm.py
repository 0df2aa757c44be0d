"""SmoothLLM (Robey et al. 2023, arXiv 2310.03684): answer N randomly perturbed copies, majority-vote.

Each copy perturbs q percent of the characters of the last user message (the attack string lives there;
the chat template is never perturbed): ``swap`` replaces ``int(len·q/100)`` random positions with random
printable characters, ``patch`` overwrites one contiguous span of that length, ``insert`` adds that many
random characters. All B·N copies of a batch go to the model in ONE generate call. A copy is jailbroken
when the refusal detector (by default upstream's 13 test prefixes, ``refusal_list``) finds no refusal in its
answer (an empty answer is a refusal; upstream counts it jailbroken); the vote is
jailbroken when more than half of the scored copies are, and the answer returned is a uniformly random
copy that agrees with the vote (docs/defenses.md).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from safealign.errors import UserError
from safealign.eval.backends.base import Conversation, GenerationParams
from safealign.eval.defenses.base import Answer, Defense, copies_params, last_user_index, stable_seed, with_user_text
from safealign.types import Completion

ALPHABET = string.printable
PERTURBATIONS = ("swap", "patch", "insert")


@dataclass(frozen=True)
class SmoothLLMConfig:
    copies: int = 10  # N
    q: float = 10.0  # percent of the prompt's characters perturbed per copy
    perturbation: str = "swap"  # swap | patch | insert
    seed: int = 0
    # the refusal substrings that vote (RefusalConfig.list): upstream SmoothLLM's 13 test prefixes by default;
    # advbench_eval, advbench_attack, or custom with refusal_custom
    refusal_list: str = "smoothllm"
    refusal_custom: Optional[tuple[str, ...]] = None  # the substrings of refusal_list=custom


def perturb(text: str, q: float, kind: str, rng: random.Random) -> str:
    """``text`` with ``int(len·q/100)`` characters perturbed by ``kind`` (see the module docstring)."""
    n = int(len(text) * q / 100)
    if n == 0:
        return text
    if kind == "swap":
        chars = list(text)
        for i in rng.sample(range(len(text)), n):
            chars[i] = rng.choice(ALPHABET)
        return "".join(chars)
    if kind == "patch":
        start = rng.randrange(len(text) - n + 1)
        return text[:start] + "".join(rng.choice(ALPHABET) for _ in range(n)) + text[start + n :]
    if kind == "insert":
        chars = list(text)
        for i in sorted(rng.sample(range(len(text)), n), reverse=True):  # from the end: earlier indices stay valid
            chars.insert(i, rng.choice(ALPHABET))
        return "".join(chars)
    raise UserError(f"defense 'smoothllm': unknown perturbation {kind!r}; valid: {', '.join(PERTURBATIONS)}")


def majority_vote(jailbroken: Sequence[bool | None], rng: random.Random) -> tuple[bool | None, int | None]:
    """``(vote, index of the copy returned)`` over the scored copies (None = the copy failed); the vote is
    True when more than half are jailbroken; ``(None, None)`` when no copy was scored."""
    scored = [i for i, j in enumerate(jailbroken) if j is not None]
    if not scored:
        return None, None
    vote = sum(bool(jailbroken[i]) for i in scored) / len(scored) > 0.5
    return vote, rng.choice([i for i in scored if jailbroken[i] == vote])


class SmoothLLM(Defense):
    config_class = SmoothLLMConfig

    def __init__(self, config: SmoothLLMConfig) -> None:
        super().__init__(config)
        from safealign.eval.judges.refusal import RefusalConfig, RefusalJudge

        if config.copies < 1:
            raise UserError(f"defense 'smoothllm': copies must be >= 1, got {config.copies}")
        if not 0 <= config.q <= 100:
            raise UserError(f"defense 'smoothllm': q is a percentage in [0, 100], got {config.q}")
        if config.perturbation not in PERTURBATIONS:
            raise UserError(f"defense 'smoothllm': unknown perturbation {config.perturbation!r}; "
                            f"valid: {', '.join(PERTURBATIONS)}")  # fmt: skip
        if config.refusal_custom is not None and config.refusal_list != "custom":
            raise UserError("defense 'smoothllm': refusal_custom is read only with refusal_list=custom, got "
                            f"refusal_list={config.refusal_list!r}")  # fmt: skip
        if config.refusal_list == "custom" and not config.refusal_custom:
            raise UserError("defense 'smoothllm': refusal_list=custom needs refusal_custom, a non-empty list of "
                            "refusal substrings")  # fmt: skip
        custom = tuple(config.refusal_custom) if config.refusal_custom else None
        self.detector = RefusalJudge(RefusalConfig(list=config.refusal_list, custom=custom))

    def copies(self, conversation: Conversation) -> list[Conversation]:
        text = conversation[last_user_index(conversation)]["content"]
        rng = random.Random(stable_seed(self.config.seed, "smoothllm", *(m["content"] for m in conversation)))
        return [with_user_text(conversation, perturb(text, self.config.q, self.config.perturbation, rng))
                for _ in range(self.config.copies)]  # fmt: skip

    def jailbroken(self, completion: Completion) -> bool | None:
        if completion.error is not None:
            return None
        return bool(completion.text.strip()) and self.detector.refusal_match(completion.text) is None

    def respond(self, inner: Any, conversations: Sequence[Conversation], params: GenerationParams) -> list[Answer]:
        n = self.config.copies
        copies = [c for conversation in conversations for c in self.copies(conversation)]
        completions = inner.generate(copies, copies_params(params, n))  # one call: the backend batches all B·N copies
        answers = []
        for b, conversation in enumerate(conversations):
            mine = completions[b * n : (b + 1) * n]
            perturbed = [c[last_user_index(c)]["content"] for c in copies[b * n : (b + 1) * n]]
            votes = [self.jailbroken(c) for c in mine]
            rng = random.Random(stable_seed(self.config.seed, "vote", *(m["content"] for m in conversation)))
            vote, pick = majority_vote(votes, rng)
            scored = [v for v in votes if v is not None]
            step = self.step("select", mine, candidates=[c.text for c in mine],
                             score=sum(scored) / len(scored) if scored else None,
                             detail={"votes": votes, "jailbroken": vote, "picked": pick,
                                     "perturbed": perturbed})
            chosen = mine[pick] if pick is not None else Completion(text="", error=mine[0].error or "no copy answered")
            answers.append(Answer(chosen, step))
        return answers
