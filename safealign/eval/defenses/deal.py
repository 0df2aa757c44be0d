"""DeAL (Huang et al. 2024, arXiv 2402.06147): decoding as search, scored by log-prob + λ·reward.

At each step, for every prompt: the model's top-k next tokens are the candidates; each is extended by a
greedy lookahead of ``lookahead − 1`` tokens (all B·k rollouts in ONE generate call); a candidate's
score is the paper's ``log π(y_≤t | x) + λ·R(x, y_≤t+L)``: the log-prob of the answer so far and the
candidate token alone, plus λ times the reward of the partial answer with the whole lookahead. The
lookahead feeds only the reward, also where ``commit`` keeps more of it than its first token: summing its
log-probs too favoured a rollout cut short by an end token (2 log-probs against 8). The best candidate's
first ``commit`` tokens are kept (``commit`` = None keeps the whole rollout: chunk-level search,
``lookahead``× fewer steps than the token-level search of ``commit: 1``) and the search goes on until an
end token (the bare model's: tokenizer eos, ``generation_config.eos_token_id``, pad) or ``max_new_tokens``.
The search is deterministic: ``generation.do_sample`` is not used (a warning says so).

Reward: ``judge`` (1 when the named judge finds the partial answer not harmful, 0 when harmful, 0.5
unscored, as is an empty or whitespace-only answer, which a judge would read as not harmful, a refusal's
reward; the refusal judge steers towards refusals, so over-refusal is the price to watch) or
``model`` (the first logit of any HF sequence-classification reward model on the chat-formatted
prompt and answer). Needs the local HF model (docs/defenses.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from safealign.errors import UserError
from safealign.eval.backends.base import Conversation, GenerationParams, decode_answer, stop_ids, truncate_at_stop
from safealign.eval.defenses.base import Answer, Defense, last_user_index, token_model
from safealign.eval.defenses.tokens import (
    Batch, answer_ends, answers_within_limit, encode, holds_stop, next_logprobs, to_completion,
)
from safealign.types import Behavior, Completion

logger = logging.getLogger(__name__)
Reward = Callable[[Sequence[Conversation], Sequence[str]], list[float]]


@dataclass(frozen=True)
class DeALConfig:
    top_k: int = 4
    lookahead: int = 8  # tokens per candidate, its first token included
    commit: Optional[int] = None  # tokens kept per step; None: the whole winning rollout
    reward_weight: float = 1.0  # λ
    reward: str = "judge"  # judge | model
    judge: str = "refusal"
    judge_params: dict[str, Any] = field(default_factory=dict)
    reward_model: str = ""  # reward=model: a sequence-classification model folder or hub id


@dataclass(frozen=True)
class Candidate:
    tokens: list[int]  # ends with the end token when the candidate ends the answer
    token_logps: list[float]  # log π of each token given the prompt, the answer so far and the tokens before
    reward: float
    score: float  # log π(answer so far + the first token | prompt) + λ·reward (the lookahead: reward only)
    text: str  # the answer so far + these tokens, decoded (cut at a stop string)
    ended: bool = False  # the last token is an end token (not counted as generated, as the bare backend)
    stopped: bool = False  # the last token completes a stop string (generation.stop): the answer ends with it

    @property
    def generated(self) -> int:
        return len(self.tokens) - int(self.ended)


class DeAL(Defense):
    config_class = DeALConfig
    access = "tokens"
    model_params = ("reward_model",)

    def __init__(self, config: DeALConfig) -> None:
        super().__init__(config)
        if config.top_k < 1 or config.lookahead < 1 or (config.commit is not None and config.commit < 1):
            raise UserError("defense 'deal': top_k, lookahead and commit must be >= 1")
        if config.reward not in ("judge", "model"):
            raise UserError(f"defense 'deal': reward must be 'judge' or 'model', got {config.reward!r}")
        if config.reward == "model" and not config.reward_model:
            raise UserError("defense 'deal': reward=model needs reward_model (a sequence-classification model)")
        if config.reward == "model":  # before anything loads: a cost model would steer towards unsafe answers
            from safealign.eval.reward_model import check_kind

            check_kind(config.reward_model, "reward", "defense 'deal': reward_model")
        self.reward_fn: Reward | None = None  # set by prepare(), or by a caller before it
        self.reward_passes = 0  # forward passes one reward call costs per candidate (a reward model: 1)
        self.ends: set[int] = set()
        self.sampling_ignored = False

    def judge(self) -> tuple[str, dict[str, Any]] | None:
        return (self.config.judge, self.config.judge_params) if self.config.reward == "judge" else None

    def prepare(self, inner: Any, params: GenerationParams) -> None:
        self.model, self.tokenizer = token_model(self.name, inner)
        self.ends = stop_ids(self.tokenizer, self.model)  # where the bare model stops (generation_config included)
        if self.reward_fn is None:
            self.reward_fn, self.reward_passes = build_reward(self.config)
        self.sampling_ignored = params.do_sample
        if params.do_sample:
            logger.warning("defense deal: the search is deterministic (top-k candidates, greedy lookahead, best "
                           "score); generation.do_sample, temperature and top_p are not used")  # fmt: skip

    def respond(self, inner: Any, conversations: Sequence[Conversation], params: GenerationParams) -> list[Answer]:
        ends = answer_ends(self.tokenizer, self.ends, params.stop)  # refuses a bad stop string before any batch
        return answers_within_limit(self, inner, conversations, params,
                                    lambda chunk: self.search(inner, chunk, params, ends))  # fmt: skip

    def search(self, inner: Any, conversations: Sequence[Conversation], params: GenerationParams,
               ends: set[int]) -> list[Answer]:  # fmt: skip
        """The answers of ``conversations``, each ending at the first of ``ends`` (:func:`~.tokens.answer_ends`)."""
        device = next(self.model.parameters()).device
        prompts = encode(self.tokenizer, [inner.render(c, params) for c in conversations], params, device)
        n = len(conversations)
        prompt_ids = [prompts.real(i) for i in range(n)]
        answer: list[list[int]] = [[] for _ in range(n)]
        logp, ended, stopped = [0.0] * n, [False] * n, [False] * n
        last: list[list[Candidate]] = [[] for _ in range(n)]
        spent, passes, steps = [0] * n, [0] * n, [0] * n
        started = time.perf_counter()
        while active := [i for i in range(n)
                         if not (ended[i] or stopped[i]) and len(answer[i]) < params.max_new_tokens]:
            rows = prompts.rows(active)
            if answer[active[0]]:  # every active row has kept the same number of tokens so far
                rows = rows.extend(torch.tensor([answer[i] for i in active], device=device))
            length = min(self.config.lookahead, params.max_new_tokens - len(answer[active[0]]))
            candidates = self.candidates([conversations[i] for i in active], rows, [answer[i] for i in active],
                                         [logp[i] for i in active], length, params.stop, ends=ends,
                                         prompts=[prompt_ids[i] for i in active])  # fmt: skip
            for i, options in zip(active, candidates):
                best = max(options, key=lambda c: c.score)  # first of equal scores: the likelier top-k token
                keep = best.tokens[: self.config.commit or len(best.tokens)]
                answer[i] += keep
                logp[i] += sum(best.token_logps[: len(keep)])  # log π of the answer kept so far
                ended[i] = any(t in ends for t in keep)
                stopped[i] = best.stopped and len(keep) == len(best.tokens)
                last[i] = options
                spent[i] += sum(c.generated for c in options)
                passes[i] += 1 + self.reward_passes * len(options)
                steps[i] += 1
        seconds = (time.perf_counter() - started) / n
        out = []
        for i in range(n):
            completion = to_completion(self.tokenizer, prompt_ids[i], answer[i], params, ends=ends, ended=ended[i],
                                       seconds=seconds)  # fmt: skip
            best = max(last[i], key=lambda c: c.score) if last[i] else None
            step = self.step("decode", own_tokens=spent[i], own_passes=passes[i],
                             candidates=[c.text for c in last[i]], score=best.score if best else None,
                             detail={"steps": steps[i], "last_scores": [round(c.score, 4) for c in last[i]],
                                     "last_rewards": [c.reward for c in last[i]], "logp": round(logp[i], 4),
                                     "last_tokens": [c.tokens for c in last[i]]})
            out.append(Answer(completion, step))
        return out

    def candidates(self, conversations: Sequence[Conversation], rows: Batch, answers: Sequence[list[int]],
                   logps: Sequence[float], length: int, stop: Sequence[str] = (), *, ends: set[int],
                   prompts: Sequence[Sequence[int]]) -> list[list[Candidate]]:  # fmt: skip
        """Top-k next tokens per row, each rolled out greedily to ``length`` tokens, cut after an end token (of
        ``ends``) or the token completing a ``stop`` string (its tokens and reward end there, as the answer would),
        scored by ``logps`` (the answer so far) + the candidate token's log-prob + λ·the reward of its whole text.
        A candidate's text is the answer so far and its tokens read after the row's prompt ``prompts``, as the
        answer would read (:func:`~safealign.eval.backends.base.decode_answer`)."""
        k = self.config.top_k
        first_lp, first = next_logprobs(self.model, rows).topk(k, dim=-1)  # (A, k)
        expanded = rows.repeat(k).extend(first.reshape(-1))
        tokens, token_lps = self.rollout(expanded, length - 1)  # (A·k, ≤ length−1)
        flat: list[tuple[int, list[int], list[float]]] = []
        for j in range(expanded.ids.shape[0]):
            row, col = divmod(j, k)
            ids = [int(first[row, col])] + tokens[j].tolist()
            lps = [float(first_lp[row, col])] + token_lps[j].tolist()
            cut = next((p + 1 for p, t in enumerate(ids) if t in ends), len(ids))  # keep the end token itself
            if stop:  # the first token at which the answer holds a stop string ends it (an end token can't)
                cut = next((p + 1 for p in range(cut)
                            if holds_stop(self.tokenizer, prompts[row], answers[row] + ids[: p + 1], stop)), cut)
            flat.append((row, ids[:cut], lps[:cut]))
        texts = [truncate_at_stop(decode_answer(self.tokenizer, prompts[r], answers[r] + ids), stop)
                 for r, ids, _ in flat]  # fmt: skip
        rewards = self.reward_fn([conversations[r] for r, _, _ in flat], [text for text, _ in texts])
        out: list[list[Candidate]] = [[] for _ in range(rows.ids.shape[0])]
        for (row, ids, lps), (text, stopped), reward in zip(flat, texts, rewards):
            # log π(y_≤t | x) + λ·R(x, y_≤t+L) (DeAL's c(y_t)): the lookahead is read by the reward only
            score = logps[row] + lps[0] + self.config.reward_weight * float(reward)
            out[row].append(Candidate(ids, lps, float(reward), score, text, ended=ids[-1] in ends, stopped=stopped))
        return out

    def rollout(self, batch: Batch, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy continuations of ``n`` tokens for every row in one generate call, with their log-probs
        under the model's own (unprocessed) distribution; ``(N, ≤ n)`` each (generation stops early when
        every row has ended; an ended row is padded)."""
        from safealign.eval.backends.hf import explicit_generation_config

        rows = batch.ids.shape[0]
        if n <= 0:
            return batch.ids.new_zeros((rows, 0)), torch.zeros((rows, 0))
        # greedy under the model's own distribution alone: a generation_config's shipped repetition_penalty or
        # no_repeat_ngram_size would otherwise pick other lookahead tokens than the ones scored here (as in the hf
        # backend, which never applies them either)
        settings = explicit_generation_config(self.tokenizer, self.model, max_new_tokens=n, do_sample=False)
        settings.return_dict_in_generate, settings.output_logits = True, True
        with torch.no_grad():
            out = self.model.generate(input_ids=batch.ids, attention_mask=batch.mask, generation_config=settings)
        new = out.sequences[:, batch.ids.shape[1] :]
        logits = torch.stack(out.logits, 1).float()  # (N, n', V)
        return new, torch.log_softmax(logits, -1).gather(-1, new.unsqueeze(-1)).squeeze(-1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "search": "chunk" if self.config.commit is None else "token",
                "reward_passes_per_candidate": self.reward_passes,
                "sampling_ignored": self.sampling_ignored}  # fmt: skip


