"""MPO (arXiv 2502.18699): decode from a geometric mixture of several policies of the same base.

``π_λ(y_t | x, y_<t) ∝ Π_k π_k(y_t | x, y_<t)^{λ_k}``, λ on the simplex, applied per token: the mixed
next-token log-probs are ``log_softmax(Σ_k λ_k log π_k)`` (every policy reads the same tokens, so they
must share a tokenizer; e.g. the base model and a LoRA adapter trained from it).

λ is given, or fitted by batch mirror descent on prompts: with M answers y sampled from the reference
policy π_ref per prompt x and ``ℓ_k = log π_k(y|x) − log π_ref(y|x)``, minimise
``F(λ) = E_x log E_{y∼π_ref} exp(Σ_k λ_k ℓ_k)`` (convex; F = 0 at every vertex) by
``λ_k ← λ_k exp(−η ∂F/∂λ_k) / Z``, where ``∂F/∂λ_k = E_x Σ_m w_m ℓ_{k,m}`` and ``w`` are the
self-normalised weights ``softmax_m(Σ_k λ_k ℓ_{k,m})`` (docs/defenses.md). Needs the local HF model.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from safealign.errors import UserError
from safealign.eval.backends.base import Conversation, GenerationParams, conversation_seeds, stop_ids
from safealign.eval.defenses.base import Answer, Defense, token_model
from safealign.eval.defenses.tokens import (
    Batch, answer_ends, answers_within_limit, encode, holds_stop, pad_id, sample_token, to_completion,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MPOConfig:
    policies: tuple[str, ...] = ("target",)  # "target" = the evaluated model; others: load_model specs
    weights: Optional[tuple[float, ...]] = None  # λ; None: fitted by mirror descent
    reference: int = 0  # which policy samples the answers λ is fitted on (π_ref)
    fit_prompts: int = 16  # built-in train prompts, half harmful, half benign (never the held-out ones)
    fit_samples: int = 4  # M answers per prompt
    fit_max_new_tokens: int = 32
    steps: int = 100
    eta: float = 0.5
    seed: int = 0


def mixture_logprobs(logprobs: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``log_softmax(Σ_k λ_k logprobs_k)``: the normalised geometric mixture of next-token distributions."""
    mixed = sum(w * lp for w, lp in zip(weights, logprobs))
    return torch.log_softmax(mixed, -1)  # type: ignore[arg-type]


def mpo_objective(ell: Tensor, weights: Tensor) -> Tensor:
    """``F(λ) = mean_x log mean_m exp(ℓ[x, m] · λ)`` for ``ell`` ``(X, M, K)``."""
    return (torch.logsumexp(ell @ weights, dim=1) - math.log(ell.shape[1])).mean()


def mpo_gradient(ell: Tensor, weights: Tensor) -> Tensor:
    """``∂F/∂λ``: ``mean_x Σ_m softmax_m(ℓ[x] · λ) ℓ[x, m]``, ``(K,)``."""
    w = torch.softmax(ell @ weights, dim=1)  # (X, M)
    return (w.unsqueeze(-1) * ell).sum(1).mean(0)


def fit_weights(ell: Tensor, *, steps: int, eta: float, start: Tensor | None = None) -> Tensor:
    """λ by mirror descent (exponentiated gradient) on the simplex from ``start`` (default uniform)."""
    k = ell.shape[-1]
    weights = start.clone() if start is not None else torch.full((k,), 1.0 / k, dtype=ell.dtype)
    for _ in range(steps):
        weights = weights * torch.exp(-eta * mpo_gradient(ell, weights))
        weights = weights / weights.sum()
    return weights


