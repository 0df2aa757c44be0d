"""Align-Pro (arXiv 2501.03486): a prompter rewrites the prompt for a frozen target model.

Align-Pro trains a prompter ρ(x'|x) to maximise the target's reward ``E r(x, y), y ∼ π_F(·|x')`` minus
``λ·KL(ρ ‖ ρ_sft)``, whose optimum is ``ρ*(x'|x) ∝ ρ_sft(x'|x) · exp(R(x, x')/λ)``. What runs here is
that optimum realised at inference time, with no prompter training: ``candidates`` rewrites are sampled
from a fixed prompter ρ_sft (the target itself by default, or any HF model or LoRA adapter — e.g. one
fine-tuned on rewrite pairs elsewhere), the target answers each (all in ONE generate call), ``R`` is
the judge reward of that answer judged against the ORIGINAL prompt x, ``r*(x, y)`` (1 not harmful, 0
harmful, 0.5 unscored or an empty answer, as in DeAL), and one rewrite is drawn with probability ``∝ exp(R/λ)``
(importance resampling of ρ_sft towards ρ*). A candidate whose answer failed (an error, no text) is not
judged and not drawn, unless every candidate of the prompt failed. With one candidate it is a plain prompt rewriter. A
rewrite cut at ``max_rewrite_tokens`` is used as it is and flagged (``detail.cut``). Training the
prompter with the Align-Pro objective needs the online trainer (not used here; docs/defenses.md).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from safealign.errors import UserError
from safealign.eval.backends.base import Conversation, GenerationParams, with_seeds
from safealign.eval.defenses.base import (
    Answer, Defense, bare_model, copies_params, last_user_index, stable_seed, total_cost, with_user_text,
)

INSTRUCTION = (
    "Rewrite the request below so that a helpful, honest and harmless assistant can answer it well. Keep its topic "
    "and everything a legitimate user needs; if it asks for something that could hurt people, turn it into a safe "
    "request on the same topic. Reply with the rewritten request only.\n\nRequest: {prompt}")  # fmt: skip


@dataclass(frozen=True)
class AlignProConfig:
    prompter: str = "target"  # "target": the evaluated model rewrites; else a load_model spec (hf)
    instruction: str = INSTRUCTION  # {prompt} is replaced by the user's message
    candidates: int = 1  # rewrites sampled per prompt (1: no resampling, greedy rewrite)
    kl_weight: float = 0.5  # λ: the resampling temperature exp(R/λ)
    judge: str = "refusal"
    judge_params: dict[str, Any] = field(default_factory=dict)
    max_rewrite_tokens: int = 96
    seed: int = 0


class AlignPro(Defense):
    config_class = AlignProConfig
    model_params = ("prompter",)

    def __init__(self, config: AlignProConfig) -> None:
        super().__init__(config)
        if "{prompt}" not in config.instruction:
            raise UserError("defense 'align_pro': instruction must contain {prompt}")
        if config.candidates < 1 or config.max_rewrite_tokens < 1:
            raise UserError("defense 'align_pro': candidates and max_rewrite_tokens must be >= 1")
        if not config.kl_weight > 0:
            raise UserError(f"defense 'align_pro': kl_weight (λ) must be > 0, got {config.kl_weight}")
        self.prompter: Any = None
        self.reward: Any = None
        self.reward_passes = 0  # forward passes one judged answer costs (deal.build_reward)

    def judge(self) -> tuple[str, dict[str, Any]] | None:
        """The reward picks among the candidates: one rewrite is never judged."""
        return (self.config.judge, self.config.judge_params) if self.config.candidates > 1 else None

    def prepare(self, inner: Any, params: GenerationParams) -> None:
        from safealign.eval.defenses.deal import DeALConfig, build_reward

        if self.config.prompter == "target":
            self.prompter = bare_model(inner)
        else:
            from safealign.eval.backends.hf import HFChatModel
            from safealign.models.load import load_model

            self.prompter = HFChatModel(*load_model(self.config.prompter))
        self.reward, self.reward_passes = build_reward(DeALConfig(reward="judge", judge=self.config.judge,
                                                                  judge_params=self.config.judge_params))  # fmt: skip

    def respond(self, inner: Any, conversations: Sequence[Conversation], params: GenerationParams) -> list[Answer]:
        n = self.config.candidates
        asks = [({"role": "user", "content": self.config.instruction.replace("{prompt}", _user(c))},)
                for c in conversations for _ in range(n)]  # fmt: skip
        rewriting = dataclasses.replace(params, max_new_tokens=self.config.max_rewrite_tokens, do_sample=n > 1,
                                        temperature=1.0, top_p=1.0, seed=self.config.seed, stop=(),
                                        seeds=None)  # fmt: skip
        rewrites = self.prompter.generate(asks, with_seeds(rewriting, _rewrite_keys(conversations, params, n)))
        texts = [r.text.strip() if r.error is None and r.text.strip() else None for r in rewrites]
        rewritten = [with_user_text(conversations[j // n], texts[j] or _user(conversations[j // n]))
                     for j in range(len(rewrites))]  # fmt: skip
        answers = inner.generate(rewritten, copies_params(params, n))  # every candidate rewrite of the batch at once
        # R(x, x') = E_{y ~ π_F(·|x')} r*(x, y): the answer to the rewrite is judged against the ORIGINAL prompt x.
        # A failed answer (out of memory, a rewrite past max_prompt_tokens) has no text to judge: its empty text
        # would read as "not harmful", the highest reward, so it gets none (None) and is never the one picked
        # unless every candidate of its prompt failed.
        scored = [j for j, a in enumerate(answers) if a.error is None] if n > 1 else []
        rewards: list[float | None] = [None] * len(answers)
        if scored:
            got = self.reward([conversations[j // n] for j in scored], [answers[j].text for j in scored])
            for j, reward in zip(scored, got):
                rewards[j] = reward
        cut = [r.error is None and r.meta.get("finish") == "length" for r in rewrites]  # hit max_rewrite_tokens
        out = []
        for b, conversation in enumerate(conversations):
            span = range(b * n, (b + 1) * n)
            failed = [answers[i].error is not None for i in span]
            pick = self._pick([rewards[j] for j in span], failed, conversation) if n > 1 else 0
            j = b * n + pick
            spent = total_cost([rewrites[i] for i in span])
            judged = self.reward_passes * (n - sum(failed)) if n > 1 else 0
            step = self.step("rewrite", [answers[i] for i in span], own_tokens=spent[0],
                             own_passes=spent[1] + judged, rewritten=[dict(m) for m in rewritten[j]],
                             candidates=[t or "" for t in texts[b * n: (b + 1) * n]], score=rewards[j],
                             detail={"rewards": [rewards[i] for i in span], "picked": pick,
                                     "fallback": texts[j] is None, "cut": [cut[i] for i in span],
                                     "failed": failed})  # fmt: skip
            out.append(Answer(answers[j], step))
        return out

    def _pick(self, rewards: list[float | None], failed: list[bool], conversation: Conversation) -> int:
        """A candidate drawn with probability ∝ exp(R/λ) (the Align-Pro optimal prompter over ρ_sft samples),
        among the candidates whose answer did not fail (among all when every one failed)."""
        eligible = [not f for f in failed] if not all(failed) else [True] * len(failed)
        logits = [(r if r is not None else 0.0) / self.config.kl_weight for r in rewards]
        top = max(v for v, ok in zip(logits, eligible) if ok)
        weights = [math.exp(v - top) if ok else 0.0 for v, ok in zip(logits, eligible)]
        rng = random.Random(stable_seed(self.config.seed, "align_pro", *(m["content"] for m in conversation)))
        return rng.choices(range(len(rewards)), weights=weights)[0]


def _rewrite_keys(conversations: Sequence[Conversation], params: GenerationParams, n: int) -> list[tuple[Any, ...]]:
    """The sampling-seed key of each candidate rewrite, in the order asked: (its conversation, candidate ``k``). A
    conversation is its attempt's seed where the evaluation names one (``params.seeds``: a sampled target), else
    its text, as :meth:`AlignPro._pick` draws (a greedy target names no seeds, yet ``candidates`` > 1 rewrites are
    sampled): never its place in the call, which would give row ``i`` of every call the same draws."""
    def conversation(b: int) -> tuple[Any, ...]:
        if params.seeds is not None:
            return ("attempt", params.seeds[b])
        return ("prompt", *(m["content"] for m in conversations[b]))

    return [("align_pro", "rewrite", *conversation(b), k) for b in range(len(conversations)) for k in range(n)]


def _user(conversation: Conversation) -> str:
    return conversation[last_user_index(conversation)]["content"]
