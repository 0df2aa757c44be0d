"""``gcg``: Greedy Coordinate Gradient adversarial suffix (Zou et al. 2023, arXiv:2307.15043, Alg. 1).

Each step: gradient of the target loss w.r.t. a one-hot encoding of the suffix → top-k token
candidates per position → ``search_width`` candidates, each replacing ``n_replace`` random positions →
batched forward of all candidates → keep the lowest-loss one. The loss is the mean cross-entropy of
the target string ("Sure, here is …") after the chat-formatted prompt + suffix.

The loss is computed here from logits of *input embeddings* (not via ``train.logps``) because the
gradient must flow into the one-hot suffix encoding, and candidate losses need per-token CE on a
batch that shares everything but the suffix. Deviations from the paper: no prefix KV cache (every
forward covers the full prompt), and the optimised ids are exactly the ids of the prompt the target is
sent (``request + separator + suffix``, rendered and tokenized whole). For that the separator belongs to
the suffix's first token (a BPE tokenizer merges ``" "`` into the next word, so a separately encoded
request + space would end in a lone space token the target never sees), and, with
``filter_retokenization``, a candidate is dropped unless the prompt sent with it (its decoded text, less a
leading separator, after request + separator), rendered and tokenized whole, is before + candidate + after
(stricter than nanoGCG's check of the suffix alone).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from safealign.checks import at_least
from safealign.errors import UserError
from safealign.eval.attacks.base import Attack, AttackContext, behavior_prompt, early_stop_params, require_target
from safealign.eval.attacks.target_loss import prompt_renderer
from safealign.eval.backends.base import GenerationParams
from safealign.interrupt import raise_if_stop_requested
from safealign.types import Attempt, Behavior, Completion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GCGConfig:
    steps: int = 250
    search_width: int = 512
    topk: int = 256
    n_replace: int = 1
    suffix_length: int = 20
    suffix_init: str = ""  # initial suffix text (then suffix_length is unused); default "x x x …", suffix_length tokens
    separator: str = " "  # between the request and the suffix; optimised as part of the suffix's first token
    batch_size: Optional[int] = None  # candidates per forward; None = all at once
    allow_non_ascii: bool = False
    filter_retokenization: bool = True  # keep only candidates the target is sent token for token
    early_stop_every: int = 10  # generate + judge every N steps (0: never)
    early_stop_max_new_tokens: int = 32
    seed: int = 0
    # the attack_params key errors name (a subclass's config, gcg_multi's, names its own)
    params_key: ClassVar[str] = "attack_params.gcg"

    def __post_init__(self) -> None:  # runs when the run checks its attacks, before the model loads
        key = self.params_key
        for name in ("steps", "search_width", "topk", "n_replace", "suffix_length", "early_stop_max_new_tokens"):
            at_least(f"{key}.{name}", getattr(self, name), 1)
        at_least(f"{key}.batch_size", self.batch_size, 1)
        at_least(f"{key}.early_stop_every", self.early_stop_every, 0)
        if not self.suffix_init and self.n_replace > self.suffix_length:  # a suffix_init is checked once tokenized
            raise UserError(f"{key}.n_replace ({self.n_replace}) must be at most suffix_length "
                            f"({self.suffix_length})")


@dataclass
class GCGResult:
    suffix: str  # the text after the separator: the attack sends request + separator + suffix
    suffix_ids: list[int]  # the optimised ids: they decode to separator + suffix
    loss: float  # best target loss reached
    losses: list[float] = field(default_factory=list)  # best candidate's loss at each step
    steps: int = 0
    seconds: float = 0.0
    early_stopped: bool = False
    target_queries: int = 0  # the early-stop checks' target generations
    candidates_scored: int = 0  # candidate suffixes whose loss was computed, over all steps


@dataclass(frozen=True)
class _Problem:
    """One behavior's fixed parts: its request, the ids around the suffix, and the embeddings of before
    (1, Tb, D), after (1, Ta, D) and the target (1, Tt, D)."""

    request: str
    before_ids: list[int]
    after_ids: list[int]
    before: Tensor
    after: Tensor
    target_embeds: Tensor
    target_ids: Tensor  # (Tt,)


class GCGAttack(Attack):
    config_class: ClassVar[type] = GCGConfig
    searches: ClassVar[bool] = True
    needs_target: ClassVar[bool] = True

    def __init__(self, config: GCGConfig, context: AttackContext | None = None) -> None:
        super().__init__(config, context)
        if self.context.model is None or self.context.tokenizer is None:
            raise UserError("gcg attack needs white-box access: a local HF model (model.backend=hf)")
        self.model, self.tokenizer = self.context.model, self.context.tokenizer
        self.renderer = prompt_renderer(self.context.target, self.model, self.tokenizer)  # as the target renders
        self._not_allowed: Tensor | None = None
        self._initial_ids()  # a suffix_init shorter than n_replace fails here, before any optimisation

    def attack(self, behavior: Behavior) -> list[Attempt]:
        result = self.optimize(behavior)
        content = self.message(behavior_prompt(behavior), result.suffix)
        meta = {"id": "gcg", "suffix": result.suffix, "loss": result.loss, "losses": result.losses,
                "steps": result.steps, "early_stopped": result.early_stopped,
                "target_queries": result.target_queries, "candidates_scored": result.candidates_scored}  # fmt: skip
        return [Attempt(behavior.id, self.name, ({"role": "user", "content": content},), meta=meta)]

    def message(self, request: str, suffix: str) -> str:
        """The user message the target is sent."""
        return request + self.config.separator + suffix

    def render(self, content: str) -> str:
        """The prompt text the target gets for one user message (its system prompt included)."""
        return self.renderer.render(({"role": "user", "content": content},), GenerationParams())

    def render_parts(self, request: str) -> tuple[str, str]:
        """Prompt text before and after the suffix ids, which start with the separator."""
        marker = "\x00SUFFIX\x00"
        before, after = self.render(request + marker).split(marker)
        return before, after

    def optimize(self, behavior: Behavior) -> GCGResult:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        problem = self._problem(behavior)
        ids = self._initial_ids()  # (L,)
        best = GCGResult(suffix=self._suffix_text(ids), suffix_ids=ids.tolist(), loss=float("inf"))
        start = time.perf_counter()
        for step in range(cfg.steps):
            raise_if_stop_requested()  # a search runs minutes per behavior: SIGTERM ends it at the next step
            grad = self._token_gradients(problem, ids)  # (L, V)
            candidates = self._sample_candidates(ids, grad, generator, [problem])  # (W, L)
            losses = self._candidate_losses(problem, candidates)  # (W,)
            best.candidates_scored += candidates.shape[0]
            ids = candidates[losses.argmin()]
            loss = float(losses.min())
            best.losses.append(loss)
            if loss < best.loss:
                best.loss, best.suffix_ids, best.suffix = loss, ids.tolist(), self._suffix_text(ids)
            best.steps = step + 1
            check = cfg.early_stop_every and (step + 1) % cfg.early_stop_every == 0 and self._can_judge()
            if check:
                best.target_queries += 1
                if self._jailbroken(behavior, best.suffix, step):
                    best.early_stopped = True
                    break
        best.seconds = time.perf_counter() - start
        logger.info("gcg %s: loss %.3f after %d steps (%.2f s/step)", behavior.id, best.loss, best.steps,
                    best.seconds / max(1, best.steps))  # fmt: skip
        return best

    def target_loss(self, behavior: Behavior, suffix_ids: list[int]) -> float:
        """The target loss of one suffix (for benchmarks and tests)."""
        ids = torch.tensor([suffix_ids], device=self._device)
        return float(self._candidate_losses(self._problem(behavior), ids)[0])

    @property
    def _device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def _embed(self, ids: Tensor) -> Tensor:
        return self.model.get_input_embeddings()(ids.to(self._device))

    def _encode(self, text: str) -> Tensor:
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], device=self._device)

    def _decode(self, ids: Tensor) -> str:
        return self.tokenizer.decode(ids.tolist() if isinstance(ids, Tensor) else ids)

    def _suffix_text(self, ids: Tensor) -> str:
        """The suffix text of optimised ids: their decoded text less the separator (which a SentencePiece
        decoder already drops from the start of a text)."""
        return self._decode(ids).removeprefix(self.config.separator)

    def _problem(self, behavior: Behavior) -> _Problem:
        request = behavior_prompt(behavior)
        before, after = (self._encode(t) for t in self.render_parts(request))
        target_ids = self._encode(require_target(behavior, self.name))
        with torch.no_grad():
            return _Problem(request, before.tolist(), after.tolist(), self._embed(before)[None],
                            self._embed(after)[None], self._embed(target_ids)[None], target_ids)  # fmt: skip

    def _initial_ids(self) -> Tensor:
        """The starting suffix ids, separator first: ``separator + suffix_init``, or ``suffix_length`` tokens of
        ``separator + "x x x …"``."""
        cfg = self.config
        if cfg.suffix_init:
            ids = self._encode(cfg.separator + cfg.suffix_init)
        else:
            ids = self._encode(cfg.separator + " ".join(["x"] * cfg.suffix_length))[: cfg.suffix_length]
        if ids.shape[0] < cfg.n_replace:
            raise UserError(f"attack_params.{self.name}.suffix_init {cfg.suffix_init!r} is {ids.shape[0]} token(s) "
                            f"with the separator, fewer than n_replace ({cfg.n_replace}): lengthen it or lower "
                            "n_replace")  # fmt: skip
        return ids

    def _token_gradients(self, problem: _Problem, ids: Tensor) -> Tensor:
        """Gradient of the target loss w.r.t. the one-hot suffix, ``(L, V)``."""
        weight = self.model.get_input_embeddings().weight  # (V, D)
        one_hot = F.one_hot(ids, weight.shape[0]).to(weight.dtype).requires_grad_()  # (L, V)
        suffix_embeds = (one_hot @ weight)[None]  # (1, L, D)
        loss = self._loss_from_embeds(problem, suffix_embeds).mean()
        return torch.autograd.grad(loss, one_hot)[0]

    def _loss_from_embeds(self, problem: _Problem, suffix_embeds: Tensor) -> Tensor:
        """Per-candidate mean target CE, ``(B,)``, for suffix embeddings ``(B, L, D)``."""
        n = suffix_embeds.shape[0]
        parts = [problem.before.expand(n, -1, -1), suffix_embeds, problem.after.expand(n, -1, -1),
                 problem.target_embeds.expand(n, -1, -1)]  # fmt: skip
        logits = self.model(inputs_embeds=torch.cat(parts, dim=1)).logits  # (B, T, V)
        n_target = problem.target_ids.shape[0]
        target_logits = logits[:, -n_target - 1 : -1].float()  # (B, Tt, V), positions predicting the target
        labels = problem.target_ids.expand(n, -1)  # (B, Tt)
        return F.cross_entropy(target_logits.transpose(1, 2), labels, reduction="none").mean(dim=1)

    def _candidate_losses(self, problem: _Problem, candidates: Tensor) -> Tensor:
        chunk = self.config.batch_size or candidates.shape[0]
        with torch.no_grad():
            losses = [self._loss_from_embeds(problem, self._embed(candidates[i : i + chunk]))
                      for i in range(0, candidates.shape[0], chunk)]  # fmt: skip
        return torch.cat(losses)

    def _sample_candidates(self, ids: Tensor, grad: Tensor, generator: torch.Generator,
                           problems: Sequence[_Problem]) -> Tensor:  # fmt: skip
        """``(W, L)`` candidate suffixes, each with ``n_replace`` positions set to a top-k token; with
        ``filter_retokenization`` only those sent to the target as optimised in every one of ``problems``."""
        cfg = self.config
        length = ids.shape[0]
        grad = grad.clone()
        disallowed = self._disallowed(grad.shape[1])
        grad[:, disallowed] = float("inf")
        # never more than the allowed tokens: past them top-k would pick disallowed ones (special tokens included)
        k = min(cfg.topk, grad.shape[1] - int(disallowed.sum()))
        topk_ids = (-grad).topk(k, dim=1).indices.cpu()  # (L, k)
        positions = torch.argsort(torch.rand(cfg.search_width, length, generator=generator), dim=1)[:, : cfg.n_replace]
        choice = torch.randint(0, topk_ids.shape[1], (cfg.search_width, cfg.n_replace, 1), generator=generator)
        values = torch.gather(topk_ids[positions], 2, choice).squeeze(2)  # (W, n_replace)
        candidates = ids.cpu().repeat(cfg.search_width, 1).scatter_(1, positions, values)
        if cfg.filter_retokenization:
            keep = self._sent_as_optimised(candidates, problems)
            candidates = candidates[keep] if keep else ids.cpu()[None]  # none left: stay put for this step
        return candidates.to(self._device)

    def _sent_as_optimised(self, candidates: Tensor, problems: Sequence[_Problem]) -> list[int]:
        """Indices of the candidates whose ids are exactly those the target is sent: for every problem, the prompt
        of its request with the candidate's suffix text, rendered and tokenized whole, is before + candidate + after
        (a candidate whose first token lost the separator fails here too)."""
        rows = candidates.tolist()
        suffixes = [text.removeprefix(self.config.separator) for text in self.tokenizer.batch_decode(rows)]
        keep = list(range(len(rows)))
        for p in problems:
            prompts = [self.render(self.message(p.request, suffixes[i])) for i in keep]
            encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
            keep = [i for i, ids in zip(keep, encoded) if ids == p.before_ids + rows[i] + p.after_ids]
        return keep

    def _disallowed(self, vocab_rows: int) -> Tensor:
        """Token ids never used in a suffix: special tokens, ids beyond the tokenizer, and non-ASCII."""
        if self._not_allowed is None or self._not_allowed.shape[0] != vocab_rows:
            mask = torch.zeros(vocab_rows, dtype=torch.bool)
            mask[len(self.tokenizer) :] = True
            mask[[i for i in self.tokenizer.all_special_ids if i < vocab_rows]] = True
            if not self.config.allow_non_ascii:
                texts = self.tokenizer.batch_decode([[i] for i in range(min(vocab_rows, len(self.tokenizer)))])
                bad = [i for i, t in enumerate(texts) if not (t.isascii() and t.isprintable() and t)]
                mask[bad] = True
            self._not_allowed = mask
        return self._not_allowed.to(self._device)

    def _can_judge(self) -> bool:
        """An early-stop check needs a target to answer and a judge to score the answer."""
        return self.context.target is not None and self.context.judge is not None

    def _jailbroken(self, behavior: Behavior, suffix: str, step: int) -> bool:
        """One early-stop check: the target's answer, generated with the run's settings but
        ``early_stop_max_new_tokens`` long, judged harmful; sampled with the seed of (behavior, ``step``)."""
        params = self.search_params(behavior, [("early_stop", step)],
                                    early_stop_params(self.context.generation, self.config.early_stop_max_new_tokens))
        content = self.message(behavior_prompt(behavior), suffix)
        completion: Completion = self.context.target.generate([({"role": "user", "content": content},)], params)[0]
        return self.context.judge([behavior], [completion])[0].harmful is True

