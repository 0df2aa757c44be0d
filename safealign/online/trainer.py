"""The online loop: sample K completions per prompt, score, advantages, clipped policy-gradient update.

One step = one generation batch (``prompts_per_step`` prompts × K samples, ONE ``generate`` call), its
scores, the reference's per-token log-probs on the reference view (E-RLHF: x_s for harmful prompts),
and ``updates_per_batch`` optimizer steps over ``gradient_accumulation_steps`` micro-batches (a prompt's
K samples stay in one micro-batch). Formulas: safealign/online/objectives.py and docs/online.md.

Resume: a step's prompts and sampling seed are functions of (seed, step), and a checkpoint holds the
trainable weights, optimizer, scheduler, λ and LSC baselines, so a resumed run logs the same next-step
metrics as an uninterrupted one (tests/online/test_online_trainer.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from safealign.data import build_transform
from safealign.eval.backends.base import eos_ids
from safealign.io import append_jsonl, finite_or_none
from safealign.models.modes import eval_mode
from safealign.online import objectives as obj
from safealign.online.config import OnlineConfig
from safealign.online.lagrange import Lagrangian, combine_advantages
from safealign.online.prompts import step_prompts
from safealign.online.rewards import Batch, Source, combine, is_empty
from safealign.online.rollout import PromptItem, completion_logps, decode, prompt_views, sample

logger = logging.getLogger(__name__)

STATE_NAME = "state.pt"
KEEP_CHECKPOINTS = 2


class Reference:
    """The KL anchor's weights: a separate frozen model, or the policy with its fresh LoRA adapter disabled.
    Which one a run uses is :func:`~safealign.train.reference.separate_reference`'s choice (``reference.model``,
    a frozen copy of a policy that starts from a trained adapter or is fully fine-tuned). ``kind`` names it in
    the log and summary."""

    def __init__(self, policy: Any, separate: Any = None, kind: str | None = None) -> None:
        if separate is None and not hasattr(policy, "disable_adapter"):
            raise ValueError("a policy without a LoRA adapter needs a separate reference (separate_reference)")
        self.policy = policy
        self.kind = kind or ("separate model" if separate is not None else "policy with its LoRA adapter disabled")
        self.separate = separate

    @contextlib.contextmanager
    def active(self) -> Iterator[Any]:
        if self.separate is not None:
            yield self.separate
            return
        with self.policy.disable_adapter():
            yield self.policy



class OnlineTrainer:
    def __init__(self, config: OnlineConfig, model: Any, tokenizer: Any, reference: Reference,
                 sources: Sequence[Source], cost_sources: Sequence[Source], prompts: list[PromptItem],
                 out: Path) -> None:  # fmt: skip
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.reference = reference
        self.sources = list(sources)
        self.cost_sources = list(cost_sources)
        self.prompts = prompts
        self.out = out
        self.metrics_path = out / "metrics.jsonl"
        self.transform = build_transform(config.reference.transform, **dict(config.reference.transform_params))
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=config.weight_decay)
        total = config.max_steps * config.updates_per_batch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(config, total))
        safe = config.safe_rlhf
        self.lagrange = Lagrangian(safe.threshold, safe.lambda_init, safe.lambda_lr, safe.lambda_max,
                                   safe.window) if safe.enabled else None
        self.lsc_cache: dict[str, dict[str, float]] = {}  # prompt id -> source label -> r_ref(x)
        self._warned_truncation = False
        self.step = 0
        from safealign.eval.judges.refusal import RefusalConfig, RefusalJudge

        self._refusal = RefusalJudge(RefusalConfig())  # the refusal-rate metric, whatever the rewards are
        shifted = config.generation.off_policy()
        if shifted:  # allowed (a user may want it), but the estimates are then biased: say so once per run
            logger.warning("%s: the samples come from a tempered/truncated distribution, while the update, the ratio "
                           "and the KL use the policy's own (temperature 1, untruncated) log-probs, so the "
                           "policy-gradient and KL estimates are off-policy (biased); for on-policy samples keep "
                           "temperature 1, top_p 1, top_k 0 (docs/online.md)", ", ".join(shifted))

    # ------------------------------------------------------------------ loop
    def train(self) -> list[dict[str, Any]]:
        logged = []
        while self.step < self.config.max_steps:
            metrics = self.train_step()
            self.step += 1
            record = {"step": self.step, **{k: finite_or_none(v) for k, v in metrics.items()}}
            append_jsonl(self.metrics_path, [record])
            logged.append(record)
            logger.info("step %d: reward %.3f kl %.4f loss %.4f (%.1f s)", self.step, metrics["reward"],
                        metrics.get("kl", float("nan")), metrics["loss"], metrics["time/step"])
            if self.step % self.config.save_steps == 0 or self.step == self.config.max_steps:
                self.save_checkpoint()
        return logged

    def train_step(self) -> dict[str, float]:
        config, k = self.config, self.config.num_generations
        started = time.perf_counter()
        items = step_prompts(self.prompts, self.step, config.prompts_per_step, config.seed)
        views = prompt_views(self.tokenizer, items, self.transform, config.prompts.max_prompt_length)
        torch.manual_seed(config.seed * 1_000_003 + self.step)  # the step's samples do not depend on history
        gen = config.generation
        completions = sample(self.model, self.tokenizer, views.policy, k, max_new_tokens=gen.max_new_tokens,
                             temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
                             reuse_prompt_cache=gen.reuse_prompt_cache)
        generated = time.perf_counter()
        expand = [i // k for i in range(len(completions))]
        batch = Batch([items[i].messages for i in expand], decode(self.tokenizer, completions),
                      [items[i].harmful for i in expand])
        policy_prompts = [views.policy[i] for i in expand]
        ref_prompts = [views.reference[i] for i in expand]
        number = self.step + 1  # the step as metrics.jsonl and errors count it
        scored = combine(self.sources, batch, number, empty_value=config.empty_reward,
                         lsc_baselines=self._lsc_baselines(items, views.reference, expand), groups=expand)
        costs = combine(self.cost_sources, batch, number, empty_value=0.0, what="cost") \
            if self.lagrange is not None else None
        pad = self.tokenizer.pad_token_id
        # RLOO shapes its rewards with the KL of the policy that sampled; with one update per batch and no dropout
        # that policy's log-probs are the update's own forward (detached), so the separate old-policy forward is
        # skipped. The sampling policy (sampled in eval mode) and the reference are scored in eval mode: after the
        # first update the model is in train mode, and dropout there would add noise to the KL, the shaped rewards
        # and the ratio's denominator.
        old_from_update = self._old_from_update()
        need_old = not old_from_update and (config.algorithm == "rloo" or config.updates_per_batch > 1
                                            or _dropout_active(self.model))
        with torch.no_grad():
            with self.reference.active() as ref_model, eval_mode(ref_model):
                ref_lp, mask = completion_logps(ref_model, ref_prompts, completions, pad,
                                                chunk_size=config.logps_chunk_size)
            if need_old:
                with eval_mode(self.model):
                    old_lp = completion_logps(self.model, policy_prompts, completions, pad,
                                              chunk_size=config.logps_chunk_size)[0]
            else:
                old_lp = None
        cost_values = costs.total if costs else None
        extra, lam = self._step_extras(scored.total, cost_values)
        advantages = None if old_from_update else self._shaped_advantages(scored.total, cost_values, old_lp, ref_lp,
                                                                          mask, lam)
        scored_at = time.perf_counter()
        update = self._update(policy_prompts, completions, ref_lp, mask, old_lp, advantages, scored.total,
                              (cost_values, lam))
        done = time.perf_counter()
        policy_lp = old_lp if old_lp is not None else update.pop("_first_logps")  # the sampling policy's
        update.pop("_first_logps", None)
        metrics = self._metrics(batch, scored, costs, policy_lp, ref_lp, mask, completions)
        metrics.update(self._truncation(views))
        metrics.update(extra)
        metrics.update(update)
        times = {"generate": generated - started, "score": scored_at - generated, "update": done - scored_at}
        step_time = done - started
        metrics.update({f"time/{name}": value for name, value in times.items()})
        metrics.update({f"share/{name}": value / step_time for name, value in times.items()})
        metrics["time/step"] = step_time
        return metrics

    # ------------------------------------------------------------------ pieces
    def _advantages(self, rewards: Tensor, costs: Tensor | None, old_lp: Tensor | None, ref_lp: Tensor,
                    mask: Tensor) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
        """The whole batch's advantages and the step's extra metrics (λ updated once)."""
        extra, lam = self._step_extras(rewards, costs)
        return self._shaped_advantages(rewards, costs, old_lp, ref_lp, mask, lam), extra

    def _step_extras(self, rewards: Tensor, costs: Tensor | None) -> tuple[dict[str, float], float | None]:
        """The step's reward-spread metric and, with a cost constraint, λ updated from this batch's costs."""
        k = self.config.num_generations
        if self.config.algorithm == "ipo":
            return {}, None
        extra = {"frac_reward_zero_std": float((rewards.view(-1, k).std(1) < 1e-8).float().mean())}
        if costs is None or self.lagrange is None:
            return extra, None
        lam = self.lagrange.update(costs)
        return {**extra, "lambda": lam, "cost/window_mean": self.lagrange.window_mean}, lam

    def _shaped_advantages(self, rewards: Tensor, costs: Tensor | None, policy_lp: Tensor | None, ref_lp: Tensor,
                           mask: Tensor, lam: float | None) -> Tensor:  # fmt: skip
        """Advantages of whole groups of K (the batch, or a micro-batch of whole groups): RLOO shapes the rewards
        with the sampling policy's KL to the reference first, ``R − β·KL``; with a cost, also the costs,
        ``C + β·KL`` (safe-rlhf's ppo_lag; docs/online.md, "Safe RLHF"), then ``(A_R − λ·A_C)/(1 + λ)``, so the
        KL keeps its weight β whatever λ is."""
        config = self.config
        if config.algorithm == "ipo":
            return torch.zeros_like(rewards)
        penalty = torch.zeros_like(ref_lp[:, 0])
        if config.algorithm == "rloo" and config.beta:
            kl = obj.kl_per_token(policy_lp, ref_lp, config.kl_estimator, config.reference.log_ratio_clamp)
            penalty = config.beta * obj.masked_sum(kl, mask)
        advantage = self._group_advantages(rewards.to(ref_lp.device) - penalty)
        if costs is not None and lam is not None:
            cost_advantage = self._group_advantages(costs.to(ref_lp.device) + penalty)
            advantage = combine_advantages(advantage, cost_advantage, lam)
        return advantage

    def _old_from_update(self) -> bool:
        """Whether the update's first forward can stand for the sampling policy's log-probs (RLOO): one update per
        batch (the weights have not moved since sampling), every micro-batch holds whole groups of K (advantages
        are group-local), and no dropout of any kind (:func:`_dropout_active`), so the train-mode forward gives the
        numbers of the eval-mode policy that sampled."""
        config = self.config
        micro = config.prompts_per_step * config.num_generations // config.gradient_accumulation_steps
        return (config.algorithm == "rloo" and config.updates_per_batch == 1 and micro % config.num_generations == 0
                and not _dropout_active(self.model))

    def _group_advantages(self, values: Tensor) -> Tensor:
        k = self.config.num_generations
        if self.config.algorithm == "rloo":
            return obj.rloo_advantages(values, k)
        return obj.grpo_advantages(values, k, self.config.scale_rewards)

    def _update(self, prompts: list, completions: list, ref_lp: Tensor, mask: Tensor, old_lp: Tensor | None,
                advantages: Tensor | None, rewards: Tensor,
                costs: tuple[Tensor | None, float | None] = (None, None)) -> dict[str, Any]:  # fmt: skip
        """``advantages`` None: RLOO with the sampling policy's log-probs taken from this forward (see
        :meth:`_old_from_update`), each micro-batch's advantages computed from its own groups. With one update per
        batch the ratio's denominator is this forward's log-probs, detached (ratio 1); ``old_lp`` serves the later
        updates."""
        config = self.config
        micro = len(completions) // config.gradient_accumulation_steps
        old_seq = obj.masked_sum(old_lp, mask) if old_lp is not None else None
        totals = {"loss": 0.0, "clipped": 0.0, "clip_count": 0.0, "pairs": 0.0}
        # IPO's micro-batches hold different numbers of pairs (ties drop out): each divides its summed loss by the
        # batch's pair count, so they add up to the one-big-batch mean; the others average equal-sized micro-batches
        ipo_pairs = obj.ipo_pair_count(rewards, config.num_generations, config.ipo_labels) \
            if config.algorithm == "ipo" else None
        split = 1 if ipo_pairs is not None else config.gradient_accumulation_steps
        first = torch.zeros_like(ref_lp)
        grad_norm = 0.0
        self.model.train()
        for update in range(config.updates_per_batch):
            self.optimizer.zero_grad(set_to_none=True)
            for start in range(0, len(completions), micro):
                sl = slice(start, start + micro)
                lp, m = completion_logps(self.model, prompts[sl], completions[sl], self.tokenizer.pad_token_id,
                                         chunk_size=config.logps_chunk_size)
                width = lp.shape[1]
                if update == 0:
                    first[sl, :width] = lp.detach()
                if advantages is None:  # the sampling policy is this forward: its sequence log-probs, detached
                    micro_adv = self._shaped_advantages(rewards[sl], costs[0][sl] if costs[0] is not None else None,
                                                        lp.detach(), ref_lp[sl, :width], m, costs[1])
                else:
                    micro_adv = advantages[sl]
                if config.updates_per_batch == 1:
                    # the weights have not moved since sampling, so the ratio is 1 in value (TRL's choice too); the
                    # eval-mode old log-probs would make it exp(dropout noise) where dropout is active
                    micro_old, micro_old_tokens = obj.masked_sum(lp.detach(), m), lp.detach()
                else:
                    micro_old = old_seq[sl] if old_seq is not None else None
                    micro_old_tokens = old_lp[sl, :width] if old_lp is not None else None
                loss, clipped, count, pairs = self._loss(lp, m, ref_lp[sl, :width], micro_old_tokens, micro_old,
                                                         micro_adv, rewards[sl].to(lp.device), ipo_pairs)
                (loss / split).backward()
                totals["loss"] += loss.item() / split / config.updates_per_batch
                totals["clipped"] += clipped
                totals["clip_count"] += count
                totals["pairs"] += pairs
            grad_norm = obj.clip_gradients(self.params, config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
        out = {"loss": totals["loss"], "grad_norm": grad_norm, "learning_rate": self.scheduler.get_last_lr()[0],
               "clip_fraction": totals["clipped"] / max(totals["clip_count"], 1.0), "_first_logps": first}
        if config.algorithm == "ipo":
            out["ipo_pairs"] = totals["pairs"] / config.updates_per_batch
        return out

    def _loss(self, lp: Tensor, mask: Tensor, ref_lp: Tensor, old_lp: Tensor | None, old_seq: Tensor | None,
              advantages: Tensor, rewards: Tensor,
              ipo_pairs: int | None = None) -> tuple[Tensor, float, float, float]:  # fmt: skip
        """(loss, clipped count, clip denominator, IPO pairs) of one micro-batch; IPO's loss is its share of the
        batch's mean over ``ipo_pairs`` pairs."""
        config = self.config
        eps_high = config.epsilon if config.epsilon_high is None else config.epsilon_high
        if config.algorithm == "rloo":
            losses, clipped = obj.rloo_loss(lp, old_seq, advantages, mask, config.epsilon, eps_high)
            return losses.mean(), float(clipped.sum()), float(clipped.numel()), 0.0
        if config.algorithm == "grpo":
            kl = obj.kl_per_token(lp, ref_lp, config.kl_estimator, config.reference.log_ratio_clamp) \
                if config.beta else None
            old = old_lp if old_lp is not None else lp.detach()
            tokens, clipped = obj.grpo_token_loss(lp, old, advantages, kl, config.beta, config.epsilon, eps_high,
                                                  config.kl_ratio_correction)
            loss = obj.aggregate_tokens(tokens, mask, config.loss_aggregation)
            return loss, float((clipped * mask).sum()), float(mask.sum()), 0.0
        log_ratios = obj.masked_sum(lp - ref_lp, mask)
        loss, pairs = obj.ipo_loss(log_ratios, rewards, config.num_generations, config.ipo_tau, config.ipo_labels,
                                   ipo_pairs)
        return loss, 0.0, 0.0, float(pairs)

    def _truncation(self, views: Any) -> dict[str, float]:
        """The step's left-truncated prompt views (x, and x_s where it differs), warned about the first time:
        a cut x_s may have lost the safety prefix, leaving plain RLHF's reference for that prompt."""
        if (views.truncated or views.reference_truncated) and not self._warned_truncation:
            self._warned_truncation = True
            logger.warning("step %d: prompts.max_prompt_length=%d left-truncated %d policy view(s) x and %d reference "
                           "view(s) x_s (a cut x_s may have lost its safety prefix); the metrics prompts_truncated "
                           "and prompts_truncated/reference count them every step", self.step + 1,
                           self.config.prompts.max_prompt_length, views.truncated, views.reference_truncated)
        return {"prompts_truncated": float(views.truncated),
                "prompts_truncated/reference": float(views.reference_truncated)}

    def _lsc_baselines(self, items: list[PromptItem], ref_prompts: list, expand: list[int]) -> dict[str, Tensor] | None:
        """r_ref(x) per completion for LSC sources: the mean score r(x, y) of K samples y the reference draws from
        its own view of the prompt (``ref_prompts``: x_s for harmful prompts under E-RLHF, the anchor πref(·|x_s)
        the KL pulls toward; x otherwise), computed the first time x is drawn and kept (and checkpointed)."""
        lsc = [s for s in self.sources if s.spec.lsc]
        if not lsc:
            return None
        todo = [i for i, item in enumerate(items) if item.id not in self.lsc_cache]
        if todo:
            k, gen = self.config.num_generations, self.config.generation
            torch.manual_seed(self.config.seed * 1_000_003 + self.step + 500_000_009)
            with self.reference.active() as ref_model:
                samples = sample(ref_model, self.tokenizer, [ref_prompts[i] for i in todo], k,
                                 max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
                                 top_k=gen.top_k, reuse_prompt_cache=gen.reuse_prompt_cache)
            texts = decode(self.tokenizer, samples)
            # the policy's rule for empty samples: never shown to a source, they score empty_reward
            kept = [j for j, text in enumerate(texts) if not is_empty(text)]
            owners = [todo[j // k] for j in kept]
            ref_batch = Batch([items[i].messages for i in owners], [texts[j] for j in kept],
                              [items[i].harmful for i in owners])
            for source in lsc:
                raw = torch.full((len(texts),), float(self.config.empty_reward))
                if kept:
                    raw[kept] = source.scores(ref_batch, self.step + 1, "LSC reference")
                raw = raw.view(len(todo), k).mean(1)
                for j, i in enumerate(todo):
                    self.lsc_cache.setdefault(items[i].id, {})[source.label] = float(raw[j])
        return {s.label: torch.tensor([self.lsc_cache[items[i].id][s.label] for i in expand]) for s in lsc}

    def _metrics(self, batch: Batch, scored, costs, policy_lp: Tensor, ref_lp: Tensor, mask: Tensor,
                 completions: list) -> dict[str, float]:  # fmt: skip
        config = self.config
        out: dict[str, float] = {"reward": float(scored.total.mean())}
        for label, values in scored.per_source.items():
            out[f"reward/{label}"] = _nanmean(values)
        if costs is not None:
            out["cost"] = float(costs.total.mean())
            for label, values in costs.per_source.items():
                out[f"cost/{label}"] = _nanmean(values)
        out["empty_completions"] = float(scored.empty.sum())
        kl = obj.kl_per_token(policy_lp, ref_lp, config.kl_estimator, config.reference.log_ratio_clamp)
        harmful = torch.tensor([h is True for h in batch.harmful], device=mask.device)
        out["kl"] = _token_mean(kl, mask)
        for name, rows in (("harmful", harmful), ("benign", ~harmful)):
            if rows.any():
                out[f"kl/{name}"] = _token_mean(kl[rows], mask[rows])
        # the mean −log π of the sampled tokens: a Monte Carlo estimate of the per-token entropy
        out["entropy"] = _token_mean(-policy_lp, mask)
        out["completion_length"] = float(sum(len(c) for c in completions) / len(completions))
        # cut at max_new_tokens: full length without a closing eos (one that ends exactly there finished on its own)
        stops = eos_ids(self.tokenizer, self.model)
        out["truncated_fraction"] = float(sum(len(c) == config.generation.max_new_tokens and c[-1] not in stops
                                              for c in completions) / len(completions))
        harmful_rows = [i for i, h in enumerate(batch.harmful) if h is True]
        if harmful_rows:
            verdicts = self._refusal.score([], [batch.texts[i] for i in harmful_rows])
            out["refusal_rate/harmful"] = sum(v.harmful is False for v in verdicts) / len(verdicts)
        return out

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        folder = self.out / f"checkpoint-{self.step}"
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step,
            "trainable": {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "lagrange": self.lagrange.state_dict() if self.lagrange else None, "lsc": self.lsc_cache,
        }
        torch.save(state, folder / (STATE_NAME + ".tmp"))
        (folder / (STATE_NAME + ".tmp")).replace(folder / STATE_NAME)  # a killed save leaves no half state
        for old in checkpoints(self.out)[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old)
        return folder

    def load_checkpoint(self, folder: Path) -> None:
        state = torch.load(folder / STATE_NAME, map_location="cpu", weights_only=False)
        params = dict(self.model.named_parameters())
        missing = sorted(set(state["trainable"]) - set(params))
        if missing:
            raise ValueError(f"{folder}: checkpoint holds parameters the model lacks: {missing[:5]}")
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value.to(params[name].device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.lagrange is not None and state.get("lagrange"):
            self.lagrange.load_state_dict(state["lagrange"])
        self.lsc_cache = dict(state.get("lsc") or {})
        self.step = int(state["step"])


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints (with their state file), oldest first."""
    found = [p for p in out.glob("checkpoint-*") if (p / STATE_NAME).is_file() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _schedule(config: OnlineConfig, total: int):
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.lr_scheduler_type == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        return 1.0

    return factor


def _dropout_active(model: Any) -> bool:
    """Whether a train-mode forward of ``model`` can differ from its eval-mode one: a dropout module with p > 0,
    or a dropout rate a module applies functionally (transformers' attention keeps ``attention_dropout`` on the
    module and passes it to the attention kernel only in train mode), or one in the model's config. Erring
    towards True only costs the separate eval-mode forward of the sampling policy."""
    def rate(name: str, value: Any) -> bool:
        return (("dropout" in name or name.endswith("pdrop")) and isinstance(value, (int, float))
                and not isinstance(value, bool) and value > 0)

    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            return True
        if any(rate(name, value) for name, value in vars(module).items()):
            return True
    config = getattr(model, "config", None)
    settings = config.to_dict() if hasattr(config, "to_dict") else {}
    return any(rate(name, value) for name, value in settings.items())


def _nanmean(values: Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else math.nan


def _token_mean(values: Tensor, mask: Tensor) -> float:
    return float((values * mask).sum() / mask.sum().clamp(min=1.0))
