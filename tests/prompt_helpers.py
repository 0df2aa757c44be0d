"""Built-in-style requests for tests of pair building (safealign.pipelines.build_safety)."""

from __future__ import annotations

from safealign.data.builtin import BuiltinPrompt


def train_prompt(id: str, prompt: str, category: str, kind: str, harmful: bool) -> BuiltinPrompt:
    """A built-in request of the train split."""
    return BuiltinPrompt(id, prompt, category, "train", kind, harmful)
