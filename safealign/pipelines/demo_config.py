"""``DemoConfig``: the demo's own settings, with the training and evaluation configs nested inside.

The demo's own keys choose the prompt sets, seeds and variants. How each model trains is ``train`` (a
:class:`~safealign.train.config.TrainConfig`, e.g. ``train.learning_rate=1e-3``, ``train.losses.0.params.beta=0.5``)
and how it is evaluated is ``eval`` (an :class:`~safealign.eval.config.EvalConfig`, e.g.
``eval.generation.max_new_tokens=64``). Per stage the demo sets ``train.model``, ``train.output_dir``,
``train.seed``, ``train.data.path``, the reference view (``train.reference.transform`` and its params, from
the variant), ``eval.model.name`` and ``eval.output_dir``; values given for those are replaced. Every evaluation
is handed the built-in held-out prompts (or an ``extra_harmful`` file's), so ``eval.behaviors``' file and
selection are refused (``harmful_test`` and ``extra_harmful`` choose the prompts); its length bounds apply.

The flat keys of earlier versions keep working as aliases (:data:`ALIASES`), so ``nll_weight=0 beta=0.5
learning_rate=1e-3`` means what it always meant. ``nll_weight`` W picks the objective: ``rpo`` (DPO + W·NLL
on the chosen response) for W ≠ 0, plain ``dpo`` for 0, keeping β; it is applied after every other
override, so its position on the command line does not matter.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from safealign.config import COMMAND_LINE, Value, load_config, to_dict
from safealign.data.builtin import UNTUNED_BENIGN
from safealign.data.safety_pairs import check_cut_answers
from safealign.errors import UserError
from safealign.eval.config import BEHAVIOR_SELECTION, BehaviorsConfig, EvalConfig
from safealign.io.rundir import under
from safealign.pipelines.demo_methods import METHODS, method_train_config
from safealign.train.config import DataConfig, DiagnosticsConfig, LoraConfig, LossConfig, TrainConfig

# an ``extra_benign`` entry naming a built-in set instead of a file: ``builtin:untuned_benign``
BUILTIN_PREFIX = "builtin:"

# The methods ``variants`` may name (dpo, e-dpo, safedpo, deep-aug, derta, ...; safealign/pipelines/demo_methods.py).
VARIANTS = METHODS

# earlier flat key -> its path in the nested config (lora_r and nll_weight: see _COMPOSITE)
ALIASES = {
    "beta": "train.losses.0.params.beta",
    "learning_rate": "train.learning_rate",
    "epochs": "train.num_train_epochs",
    "train_batch_size": "train.per_device_train_batch_size",
    "lora_last_layers": "train.lora.last_layers",
    "entanglement_every": "train.diagnostics.entanglement_every",
    "entanglement_probe": "train.diagnostics.probe_pairs",
    "eval_max_new_tokens": "eval.generation.max_new_tokens",
    "batch_size": "eval.generation.batch_size",
    "templates": "eval.attack_params.template.names",
    "lora_r": "train.lora.r (and train.lora.alpha = 2 × r)",
    "nll_weight": "train.losses: [rpo(beta, eta=W)], or [dpo(beta)] for W = 0",
}
_FLOATS = ("beta", "learning_rate", "epochs")  # typed float before, so beta=1 still means 1.0


def _demo_train() -> TrainConfig:
    """One short epoch of LoRA RPO on CPU (docs/findings.md: DPO alone barely makes this model refuse);
    lr 2e-3 because 5e-4 measured too weak in one epoch (direct ASR 0.93 -> 0.60)."""
    return TrainConfig(
        losses=[LossConfig("rpo", params={"beta": 0.1, "eta": 1.0})],
        lora=LoraConfig(enabled=True, r=16, alpha=32),
        data=DataConfig(path="pairs.jsonl", format="standard", max_length=192, max_prompt_length=96),
        diagnostics=DiagnosticsConfig(entanglement_every=8, probe_pairs=4),
        learning_rate=2e-3, num_train_epochs=1.0, per_device_train_batch_size=8, logging_steps=1, save_steps=10,
        save_total_limit=1)


def _demo_eval() -> EvalConfig:
    config = EvalConfig(attacks=["direct", "template"], judges=["refusal"],
                        attack_params={"template": {"names": ["refusal_suppression", "roleplay_novelist"]}})
    config.generation.max_new_tokens = 48
    config.generation.batch_size = 16  # also the batch of pair generation
    return config


@dataclass
class DemoConfig:
    model: str = "smollm2-135m-instruct"
    output_dir: str = "runs/demo"
    # DPO beside E-DPO by default, trained from the same pairs with the same seeds: the paired difference is the
    # demo's claim about the E-variant (issue 20), so it is printed without asking
    variants: list[str] = field(default_factory=lambda: ["dpo", "e-dpo"])
    seed: int = 0  # generation and pair building
    train_seeds: list[int] = field(default_factory=lambda: [0])  # one trained model per variant and seed
    # self-generated training pairs (built-in train split), per kind
    harmful_train: int = 96
    benign_train: int = 64
    borderline_train: int = 32
    # held-out evaluation (built-in test split)
    harmful_test: int = 40
    benign_test: int = 24
    borderline_test: int = 24
    # behavior files from elsewhere (AdvBench/HarmBench CSV): direct-request ASR on up to extra_limit of each,
    # spread evenly over the file -- prompts unlike the built-in ones the pairs were made from
    extra_harmful: list[str] = field(default_factory=list)
    extra_limit: int = 50
    # benign prompt sets the demo's data and defaults were not tuned on (issue 14): over-refusal on a seeded sample
    # of up to extra_benign_limit prompts of each. A file (e.g. an Alpaca-style instruction list) or
    # builtin:untuned_benign, the project's own 60 plain instructions (safealign/data/builtin/README.md), so the
    # default run measures it without data from elsewhere; a list given replaces the default
    extra_benign: list[str] = field(default_factory=lambda: [BUILTIN_PREFIX + UNTUNED_BENIGN])
    extra_benign_limit: int = 50
    # the safety prefix of the E-variant's reference view: a built-in name (safealign/data/transforms.py PREFIXES)
    # or the text itself, ending with its separator (one word naming no built-in is refused as a misspelt name)
    prefix: str = "community_guidelines"
    # pair generation: greedy, this many tokens, eval.generation.batch_size, seeded with ``seed`` (demo.py,
    # _pair_params); the rest of eval.generation (sampling, stop strings) applies to the evaluation only: the
    # jailbreak attacks and the over-refusal prompts
    pair_max_new_tokens: int = 48
    # a pair whose own answer was cut at pair_max_new_tokens: keep (as before; the pairs file stays byte for byte
    # what earlier versions built), drop, or open (trained without the end-of-turn token); data/safety_pairs.py
    cut_answers: str = "keep"
    train: TrainConfig = field(default_factory=_demo_train)
    eval: EvalConfig = field(default_factory=_demo_eval)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Value ranges and loss parameters, checked before the model loads (the pair build runs first)."""
        from safealign import checks
        from safealign.data.transforms import prefix_text
        from safealign.losses import validate_params

        checks.at_least("pair_max_new_tokens", self.pair_max_new_tokens, 1)
        check_cut_answers(self.cut_answers)
        checks.at_least("extra_limit", self.extra_limit, 1)
        checks.at_least("extra_benign_limit", self.extra_benign_limit, 1)
        for spec in self.extra_benign:  # a misspelt built-in name fails here, not after the pair build
            if spec.startswith(BUILTIN_PREFIX) and spec != BUILTIN_PREFIX + UNTUNED_BENIGN:
                raise UserError(f"extra_benign: {spec!r} is not a built-in set; the built-in one is "
                                f"{BUILTIN_PREFIX + UNTUNED_BENIGN} (or give a file path)")
        _check_extra_names(self)
        self._check_stages()
        if self.eval.model.revision is not None:  # the demo loads `model` itself: the revision would go unused
            raise UserError("eval.model.revision: the demo evaluates the model named by `model` and the models it "
                            "trains, loaded without a revision; leave eval.model.revision unset")
        # every evaluation is handed the built-in held-out prompts (or an extra_harmful file's): eval.behaviors'
        # file and selection would go unused (its length bounds, max_chars and too_long, still apply)
        selection = checks.field_defaults(BehaviorsConfig, BEHAVIOR_SELECTION)
        checks.unread("eval.behaviors.", self.eval.behaviors, selection,
                      "the demo evaluates its built-in held-out harmful prompts (harmful_test of them) and the files "
                      "of extra_harmful (extra_limit behaviors of each), never eval.behaviors' file or selection; "
                      "use harmful_test, extra_harmful and extra_limit instead")
        if self.train.model_revision is not None:  # each stage trains `model`, in place of train.model
            raise UserError("train.model_revision: the demo trains the model named by `model`, loaded without a "
                            "revision; leave train.model_revision unset")
        if not str(self.prefix).strip():
            raise UserError("prefix: a built-in prefix name or non-empty text")
        prefix_text(self.prefix)  # a misspelt name fails here, not when the E-variant's stage trains
        # the demo's figures are direct-request and template ASR under the refusal judge, and the refusal margin
        # scores the base model's direct answers: without them a run would fail after training, not here
        for key, needed, listed in (("eval.attacks", ("direct", "template"), self.eval.attacks),
                                    ("eval.judges", ("refusal",), self.eval.judges)):
            missing = [name for name in needed if name not in listed]
            if missing:
                raise UserError(f"{key}: the demo reports direct-request and template ASR under the refusal judge, "
                                f"so {key} must include {', '.join(needed)} (others may be added); "
                                f"{', '.join(missing)} missing from {list(listed)}")
        for key in ("harmful_train", "benign_train", "borderline_train", "benign_test", "borderline_test"):
            checks.at_least(key, getattr(self, key), 0)
        # the demo's headline figures are ASR on the held-out harmful prompts (none: the evaluation fails after
        # the pair build); the benign sets may be empty (their rates are then unscored)
        checks.at_least("harmful_test", self.harmful_test, 1, "the held-out harmful prompts the ASR is measured on")
        train_counts = ("harmful_train", "benign_train", "borderline_train")
        if any(METHODS.get(v).trains for v in self.variants) and not sum(getattr(self, k) for k in train_counts):
            raise UserError(f"{', '.join(train_counts)} are all 0: no training pair could be built, so the first "
                            f"trained variant ({', '.join(v for v in self.variants if METHODS.get(v).trains)}) "
                            "would fail after the base model's evaluation; give at least one training prompt")
        self.train.validate()
        self.eval.validate()
        for loss in self.train.losses:  # e.g. beta = 0 would otherwise fail only when the first stage trains
            validate_params(loss.name, loss.params)

    def _check_stages(self) -> None:
        """The variants and training seeds, checked when the config loads: before ``--fresh`` deletes anything
        (safealign/cli/demo.py) and before the pair build."""
        unknown = [v for v in self.variants if v not in METHODS]
        if unknown or not self.variants:
            raise UserError(f"unknown demo variant(s) {unknown}; valid: {', '.join(METHODS)}")
        if not self.train_seeds or len(set(self.train_seeds)) != len(self.train_seeds):
            raise UserError(f"train_seeds must be distinct and non-empty, got {self.train_seeds}")


