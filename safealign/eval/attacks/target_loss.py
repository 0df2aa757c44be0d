"""The target-string loss of whole prompts on a white-box HF model (AutoDAN's fitness; docs/attacks.md).

For each prompt: the chat-formatted user turn exactly as the target renders it (:func:`prompt_renderer`: with
its system prompt, also behind defenses), followed by the target string's tokens; the loss is the mean
cross-entropy of the target tokens. Unlike GCG's loss
(:mod:`safealign.eval.attacks.gcg`), the prompts differ in length, so rows are right-padded and each row's
target positions are read at its own offset. Computed here rather than through ``train.logps`` because
the attack layer may not import training code, and only a no-grad forward is needed.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from safealign.eval.backends.base import GenerationParams


def prompt_renderer(target: Any, model: Any, tokenizer: Any) -> Any:
    """The HFChatModel that renders a prompt as ``target`` gets it, for the white-box attacks: the target itself,
    or the local model inside its defenses (the pipeline hands attacks the defended target); for any other
    target, one over ``(model, tokenizer)`` with the target's system prompt."""
    from safealign.eval.backends.hf import HFChatModel
    from safealign.eval.defenses.base import bare_model

    inner = bare_model(target)
    if isinstance(inner, HFChatModel):
        return inner
    return HFChatModel(model, tokenizer, system_prompt=getattr(inner, "system_prompt", None))


class TargetLoss:
    def __init__(self, model: Any, tokenizer: Any, target: Any = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.renderer = prompt_renderer(target, model, tokenizer)
        self.evaluations = 0  # prompts scored, for the records

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(self, prompts: Sequence[str], target: str, batch_size: int = 16) -> list[float]:
        target_ids = self._ids(target)
        rows = [self._ids(self.renderer.render(({"role": "user", "content": p},), GenerationParams())) for p in prompts]
        losses: list[float] = []
        for start in range(0, len(rows), batch_size):
            losses += self._batch(rows[start : start + batch_size], target_ids)
        self.evaluations += len(prompts)
        return losses

    @torch.no_grad()
    def _batch(self, prompt_rows: list[list[int]], target_ids: list[int]) -> list[float]:
        device = self.model.get_input_embeddings().weight.device
        full = [row + target_ids for row in prompt_rows]
        width = max(len(r) for r in full)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in full], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in full], device=device)
        logits = self.model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
        n = len(target_ids)
        labels = torch.tensor(target_ids, device=device)
        out = []
        for i, row in enumerate(prompt_rows):
            start = len(row) - 1  # the position whose logits predict the first target token
            out.append(float(F.cross_entropy(logits[i, start : start + n], labels)))
        return out
