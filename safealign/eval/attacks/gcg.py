"""``gcg``: Greedy Coordinate Gradient adversarial suffix (Zou et al. 2023, arXiv:2307.15043, Alg. 1).

Each step: gradient of the target loss w.r.t. a one-hot encoding of the suffix → top-k token
candidates per position → ``search_width`` candidates, each replacing ``n_replace`` random positions →
batched forward of all candidates → keep the lowest-loss one. The loss is the mean cross-entropy of
the target string ("Sure, here is …") after the chat-formatted prompt + suffix.

The loss is computed here from logits of *input embeddings* (not via ``train.logps``) because the
gradient must flow into the one-hot suffix encoding, and candidate losses need per-token CE on a
batch that shares everything but the suffix. Deviations from the paper: no prefix KV cache (every
forward covers the full prompt), and candidates whose decoded text does not re-tokenize to the same
ids are dropped (as nanoGCG does) so the optimised suffix is what the model actually sees later.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from safealign.checks import at_least
from safealign.errors import UserError
from safealign.eval.attacks.base import Attack, AttackContext, behavior_prompt, require_target
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
    suffix_init: str = ""  # initial suffix text; default "x x x …" with suffix_length tokens
    separator: str = " "  # between the request and the suffix
    batch_size: Optional[int] = None  # candidates per forward; None = all at once
    allow_non_ascii: bool = False
    filter_retokenization: bool = True
    early_stop_every: int = 10  # generate + judge every N steps (0: never)
    early_stop_max_new_tokens: int = 32
    seed: int = 0

    def __post_init__(self) -> None:  # runs when the run checks its attacks, before the model loads
        for key in ("steps", "search_width", "topk", "n_replace", "suffix_length", "early_stop_max_new_tokens"):
            at_least(f"attack_params.gcg.{key}", getattr(self, key), 1)
        at_least("attack_params.gcg.batch_size", self.batch_size, 1)
        at_least("attack_params.gcg.early_stop_every", self.early_stop_every, 0)
        if self.n_replace > self.suffix_length:
            raise UserError(f"attack_params.gcg.n_replace ({self.n_replace}) must be at most suffix_length "
                            f"({self.suffix_length})")


@dataclass
class GCGResult:
    suffix: str
    suffix_ids: list[int]
    loss: float  # best target loss reached
    losses: list[float] = field(default_factory=list)  # best candidate's loss at each step
    steps: int = 0
    seconds: float = 0.0
    early_stopped: bool = False


@dataclass(frozen=True)
class _Problem:
    """Embeddings of the fixed parts: before (1, Tb, D), after (1, Ta, D), target (1, Tt, D)."""

    before: Tensor
    after: Tensor
    target_embeds: Tensor
    target_ids: Tensor  # (Tt,)


class GCGAttack(Attack):
    config_class: ClassVar[type] = GCGConfig
    needs_target: ClassVar[bool] = True

    def __init__(self, config: GCGConfig, context: AttackContext | None = None) -> None:
        super().__init__(config, context)
        if self.context.model is None or self.context.tokenizer is None:
            raise UserError("gcg attack needs white-box access: a local HF model (model.backend=hf)")
        self.model, self.tokenizer = self.context.model, self.context.tokenizer
        self._not_allowed: Tensor | None = None

    def attack(self, behavior: Behavior) -> list[Attempt]:
        result = self.optimize(behavior)
        content = behavior_prompt(behavior) + self.config.separator + result.suffix
        meta = {"id": "gcg", "suffix": result.suffix, "loss": result.loss, "losses": result.losses,
                "steps": result.steps, "early_stopped": result.early_stopped}  # fmt: skip
        return [Attempt(behavior.id, self.name, ({"role": "user", "content": content},), meta=meta)]

    def render_parts(self, request: str) -> tuple[str, str]:
        """Chat-formatted text before and after the suffix, exactly as the HF backend renders it."""
        from safealign.eval.backends.hf import HFChatModel

        target = self.context.target
        renderer = target if isinstance(target, HFChatModel) else HFChatModel(self.model, self.tokenizer)
        marker = "\x00SUFFIX\x00"
        message = {"role": "user", "content": request + self.config.separator + marker}
        text = renderer.render((message,), GenerationParams())
        before, after = text.split(marker)
        return before, after

    def optimize(self, behavior: Behavior) -> GCGResult:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        problem = self._problem(behavior)
        ids = self._initial_ids()  # (L,)
        best = GCGResult(suffix=self._decode(ids), suffix_ids=ids.tolist(), loss=float("inf"))
        start = time.perf_counter()
        for step in range(cfg.steps):
            raise_if_stop_requested()  # a search runs minutes per behavior: SIGTERM ends it at the next step
            grad = self._token_gradients(problem, ids)  # (L, V)
            candidates = self._sample_candidates(ids, grad, generator)  # (W, L)
            losses = self._candidate_losses(problem, candidates)  # (W,)
            ids = candidates[losses.argmin()]
            loss = float(losses.min())
            best.losses.append(loss)
            if loss < best.loss:
                best.loss, best.suffix_ids, best.suffix = loss, ids.tolist(), self._decode(ids)
            best.steps = step + 1
            check = cfg.early_stop_every and (step + 1) % cfg.early_stop_every == 0
            if check and self._jailbroken(behavior, best.suffix):
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

    def _problem(self, behavior: Behavior) -> _Problem:
        before, after = self.render_parts(behavior_prompt(behavior))
        target_ids = self._encode(require_target(behavior, self.name))
        with torch.no_grad():
            embeds = [self._embed(self._encode(t))[None] for t in (before, after)]
            return _Problem(embeds[0], embeds[1], self._embed(target_ids)[None], target_ids)

    def _initial_ids(self) -> Tensor:
        cfg = self.config
        if cfg.suffix_init:
            return self._encode(cfg.suffix_init)
        return self._encode(" ".join(["x"] * cfg.suffix_length))[: cfg.suffix_length]

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

    def _sample_candidates(self, ids: Tensor, grad: Tensor, generator: torch.Generator) -> Tensor:
        """``(W, L)`` candidate suffixes, each with ``n_replace`` positions set to a top-k token."""
        cfg = self.config
        length = ids.shape[0]
        grad = grad.clone()
        grad[:, self._disallowed(grad.shape[1])] = float("inf")
        topk_ids = (-grad).topk(min(cfg.topk, grad.shape[1]), dim=1).indices.cpu()  # (L, k)
        positions = torch.argsort(torch.rand(cfg.search_width, length, generator=generator), dim=1)[:, : cfg.n_replace]
        choice = torch.randint(0, topk_ids.shape[1], (cfg.search_width, cfg.n_replace, 1), generator=generator)
        values = torch.gather(topk_ids[positions], 2, choice).squeeze(2)  # (W, n_replace)
        candidates = ids.cpu().repeat(cfg.search_width, 1).scatter_(1, positions, values)
        if cfg.filter_retokenization:
            candidates = self._retokenizable(candidates, ids.cpu())
        return candidates.to(self._device)

    def _retokenizable(self, candidates: Tensor, current: Tensor) -> Tensor:
        texts = self.tokenizer.batch_decode(candidates.tolist())
        keep = [i for i, t in enumerate(texts)
                if self.tokenizer(t, add_special_tokens=False)["input_ids"] == candidates[i].tolist()]  # fmt: skip
        if not keep:  # nothing survives: stay put for this step rather than fail
            return current[None]
        return candidates[keep]

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

    def _jailbroken(self, behavior: Behavior, suffix: str) -> bool:
        target, judge = self.context.target, self.context.judge
        if target is None or judge is None:
            return False
        params = GenerationParams(max_new_tokens=self.config.early_stop_max_new_tokens, batch_size=1)
        content = behavior_prompt(behavior) + self.config.separator + suffix
        completion: Completion = target.generate([({"role": "user", "content": content},)], params)[0]
        return judge([behavior], [completion])[0].harmful is True