# the kinds of the built-in benign prompts and the over-refusal summary's overall rate: an ``extra_benign`` set of
# one of these names would be counted in that rate (safealign/eval/helpfulness/overrefusal.py, summarize_overrefusal)
BUILTIN_BENIGN_KINDS = ("ordinary", "borderline", "all")


def extra_name(spec: str) -> str:
    """An extra set's name in figures and record kinds: a file's stem (up to its first dot), or a built-in set's
    own name."""
    return Path(spec.removeprefix(BUILTIN_PREFIX)).name.split(".")[0]


def _check_extra_names(config: DemoConfig) -> None:
    """Every extra set is named by its file's stem: two files of one name would share a figure (one set
    silently replacing the other), and a benign set named as a built-in kind would merge into that kind's rate."""
    for key in ("extra_harmful", "extra_benign"):
        seen: dict[str, str] = {}
        for spec in getattr(config, key):
            name = extra_name(spec)
            if name in seen:
                raise UserError(f"{key}: {seen[name]} and {spec} are both named {name!r} (a set is named by its "
                                f"file's stem, up to the first dot), so one would replace the other; rename one")
            seen[name] = spec
            if key == "extra_benign" and name in BUILTIN_BENIGN_KINDS:
                raise UserError(f"extra_benign: {spec} is named {name!r} (its file's stem), a name the over-refusal "
                                "rates already use (the built-in kinds ordinary and borderline, all for every "
                                f"prompt): its prompts would be counted in {name}_refusal_rate; rename the file")