def build_reward(config: DeALConfig) -> tuple[Reward, int]:
    """The reward function of ``config`` and the forward passes one call costs per candidate: a reward
    model 1; a judge that runs a model (classifier, llm, strongreject, or a stack holding one) 1, its
    verdict's own generated tokens not counted; a string-matching judge (refusal) 0. A judge reward leaves an
    empty or whitespace-only text unscored (0.5): judges read it as not harmful (the refusal judge finds no
    compliance in it), which would give an end-first candidate or an empty Align-Pro answer a refusal's 1.0."""
    if config.reward == "judge":
        from safealign.eval.judges.base import build_judge

        judge = build_judge(config.judge, config.judge_params)

        def judged(conversations: Sequence[Conversation], texts: Sequence[str]) -> list[float]:
            behaviors = [Behavior("deal", c[last_user_index(c)]["content"]) for c in conversations]
            verdicts = judge(behaviors, [Completion(text=t) for t in texts])
            # every text is judged, so a model judge costs the one pass per candidate counted; an empty one's verdict
            # is not used
            return [0.5 if v.harmful is None or not t.strip() else float(not v.harmful)
                    for t, v in zip(texts, verdicts)]  # fmt: skip

        return judged, int(runs_model(judge))
    return reward_model(config.reward_model), 1


def runs_model(judge: Any) -> bool:
    """Whether ``judge`` scores with a model: a model judge holds its ChatModel as ``chat_model``; a stack
    (tiered, harmbench) holds its judges as attributes."""
    from safealign.eval.judges.base import Judge

    if getattr(judge, "chat_model", None) is not None:
        return True
    return any(isinstance(part, Judge) and runs_model(part) for part in vars(judge).values())


def reward_model(spec: str) -> Reward:
    """The reward model ``spec``: a sequence-classification model's first logit on the chat-formatted
    conversation + answer, or a safealign reward-model folder (safealign/eval/reward_scorer.py)."""
    from safealign.eval.reward_scorer import load_reward_scorer

    return load_reward_scorer(spec, what="defense 'deal': reward_model")
