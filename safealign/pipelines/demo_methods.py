"""The demo's methods: named recipes ``safealign demo --compare`` trains from the same self-generated pairs.

A method is a :class:`Method` in :data:`METHODS`: how it rewrites the stage's copy of the demo's training
config (objective, data transforms, reference mode), whether it trains at all, and optionally a wrapper
around the chat model the evaluation queries (an inference-time defense). Every stage of every method is
evaluated on the same held-out sets with the same seeds, so each is compared with a baseline method by the
same paired differences (safealign/pipelines/demo.py). Formulas: docs/safety-training.md.

**E-variants.** A method registered with ``e_variant=True`` has a reference term; ``e-<name>`` is the same
recipe whose reference scores harmful rows given the 'community_guidelines' safety prefix (E-RLHF). Built-in:

| method | objective | data transforms | E-variant |
|---|---|---|---|
| dpo | the demo's ``train.losses`` (rpo = DPO + NLL by default) | — | e-dpo |
| safedpo | DPO term → safedpo (Δ = 1), rpo's NLL kept as ``sft`` | flags_from_harmful, safety_order | e-safedpo |
| deep-aug | the demo's ``train.losses`` | flags_from_harmful, recovery | e-deep-aug |
| constrained-sft | constrained_sft, the paper's β 0.1 (live reference, no pair probe) | — | e-constrained-sft |
| derta | sft | flags_from_harmful, derta | none (no reference term) |
| rr | objective circuit_breakers (docs/objectives.md) | — | none (position-aligned reference) |
| refat | objective refat (docs/objectives.md) | — | none (no reference term) |

To add a method (another helper's objective, a defense), call :func:`register_method` from its own module and
import that module where the built-ins are imported (the end of this file); nothing else changes.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from safealign.errors import UserError
from safealign.registry import Registry
from safealign.train.config import LossConfig, TrainConfig

SAFETY_VIEW = ("safety_prefix", {"prefix": "community_guidelines", "apply_to": "harmful"})


@dataclass(frozen=True)
class Method:
    """One entry of the comparison. ``configure`` rewrites a copy of the demo's training config in place
    (None: train it as given); ``reference`` is the reference view (transform name, params); ``trains=False``
    evaluates the starting model instead (inference-time methods), ``wrap_chat(chat, params)`` wraps the chat model
    the evaluation queries (``params``: the evaluation's GenerationParams)."""

    summary: str
    configure: Callable[[TrainConfig], None] | None = None
    reference: tuple[str, dict[str, Any]] = ("identity", {})
    trains: bool = True
    wrap_chat: Callable[[Any, Any], Any] | None = None
    e_variant_of: str | None = None  # set on the ``e-`` entry: the method it is the E-variant of


METHODS: Registry[Method] = Registry("demo method")


def register_method(name: str, summary: str, configure: Callable[[TrainConfig], None] | None = None, *,
                    e_variant: bool, trains: bool = True, wrap_chat: Callable[[Any, Any], Any] | None = None) -> None:
    """Register ``name`` and, with ``e_variant`` (the method has a reference term), ``e-<name>``."""
    METHODS.register(name, Method(summary, configure, trains=trains, wrap_chat=wrap_chat))
    if e_variant:
        METHODS.register(f"e-{name}", Method(f"{summary}; E-variant: reference given the safety prefix on harmful "
                                             "rows", configure, SAFETY_VIEW, trains, wrap_chat, e_variant_of=name))


def method_train_config(base: TrainConfig, name: str) -> TrainConfig:
    """``base`` (the stage's training config) rewritten by the method ``name``."""
    method = METHODS.get(name)
    train = copy.deepcopy(base)
    if method.configure is not None:
        method.configure(train)
    train.reference.transform, params = method.reference
    train.reference.transform_params = dict(params)
    train.validate()
    return train


def uses_prefix(name: str) -> bool:
    """Whether the method ``name`` trains with the demo's ``prefix`` (its reference view takes one: E-variants)."""
    return "prefix" in METHODS.get(name).reference[1]


def describe(train: TrainConfig) -> str:
    """E.g. ``1·safedpo(beta=0.1, delta=1.0) + 1·sft(); data: flags_from_harmful, safety_order; reference:
    identity``: what a stage of a method trained."""
    if train.objective.name:  # an objective replaces the losses (docs/objectives.md)
        params = ", ".join(f"{k}={v}" for k, v in train.objective.params.items())
        return f"objective {train.objective.name}({params}); reference: {train.reference.transform}"
    losses = " + ".join(f"{loss.weight:g}·{loss.name}({', '.join(f'{k}={v}' for k, v in loss.params.items())})"
                        for loss in train.losses)
    transforms = ", ".join(t["name"] if isinstance(t, dict) else str(t) for t in train.data.transforms) or "none"
    return f"{losses}; data: {transforms}; reference: {train.reference.transform}"


def check_methods_on_layout(config: Any) -> None:
    """Every method's training config checked as ``safealign train`` checks it (loss, data transforms and their
    fields, loss inputs) on a two-row sample in the self-generated pair layout, before any model loads."""
    from safealign.data.safety_pairs import pair_row
    from safealign.io import write_jsonl
    from safealign.pipelines.demo_config import train_config
    from safealign.train.data import check_loss_inputs, load_training_items
    from safealign.train.objectives.data import load_role_rows
    from safealign.train.objectives.run import check_objective_config
    from safealign.train.run import build_loss_from_config, check_config

    class _Prompt:  # the fields pair_row reads
        def __init__(self, harmful: bool) -> None:
            self.id, self.prompt, self.harmful = f"sample-{int(harmful)}", "a sample request", harmful
            self.category, self.kind = "sample", "harmful" if harmful else "ordinary"

    with tempfile.TemporaryDirectory() as folder:
        sample = Path(folder) / "pairs.jsonl"
        write_jsonl(sample, [pair_row(_Prompt(h), "Sure, here is a sample answer to it.", False,
                                      ["I can't help with that."], 0) for h in (True, False)])
        for name in dict.fromkeys(config.variants):
            if not METHODS.get(name).trains:
                continue
            train = train_config(config, name, sample, Path(folder) / "out")
            try:
                if train.objective.name:  # the checks `safealign train` makes for an objective
                    load_role_rows(train, check_objective_config(train))
                else:
                    loss = build_loss_from_config(train)
                    check_config(train)
                    parsed, items = load_training_items(train, loss.input_kind)
                    check_loss_inputs(train, parsed.format, items, loss)
            except UserError as err:
                detail = str(err).replace(str(sample), "the demo's pairs.jsonl")  # not the sample's temporary path
                raise UserError(f"demo method {name!r} cannot train on the demo's self-generated pairs "
                                f"(columns prompt, chosen, rejected, harmful): {detail}") from None


# --------------------------------------------------------------------------- built-in methods
CONSTRAINED_SFT_BETA = 0.1  # Qi et al. 2024's β for token-wise constrained SFT (docs/safety-training.md)


def _add_transforms(train: TrainConfig, *names: str) -> None:
    train.data.transforms = [*train.data.transforms, *({"name": n, "params": {}} for n in names)]


def _safedpo(train: TrainConfig, delta: float = 1.0) -> None:
    """The demo objective with its DPO term made SafeDPO's; rpo's NLL term kept as an ``sft`` component (rpo =
    dpo + η·sft exactly), so safedpo differs from dpo only by the offset and the safety ordering."""
    losses = []
    for loss in train.losses:
        if loss.name not in ("dpo", "rpo"):
            raise UserError(f"demo method 'safedpo' replaces the dpo/rpo term of train.losses; got {loss.name!r}")
        losses.append(LossConfig("safedpo", loss.weight, {"beta": loss.params.get("beta", 0.1), "delta": delta}))
        if loss.name == "rpo" and loss.params.get("eta", 1.0):
            losses.append(LossConfig("sft", loss.weight * loss.params.get("eta", 1.0)))
    train.losses = losses
    _add_transforms(train, "flags_from_harmful", "safety_order")


def _constrained_sft(train: TrainConfig) -> None:
    # the paper's β (the per-token sigmoid scale, 5x and 20x on the first tokens), not the demo's DPO β: another
    # quantity, which only happens to share the demo's default 0.1
    train.losses = [LossConfig("constrained_sft", 1.0, {"beta": CONSTRAINED_SFT_BETA})]
    train.reference.mode = "live"  # per-token reference log-probs are not cached
    train.diagnostics.entanglement_every = 0  # the probe compares chosen and rejected; this loss reads chosen only


def _derta(train: TrainConfig) -> None:
    train.losses = [LossConfig("sft")]
    _add_transforms(train, "flags_from_harmful", "derta")


register_method("dpo", "the demo objective (train.losses)", e_variant=True)
register_method("safedpo", "SafeDPO (Δ 1) in place of the objective's DPO term, safety-ordered pairs", _safedpo,
                e_variant=True)
register_method("deep-aug", "the demo objective on recovery-augmented pairs (Qi et al. 2024)",
                lambda train: _add_transforms(train, "flags_from_harmful", "recovery"), e_variant=True)
register_method("constrained-sft", "token-wise constrained SFT on the chosen responses (Qi et al. 2024)",
                _constrained_sft, e_variant=True)
register_method("derta", "DeRTa: SFT with harmful-prefix and transition rows", _derta, e_variant=False)

# methods registered by other modules (the hidden-state objectives: rr, refat)
from safealign.pipelines import demo_objectives  # noqa: E402,F401


def comparison_pairs(variants: list[str]) -> list[tuple[str, str]]:
    """``(a, b)`` pairs the demo reports ``a − b`` for: every method against the baseline (``dpo`` when
    listed, else the first method), then each listed E-variant against its own method when that is not the
    baseline."""
    names = list(dict.fromkeys(variants))
    if len(names) < 2:
        return []
    baseline = "dpo" if "dpo" in names else names[0]
    pairs = [(name, baseline) for name in names if name != baseline]
    for name in names:
        plain = METHODS.get(name).e_variant_of
        if plain is not None and plain in names and plain != baseline:
            pairs.append((name, plain))
    return pairs

# inference-time defenses as methods (evaluated on the starting model, nothing trained): docs/defenses.md
import safealign.pipelines.demo_defenses  # noqa: E402,F401