# What every stage sets itself (train_config, eval_config, method_train_config): an override of one of these would
# be accepted, fingerprinted and silently replaced, so it is refused, naming the demo key that does set it.
SET_PER_STAGE = {
    "train.model": "model=", "eval.model.name": "model=", "train.seed": "train_seeds=[...]",
    "train.output_dir": "output_dir=", "eval.output_dir": "output_dir=",
    "train.data.path": "the demo builds its own pairs; train on a file with `safealign train`",
    "train.reference.transform": "variants= (each method sets its reference view) and prefix=",
    "train.reference.transform_params": "variants= (each method sets its reference view) and prefix=",
    "eval.model.revision": "model= (each stage loads it without a revision; a local folder pins its weights)",
    "train.model_revision": "model= (each stage loads it without a revision; a local folder pins its weights)",
}


def check_not_set_per_stage(key: str, source: str) -> None:
    """UserError for an override of a key every stage sets itself (:data:`SET_PER_STAGE`)."""
    owned = under(key, SET_PER_STAGE)
    if owned is not None:
        raise UserError(f"{source}: {key}: every demo stage sets {owned} itself, so this value would be silently "
                        f"replaced; use {SET_PER_STAGE[owned]}")


def load_demo_config(overrides: list[str | Value]) -> DemoConfig:
    """``DemoConfig`` from ``key=value`` overrides or typed :class:`~safealign.config.Value` ones (a sweep grid's
    YAML values), old flat keys included (see :data:`ALIASES`); a key every stage sets itself is refused
    (:data:`SET_PER_STAGE`)."""
    translated: list[str | Value] = []
    nll_weight = None
    for override in overrides:
        if isinstance(override, Value):
            key, typed, source = override.key, True, override.source
            raw: Any = override.value
        else:
            key, sep, raw = override.partition("=")
            typed, source = False, COMMAND_LINE
            if not sep:
                translated.append(override)
                continue
        check_not_set_per_stage(ALIASES.get(key, key), source)
        if key not in ALIASES:
            translated.append(override)
        elif key == "nll_weight":
            nll_weight = _number(key, raw, typed, source)
        elif key == "lora_r":
            rank = int(_number(key, raw, typed, source))
            translated += ([Value("train.lora.r", rank, source), Value("train.lora.alpha", 2 * rank, source)] if typed
                           else [f"train.lora.r={raw}", f"train.lora.alpha={2 * rank}"])
        else:
            value = _number(key, raw, typed, source) if key in _FLOATS else raw
            translated.append(Value(ALIASES[key], value, source) if typed else f"{ALIASES[key]}={value}")
    config = load_config(DemoConfig, None, translated)
    if nll_weight is not None:
        set_nll_weight(config, nll_weight)
    return config


