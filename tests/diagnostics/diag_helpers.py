"""Brute-force scoring the diagnostics are checked against: a naive full log-softmax, one row at a time."""

from __future__ import annotations

import torch


def naive_logps(model, prompt_ids, response_ids) -> torch.Tensor:
    """Summed log-probs of ``response_ids`` after ``prompt_ids``: full logits, plain log_softmax."""
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float()  # (T, V)
    logp = torch.log_softmax(logits[:-1], dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)  # (T-1,)
    return logp[len(prompt_ids) - 1 :].sum()
