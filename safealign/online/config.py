"""The online-training recipe schema (``safealign train CONFIG.yaml`` with ``trainer: online``).

Every check here runs before a model loads (docs/online.md, "Bad input"): a K below 2 for RLOO/GRPO,
a cost threshold outside what the cost sources can return, a reward weight that is not finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from safealign import checks
from safealign.errors import UserError
from safealign.train.config import LoraConfig, check_attn_implementation, check_model_revision

ALGORITHMS = ("rloo", "grpo", "ipo")
KL_ESTIMATORS = ("k1", "k3")
SOURCE_KINDS = ("judge", "reward_model", "callable")
APPLY_ON = ("all", "harmful", "benign")
SCALE_REWARDS = ("group", "batch", "none")
LOSS_AGGREGATIONS = ("sequence", "token")
# a judge source's ``reward_if`` left out: a reward pays for safe answers, a cost charges harmful ones (a cost judge
# that took the reward's default charged refusals, so Safe RLHF's λ pushed the policy to comply)
REWARD_IF_DEFAULT = {"reward": "not_harmful", "cost": "harmful"}


@dataclass
class PromptsConfig:
    """Training prompts: the built-in harmful/benign train splits, or a JSONL file of ``{prompt, harmful[, id]}``
    (``harmful`` true/false on every row, ids unique; safealign/online/prompts.py)."""

    path: Optional[str] = None  # None: the built-in sets (safealign/data/builtin)
    harmful_train: int = 24  # built-in only: how many harmful / ordinary benign / borderline prompts
    benign_train: int = 16
    borderline_train: int = 8
    max_prompt_length: int = 256

    def validate(self, prefix: str = "prompts.") -> None:
        for key in ("harmful_train", "benign_train", "borderline_train"):
            checks.at_least(prefix + key, getattr(self, key), 0)
        checks.at_least(prefix + "max_prompt_length", self.max_prompt_length, 1)


@dataclass
class SourceConfig:
    """One reward (or cost) source. ``kind``: ``judge`` (a registered judge by ``name``; the source gives 1
    where its verdict is ``reward_if`` — ``not_harmful`` or ``harmful``; left out, ``not_harmful`` for a reward
    and ``harmful`` for a Safe-RLHF cost: :data:`REWARD_IF_DEFAULT` — else 0), ``reward_model`` (a
    folder written by ``trainer: reward``, at ``path``) or ``callable`` (``path`` = ``module:function`` or
    ``module.function``, called as ``fn(prompts, completions, harmful) -> list[float]``). ``apply_to``
    restricts the source to harmful or benign prompts (0 elsewhere). ``lsc``: log σ(r − r_ref(x)), with r_ref(x) the
    mean score of the reference model's own samples on its view of x (x_s under E-RLHF; docs/online.md)."""

    kind: str = "judge"
    name: str = "refusal"
    path: Optional[str] = None
    params: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    apply_to: str = "all"  # all | harmful | benign
    reward_if: Optional[str] = None  # None: REWARD_IF_DEFAULT for the source's role, written in by validate
    lsc: bool = False

    @property
    def label(self) -> str:
        if self.kind == "judge":
            base = self.name
        elif self.kind == "callable":
            base = (self.path or "").replace(":", ".").rsplit(".", 1)[-1]  # the function's name
        else:
            base = (self.path or self.kind).rstrip("/").rsplit("/", 1)[-1]  # the model folder's name
        return f"{base}@{self.apply_to}" if self.apply_to != "all" else base

    def validate(self, prefix: str, what: str = "reward") -> None:
        """Checks the source as a ``what`` (reward or cost), filling in that role's ``reward_if`` if left out, so
        the saved config and the run's digest hold the value used (a reward's is the one recorded before)."""
        if self.reward_if is None:
            self.reward_if = REWARD_IF_DEFAULT[what]
        checks.one_of(prefix + "kind", self.kind, SOURCE_KINDS)
        checks.one_of(prefix + "apply_to", self.apply_to, APPLY_ON)
        checks.one_of(prefix + "reward_if", self.reward_if, ("not_harmful", "harmful"))
        checks.finite(prefix + "weight", self.weight)
        if self.kind in ("reward_model", "callable") and not self.path:
            raise UserError(f"{prefix}path: a {self.kind} source needs a path "
                            f"({'a reward-model folder' if self.kind == 'reward_model' else 'module:function'})")

    @property
    def value_range(self) -> tuple[float, float]:
        """What one score of this source can be (judges give 0 or 1; a model or callable anything)."""
        return (0.0, 1.0) if self.kind == "judge" and not self.lsc else (-math.inf, math.inf)