def set_nll_weight(config: DemoConfig, weight: float) -> None:
    """The demo's objective with NLL weight ``weight``: rpo (DPO + weight·NLL), or dpo for 0; β is kept."""
    beta = config.train.losses[0].params.get("beta", 0.1) if config.train.losses else 0.1
    config.train.losses = [LossConfig("rpo", params={"beta": beta, "eta": weight}) if weight
                           else LossConfig("dpo", params={"beta": beta})]


def _number(key: str, raw: Any, typed: bool = False, source: str = COMMAND_LINE) -> float:
    value = raw if typed else OmegaConf.from_dotlist([f"value={raw}"])["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{source}: {key}: expected a number, got {raw!r}")
    return float(value)


def from_saved(saved: dict[str, Any]) -> dict[str, Any]:
    """A run directory's saved ``demo_config.json`` in today's shape: files from before the nesting hold the
    flat keys, which go through the aliases (an unknown key of an old file is ignored)."""
    if "train" in saved or "eval" in saved:
        return saved
    known = {f.name for f in dataclasses.fields(DemoConfig)} | set(ALIASES)
    # typed: a saved text (a prefix with quotes or a newline) arrives as it was saved
    overrides = [Value(k, v, "demo_config.json") for k, v in saved.items() if k in known]
    return to_dict(load_demo_config(overrides))


def train_config(config: DemoConfig, variant: str, pairs_path: Path, out: Path, seed: int = 0) -> TrainConfig:
    """The training config of one stage: ``config.train`` with the stage's model, folders and seed, rewritten
    by the method ``variant`` (objective, data transforms, reference view; demo_methods.py)."""
    train = copy.deepcopy(config.train)
    train.model, train.output_dir, train.seed = config.model, str(out), seed
    train.data.path = str(pairs_path)
    train = method_train_config(train, variant)
    if "prefix" in train.reference.transform_params:  # the E-variant's prefix is a demo setting
        train.reference.transform_params["prefix"] = config.prefix
    return train


def eval_config(config: DemoConfig, out: Path) -> EvalConfig:
    """The jailbreak evaluation of one stage: ``config.eval`` aimed at the stage's model and folder."""
    evaluation = copy.deepcopy(config.eval)
    evaluation.model.name = config.model
    evaluation.output_dir = str(out / "jailbreak")
    return evaluation


def objective_name(config: DemoConfig) -> str:
    """E.g. ``DPO (β=0.1) + 1·NLL(chosen) [rpo]``; other objectives by loss name and parameters."""
    losses = config.train.losses
    first = losses[0] if losses else None
    if len(losses) == 1 and first.name == "dpo":
        base = f"DPO (β={first.params.get('beta', 0.1)})"
    elif len(losses) == 1 and first.name == "rpo":
        base = f"DPO (β={first.params.get('beta', 0.1)}) + {first.params.get('eta', 1.0):g}·NLL(chosen) [rpo]"
    else:
        base = " + ".join(f"{loss.weight:g}·{loss.name}({_params_text(loss.params)})" for loss in losses)
    return base + f"; E-variant: reference given the {config.prefix!r} safety prefix on harmful rows"


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())
