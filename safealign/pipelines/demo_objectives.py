"""The demo methods for the hidden-state objectives (docs/objectives.md): ``rr`` (circuit breakers by
representation rerouting) and ``refat`` (refusal-feature adversarial training).

Both train from the demo's self-generated pairs with the demo's optimiser, LoRA and epochs, like every
other method (the same table for every method); the objective replaces the demo's ``train.losses``. Neither
has an E-variant: RR compares the policy and the frozen model at the same token positions, which a prefixed
reference prompt would shift, and ReFAT has no reference term.
"""

from __future__ import annotations

from typing import Any

from safealign.pipelines.demo_methods import register_method
from safealign.train.config import LossConfig, TrainConfig


def _objective(name: str, **params: Any):
    def configure(train: TrainConfig) -> None:
        train.objective.name = name
        train.objective.params = dict(params)
        train.losses = [LossConfig()]  # unused: the objective computes its own loss (a recipe may not set both)
        train.diagnostics.entanglement_every = 0  # the probe compares a pair's log-probs; objectives have none
    return configure


register_method("rr", "circuit breakers: harmful completions' hidden states rerouted, benign ones retained "
                "(LoRA; docs/objectives.md)", _objective("circuit_breakers"), e_variant=False)
register_method("refat", "ReFAT: refusals trained with the refusal direction ablated, benign answers kept "
                "(docs/objectives.md)", _objective("refat"), e_variant=False)