@dataclass
class ReferenceConfig:
    """The KL anchor. ``transform``: ``identity`` is plain RLHF; ``safety_prefix`` is E-RLHF (the reference
    scores the sampled tokens after the safety-prefixed prompt x_s of harmful prompts). ``model``: a
    separate reference; default the starting policy (LoRA: adapter disabled; full FT: a frozen copy)."""

    transform: str = "identity"
    transform_params: dict[str, Any] = field(default_factory=dict)
    model: Optional[str] = None
    log_ratio_clamp: float = 20.0  # |ℓ_ref − ℓ| is clamped before k3's exp (docs/online.md)


@dataclass
class GenerationConfig:
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    # pre-fill each prompt once and repeat its KV cache K times (safealign/online/prefix_cache.py); same
    # distribution as re-computing it per sample; models where that is not exact fall back, logged once
    reuse_prompt_cache: bool = True

    def off_policy(self, prefix: str = "generation.") -> list[str]:
        """The settings that make the samples come from another distribution than the policy π whose untempered,
        untruncated log-probs the update and the KL use (docs/online.md, step 2); empty for on-policy sampling."""
        return [f"{prefix}{key}={value}" for key, value, on_policy in (
            ("temperature", self.temperature, 1.0), ("top_p", self.top_p, 1.0), ("top_k", self.top_k, 0))
            if value != on_policy]  # fmt: skip

    def validate(self, prefix: str = "generation.") -> None:
        checks.at_least(prefix + "max_new_tokens", self.max_new_tokens, 1)
        checks.positive(prefix + "temperature", self.temperature)
        checks.within(prefix + "top_p", self.top_p, 0, 1, open_low=True)
        checks.at_least(prefix + "top_k", self.top_k, 0)


@dataclass
class SafeRLHFConfig:
    """Safe RLHF's Lagrangian (arXiv 2310.12773): maximise reward subject to mean cost ≤ ``threshold``.
    The policy's advantage is ``(A_R − λ·A_C)/(1 + λ)``; λ follows ``log λ ← log λ + lr·(ĉ − d)·λ`` with
    ĉ the mean cost of the last ``window`` samples, clamped to ``lambda_max``."""

    enabled: bool = False
    cost: list[SourceConfig] = field(default_factory=list)
    threshold: float = 0.0
    lambda_init: float = 1.0
    lambda_lr: float = 0.1
    lambda_max: float = 5.0
    window: int = 128

    def validate(self, prefix: str = "safe_rlhf.") -> None:
        if not self.enabled:
            for source in self.cost:  # unchecked, but saved with the reward_if they would run under
                source.reward_if = source.reward_if or REWARD_IF_DEFAULT["cost"]
            return
        if not self.cost:
            raise UserError(f"{prefix}cost is empty: Safe RLHF needs at least one cost source")
        for i, source in enumerate(self.cost):
            source.validate(f"{prefix}cost.{i}.", "cost")
            if source.lsc:  # costs are combined raw, while an LSC source would count as unbounded below
                raise UserError(f"{prefix}cost.{i}.lsc: LSC is for reward sources; a cost source is scored raw (no "
                                f"reference baseline), so lsc: true on cost source {source.label!r} would only "
                                "switch off the threshold's range check; remove it")
        checks.finite(prefix + "threshold", self.threshold)
        checks.positive(prefix + "lambda_init", self.lambda_init)
        checks.positive(prefix + "lambda_lr", self.lambda_lr)
        checks.at_least(prefix + "lambda_max", self.lambda_max, self.lambda_init, "lambda_init must fit under it")
        checks.at_least(prefix + "window", self.window, 1)
        low = sum(min(s.weight * s.value_range[0], s.weight * s.value_range[1]) for s in self.cost)
        high = sum(max(s.weight * s.value_range[0], s.weight * s.value_range[1]) for s in self.cost)
        if not low <= self.threshold < high:
            raise UserError(f"{prefix}threshold={self.threshold}: the weighted cost lies in [{low}, {high}], so the "
                            "constraint mean cost <= threshold is "
                            f"{'never met' if self.threshold < low else 'always met'}; choose a threshold inside it")


