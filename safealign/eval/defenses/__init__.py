"""Inference-time defenses wrapped around an evaluation's target model (docs/defenses.md).

``defenses: [{name, params}, ...]`` in an eval config wraps the target, outermost first; each defense is
one module registered in safealign/eval/registries.py. The layer itself: :mod:`.base`.
"""
