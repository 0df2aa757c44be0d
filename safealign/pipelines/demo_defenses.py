"""Inference-time defenses as methods of ``safealign demo --compare`` (docs/defenses.md).

Each entry evaluates the demo's starting model behind one defense (nothing is trained), on the same held-out
prompts, attacks and judges as the trained methods, so ``--compare e-dpo,self-reminder,smoothllm`` puts a
retrained model and cheap defenses in one table. The report's defense section prices each against the bare
model ("before") measured in the same run. MPO is not listed: it needs a second policy of the same base (a
trained adapter path), which ``safealign defenses`` takes in its config.
"""

from __future__ import annotations

from typing import Any

from safealign.eval.backends.base import GenerationParams
from safealign.eval.defenses.base import build_defense, wrap_target
from safealign.pipelines.demo_methods import register_method

# demo method name -> (defense, params); the same settings as configs/eval/defenses.yaml
DEMO_DEFENSES: dict[str, tuple[str, dict[str, Any]]] = {
    "self-reminder": ("self_reminder", {}),
    "in-context": ("in_context", {"k": 2}),
    "urial": ("urial", {}),
    "perplexity-filter": ("perplexity_filter", {"window": 10, "fpr": 0.05}),
    "smoothllm": ("smoothllm", {"copies": 6, "q": 10}),
    "deal": ("deal", {"top_k": 3, "lookahead": 8, "reward_weight": 2.0}),
    "align-pro": ("align_pro", {"candidates": 2}),
}


def defended(name: str, params: dict[str, Any]):
    """A ``wrap_chat`` for the demo: the chat model behind a freshly built defense, prepared (calibrated, its
    scorer loaded) with the evaluation's ``generation`` params, as run_eval prepares a configured one."""

    def wrap(chat: Any, generation: GenerationParams) -> Any:
        return wrap_target(chat, [build_defense(name, params)], generation)

    return wrap


for _method, (_defense, _params) in DEMO_DEFENSES.items():
    register_method(_method, f"inference-time defense {_defense} {_params or ''} on the starting model (no training)",
                    e_variant=False, trains=False, wrap_chat=defended(_defense, _params))
