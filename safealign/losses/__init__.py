"""Preference losses: a registry of pure functions over per-sequence log-probs.

Each loss is ``fn(x: PairLogps | UnpairedLogps, *, <own params>) -> LossOutput`` (unreduced ``(B,)``
losses, detached metrics), registered with :func:`register_loss`; ``safealign losses`` lists them.
Combine several with weights through :func:`build_loss`, which validates names and parameters up
front and returns a :class:`ComposedLoss` the trainer calls on each batch.

E-variants (E-DPO, E-IPO, E-KTO, …) are **not** separate loss names: any reference-based loss becomes
its E-variant when the reference log-probs are computed on the transformed prompt x_s (a
``PromptTransform`` on the reference view, configured with the reference, not with the loss). The
loss arithmetic is unchanged — only ``ref_chosen``/``ref_rejected`` differ.
"""

from __future__ import annotations

from safealign.losses.base import (
    LOSSES,
    LossInfo,
    get_loss,
    loss_info,
    loss_names,
    loss_params,
    register_loss,
    validate_params,
)
from safealign.losses.compose import ComposedLoss, LossSpec, build_loss
from safealign.losses.state import RunningMean

# Built-in families register on import (torch only, so this stays light).
from safealign.losses import sigmoid, margin, exo_nca, apo, aot, discopop, ref_free, dil, kto, bco, poft  # noqa: E402,F401,I001
from safealign.losses import safety  # noqa: E402,F401,I001

__all__ = [
    "LOSSES",
    "ComposedLoss",
    "LossInfo",
    "LossSpec",
    "RunningMean",
    "build_loss",
    "get_loss",
    "loss_info",
    "loss_names",
    "loss_params",
    "register_loss",
    "validate_params",
]