@dataclass
class OnlineConfig:
    trainer: str = "online"
    model: str = "smollm2-135m-instruct"
    # a hub id's branch, tag or commit, as the preference trainer's (safealign.train.config): the policy, a
    # reference.model naming the same hub id, and the saved adapter's base stand at it
    model_revision: Optional[str] = None
    output_dir: str = "runs/online"
    trust_remote_code: bool = False
    # the attention kernels the policy and a reference.model load with, as the preference trainer's
    # (safealign.train.config.check_attn_implementation); None: transformers' default, SDPA where the model has it
    attn_implementation: Optional[str] = None
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    algorithm: str = "rloo"
    num_generations: int = 4  # K completions per prompt
    prompts_per_step: int = 4
    gradient_accumulation_steps: int = 1  # micro-batches per step (the K samples of a prompt stay together)
    updates_per_batch: int = 1  # optimizer steps on one generation batch; > 1 makes the ratio clip bite
    max_steps: int = 20
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "constant"  # constant | linear
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping (as the offline trainer); grad_norm is logged either way
    beta: float = 0.05  # KL strength
    kl_estimator: str = "k1"  # rloo: in the reward (k1 as TRL); grpo: per token in the loss (k3 as TRL)
    kl_ratio_correction: bool = True  # grpo: KL term × π/π_old, the unbiased gradient (TRL's default)
    epsilon: float = 0.2
    epsilon_high: Optional[float] = None  # default: epsilon
    scale_rewards: str = "group"  # grpo: divide by the group's std (+1e-4), the batch's, or not at all
    loss_aggregation: str = "sequence"  # grpo: token mean per sequence then mean ("grpo"), or token mean ("bnpo")
    ipo_tau: float = 0.1
    ipo_labels: str = "hard"  # hard: ±1/(2τ) from which sample scored higher; soft: σ(r_i − r_j)
    # the reward of an empty completion (counted as empty_completions), and no more than the lowest non-empty
    # completion of its prompt (LSC scores are unbounded below, a reward model's any real number; docs/online.md)
    empty_reward: float = -1.0
    rewards: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    safe_rlhf: SafeRLHFConfig = field(default_factory=SafeRLHFConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(dropout=0.0))
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    save_steps: int = 10
    seed: int = 0
    logps_chunk_size: int = 1024

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.trainer != "online":
            raise UserError(f"trainer={self.trainer!r}: this schema is the online trainer's")
        check_model_revision(self.model, self.model_revision)
        check_attn_implementation(self.attn_implementation)
        checks.one_of("algorithm", self.algorithm, ALGORITHMS)
        checks.at_least("num_generations", self.num_generations, 2,
                        "RLOO's leave-one-out baseline, GRPO's group std and IPO's pairs need two samples a prompt")
        for key in ("prompts_per_step", "gradient_accumulation_steps", "updates_per_batch", "max_steps",
                    "save_steps", "logps_chunk_size"):  # fmt: skip
            checks.at_least(key, getattr(self, key), 1)
        if self.prompts_per_step % self.gradient_accumulation_steps:
            raise UserError(f"prompts_per_step ({self.prompts_per_step}) must be a multiple of "
                            f"gradient_accumulation_steps ({self.gradient_accumulation_steps})")
        checks.at_least("learning_rate", self.learning_rate, 0)
        checks.one_of("lr_scheduler_type", self.lr_scheduler_type, ("constant", "linear"))
        checks.at_least("warmup_steps", self.warmup_steps, 0)
        checks.at_least("max_grad_norm", self.max_grad_norm, 0, "0 means no clipping")
        checks.at_least("beta", self.beta, 0)
        checks.one_of("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        if self.algorithm == "grpo" and self.beta and self.kl_estimator == "k1" and not self.kl_ratio_correction:
            raise UserError("algorithm=grpo with kl_estimator=k1 and kl_ratio_correction=false has no KL pull: the "
                            "gradient of β·k1 = β·(log π − log πref) is β·∇log π, whose mean over the policy's own "
                            "samples is 0, so beta does nothing on average; set kl_ratio_correction=true (the unbiased "
                            "KL gradient), kl_estimator=k3, or beta=0")
        checks.within("epsilon", self.epsilon, 0, 1, open_low=True, open_high=True)
        if self.epsilon_high is not None:
            checks.positive("epsilon_high", self.epsilon_high)
        checks.one_of("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        checks.one_of("loss_aggregation", self.loss_aggregation, LOSS_AGGREGATIONS)
        checks.positive("ipo_tau", self.ipo_tau)
        checks.one_of("ipo_labels", self.ipo_labels, ("hard", "soft"))
        checks.finite("empty_reward", self.empty_reward)
        if not self.rewards:
            raise UserError("rewards is empty: name at least one reward source")
        for i, source in enumerate(self.rewards):
            source.validate(f"rewards.{i}.")
        self.safe_rlhf.validate()
        if self.safe_rlhf.enabled and self.algorithm == "ipo":
            raise UserError("safe_rlhf needs advantages (algorithm rloo or grpo), not ipo's pairs")
        self.prompts.validate()
        self.generation.validate()
        self.lora.validate()
        checks.positive("reference.log_ratio_clamp", self.reference.log_ratio_clamp,
                        "it bounds |ℓ_ref − ℓ| before the KL estimate; 0 is not 'off': every KL would be 0, "
                        "so beta would do nothing")