def check_shared_tokenizer(spec: str, tokenizer: Any, target: Any) -> None:
    """UserError naming policy ``spec`` unless its tokenizer maps every token to the target's id: the mixture
    adds the policies' log-probs id by id, and two tokenizers of one size (Llama-2 and Mistral: 32000) would
    pass an output-size check while mixing different tokens."""
    ours, theirs = tokenizer.get_vocab(), target.get_vocab()
    if ours == theirs:
        return
    differ = sorted(set(ours.items()) ^ set(theirs.items()), key=lambda item: item[1])
    raise UserError(f"defense 'mpo': policy {spec!r} does not share the target's tokenizer ({len(ours)} tokens, the "
                    f"target's {len(theirs)}; e.g. {differ[0][0]!r} is id {ours.get(differ[0][0])} there, "
                    f"{theirs.get(differ[0][0])} in the target's): the policies' log-probs are mixed id by id, so "
                    "they must share a tokenizer (e.g. a base model and adapters trained from it)")  # fmt: skip


class MPO(Defense):
    config_class = MPOConfig
    access = "tokens"
    model_params = ("policies",)

    def __init__(self, config: MPOConfig) -> None:
        super().__init__(config)
        k = len(config.policies)
        if k < 1:
            raise UserError("defense 'mpo': policies must name at least one model")
        if config.weights is not None:
            if len(config.weights) != k or any(w < 0 for w in config.weights) or not sum(config.weights) > 0:
                raise UserError(f"defense 'mpo': weights must be {k} non-negative numbers (one per policy) with a "
                                f"positive sum, got {list(config.weights)}")  # fmt: skip
        if not 0 <= config.reference < k:
            raise UserError(f"defense 'mpo': reference must index one of the {k} policies, got {config.reference}")
        self.models: list[Any] = []
        self.weights: list[float] = []
        self.ends: set[int] = set()
        self.fit: dict[str, Any] = {}

    def prepare(self, inner: Any, params: GenerationParams) -> None:
        from safealign.models.load import load_model

        model, self.tokenizer = token_model(self.name, inner)
        first = next(model.parameters())  # the other policies go where the target is, in its (float) dtype
        where = {"device": first.device, "dtype": first.dtype if first.dtype.is_floating_point else None}
        loaded = [(model, self.tokenizer) if spec == "target" else load_model(spec, **where)
                  for spec in self.config.policies]  # fmt: skip
        for spec, (_, tokenizer) in zip(self.config.policies, loaded):
            check_shared_tokenizer(spec, tokenizer, self.tokenizer)
        self.models = [m for m, _ in loaded]
        self.ends = stop_ids(self.tokenizer, model)  # where the bare target stops (generation_config included)
        sizes = {m.get_output_embeddings().weight.shape[0] for m in self.models}
        if len(sizes) > 1:
            raise UserError(f"defense 'mpo': the policies' vocabularies differ ({sorted(sizes)}): they must share a "
                            "tokenizer (e.g. a base model and adapters trained from it)")  # fmt: skip
        if self.config.weights is not None:
            total = sum(self.config.weights)
            self.weights = [w / total for w in self.config.weights]
        else:
            self.weights = self.fit_on_prompts(inner, params)

    def fit_on_prompts(self, inner: Any, params: GenerationParams) -> list[float]:
        import dataclasses

        from safealign.data.builtin import load_prompts
        from safealign.eval.backends.hf import HFChatModel

        half = max(1, self.config.fit_prompts // 2)
        prompts = [p.prompt for p in load_prompts("harmful", split="train")[:half]]
        prompts += [p.prompt for p in load_prompts("benign", split="train")[: self.config.fit_prompts - half]]
        conversations = [({"role": "user", "content": p},) for p in prompts for _ in range(self.config.fit_samples)]
        sampling = dataclasses.replace(params, do_sample=True, temperature=1.0, top_p=1.0, seed=self.config.seed,
                                       max_new_tokens=self.config.fit_max_new_tokens)  # fmt: skip
        started = time.perf_counter()
        reference = HFChatModel(self.models[self.config.reference], self.tokenizer,
                                system_prompt=getattr(inner, "system_prompt", None))  # fmt: skip
        answers = [c.text for c in reference.generate(conversations, sampling)]
        rendered = [inner.render(c, params) for c in conversations]
        logps = torch.stack([self.sequence_logps(m, rendered, answers, params.batch_size) for m in self.models], -1)
        ell = (logps - logps[:, self.config.reference : self.config.reference + 1]).view(
            len(prompts), self.config.fit_samples, len(self.models))  # fmt: skip
        weights = fit_weights(ell.double(), steps=self.config.steps, eta=self.config.eta)
        uniform = torch.full_like(weights, 1.0 / len(self.models))
        self.fit = {"prompts": len(prompts), "samples": self.config.fit_samples, "seconds": round(time.perf_counter()
                    - started, 2), "objective": float(mpo_objective(ell.double(), weights)),
                    "objective_uniform": float(mpo_objective(ell.double(), uniform))}  # fmt: skip
        logger.info("mpo: fitted λ = %s on %d prompts × %d samples", weights.tolist(), len(prompts),
                    self.config.fit_samples)  # fmt: skip
        return weights.tolist()

    def sequence_logps(self, model: Any, prompts: Sequence[str], answers: Sequence[str], batch_size: int) -> Tensor:
        """``log π(answer | prompt)`` summed over the answer's tokens, ``(N,)``."""
        from safealign.train.logps import sequence_logps

        out = []
        device = next(model.parameters()).device
        for start in range(0, len(prompts), batch_size):
            rows, masks = [], []
            for prompt, answer in zip(prompts[start : start + batch_size], answers[start : start + batch_size]):
                p = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
                a = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
                rows.append(p + a)
                masks.append([0] * len(p) + [1] * len(a))
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [pad_id(self.tokenizer)] * (width - len(r)) for r in rows], device=device)
            attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
            response = torch.tensor([m + [0] * (width - len(m)) for m in masks], device=device)
            with torch.no_grad():
                out.append(sequence_logps(model, ids, attention, response).logps.float().cpu())
        return torch.cat(out)

    def respond(self, inner: Any, conversations: Sequence[Conversation], params: GenerationParams) -> list[Answer]:
        ends = answer_ends(self.tokenizer, self.ends, params.stop)  # refuses a bad stop string before any batch
        seeds = _seeds_of_chunks(conversations, params)
        return answers_within_limit(self, inner, conversations, params,
                                    lambda chunk: self.answer(inner, chunk, params, ends, seeds(chunk)))  # fmt: skip

    def answer(self, inner: Any, chunk: Sequence[Conversation], params: GenerationParams, ends: set[int],
               seeds: Sequence[int] | None = None) -> list[Answer]:  # fmt: skip
        """The answers of ``chunk``, each ending at the first of ``ends`` (:func:`~.tokens.answer_ends`), sampled (if
        at all) with ``seeds``, one per conversation."""
        device = next(self.models[0].parameters()).device
        batch = encode(self.tokenizer, [inner.render(c, params) for c in chunk], params, device)
        started = time.perf_counter()
        tokens, ended = self.decode(batch, params, ends, seeds)
        seconds = (time.perf_counter() - started) / len(chunk)
        answers = []
        for i, (row, done) in enumerate(zip(tokens, ended)):
            completion = to_completion(self.tokenizer, batch.real(i), row, params, ends=ends, ended=done,
                                       seconds=seconds)  # fmt: skip
            n = completion.meta["tokens"]  # the end token is not counted, as the bare backend does not count it
            # the first policy's passes are the answer's own generation; each other policy adds one per decoding
            # step, the step that produced the end token included
            step = self.step("decode", own_tokens=n, own_passes=(len(self.models) - 1) * (n + int(done)),
                             detail={"weights": self.weights, "policies": list(self.config.policies)})
            answers.append(Answer(completion, step))
        return answers

    def decode(self, batch: Batch, params: GenerationParams, ends: set[int],
               seeds: Sequence[int] | None = None) -> tuple[list[list[int]], list[bool]]:  # fmt: skip
        """Greedy (or sampled, with ``params.temperature`` and ``top_p``) decoding from the mixture, one KV cache
        per policy. A row ends at a token of ``ends`` (``ended``: True; :func:`~.tokens.answer_ends`) or once its
        answer holds a stop string (``params.stop``; its tokens up to the one completing it are the answer's, as the
        hf backend counts them). Sampled, each row draws with a generator of its own seeded with its conversation's
        seed (``seeds``, else by place in the batch), as the hf backend samples a row: not its place in the batch or
        the call."""
        generator = torch.Generator(device=batch.ids.device).manual_seed(params.seed)
        row_seeds = conversation_seeds(params, batch.ids.shape[0]) if seeds is None else seeds
        generators = ([torch.Generator(device=batch.ids.device).manual_seed(s) for s in row_seeds]
                      if params.do_sample else [])  # fmt: skip
        prompts = [batch.real(i) for i in range(batch.ids.shape[0])]
        end_ids = torch.tensor(sorted(ends), device=batch.ids.device)
        caches: list[Any] = [None] * len(self.models)
        inputs, mask, positions = batch.ids, batch.mask, batch.positions
        ended = torch.zeros(batch.ids.shape[0], dtype=torch.bool, device=batch.ids.device)
        stopped = torch.zeros_like(ended)
        out: list[Tensor] = []
        for _ in range(params.max_new_tokens):
            logprobs = []
            with torch.no_grad():
                for k, model in enumerate(self.models):
                    result = model(input_ids=inputs, attention_mask=mask, position_ids=positions,
                                   use_cache=True, **{_cache_keyword(model): caches[k]})  # fmt: skip
                    caches[k] = getattr(result, "cache", None) or getattr(result, "past_key_values", None)
                    logprobs.append(torch.log_softmax(result.logits[:, -1].float(), -1))
            mixed = mixture_logprobs(logprobs, self.weights)
            token = (torch.cat([sample_token(mixed[i : i + 1], params, g) for i, g in enumerate(generators)])
                     if generators else sample_token(mixed, params, generator))  # fmt: skip
            done = ended | stopped
            token = torch.where(done, torch.full_like(token, pad_id(self.tokenizer)), token)
            out.append(token)
            ended |= ~done & torch.isin(token, end_ids)
            if params.stop:
                rows, skip = torch.stack(out, 1).tolist(), (ended | done).tolist()
                stopped |= torch.tensor([not s and holds_stop(self.tokenizer, p, r, params.stop)
                                         for p, r, s in zip(prompts, rows, skip)], device=ended.device)  # fmt: skip
            if bool((ended | stopped).all()):
                break
            inputs = token.unsqueeze(-1)
            mask = torch.cat([mask, torch.ones_like(inputs)], 1)
            positions = positions[:, -1:] + 1
        rows = torch.stack(out, 1).tolist() if out else [[] for _ in range(batch.ids.shape[0])]
        return rows, ended.tolist()

    def fitted(self) -> dict[str, Any] | None:
        return None if self.config.weights is not None else {"weights": list(self.weights), "fit": dict(self.fit)}

    def use_fitted(self, values: dict[str, Any]) -> None:
        weights = [float(w) for w in values["weights"]]
        if len(weights) != len(self.config.policies) or any(not math.isfinite(w) or w < 0 for w in weights):
            raise ValueError(f"weights must be {len(self.config.policies)} finite non-negative numbers")
        self.weights, self.fit = weights, dict(values.get("fit") or {})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "weights": self.weights, "fit": self.fit}


def _seeds_of_chunks(conversations: Sequence[Conversation],
                     params: GenerationParams) -> Callable[[Sequence[Conversation]], list[int]]:  # fmt: skip
    """A function giving the sampling seeds (:func:`conversation_seeds`: the caller's, one per conversation) of a
    chunk that ``answers_within_limit`` decodes: its chunks are the conversations that fit, in order, so each
    conversation of a chunk is found (by identity) at or after the last one found."""
    seeds = conversation_seeds(params, len(conversations))
    at = 0

    def of(chunk: Sequence[Conversation]) -> list[int]:
        nonlocal at
        out = []
        for conversation in chunk:
            while conversations[at] is not conversation:
                at += 1
            out.append(seeds[at])
            at += 1
        return out

    return of


def _cache_keyword(model: Any) -> str:
    """The KV-cache argument's name: ``cache`` in newer transformers, ``past_key_values`` before (a PEFT
    wrapper takes either through ``**kwargs``, so its base model's signature decides)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
