"""The live reference switches the LoRA adapter off also when the policy arrives wrapped (DDP/FSDP keep the
peft model as ``.module``), as it does under ``accelerate launch``."""

from __future__ import annotations

import torch
from torch import nn

from safealign.models.lora import LoraSettings, apply_lora
from safealign.models.tiny import tiny_model
from safealign.train.reference import LiveReference


class Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: the wrapped model as ``.module``, forwards passed through."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 0]])
    response = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 1, 1, 0]])
    return {"input_ids": ids, "attention_mask": (ids > 0).long(), "response_mask": response}


def test_live_reference_through_a_wrapper_scores_the_base_weights():
    base = tiny_model(seed=0)
    expected = LiveReference(base).logps(base, batch())  # a separate copy of the base weights, no adapter
    policy = apply_lora(tiny_model(seed=0), LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # a trained adapter: B != 0, so the adapter changes the log-probs
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    with_adapter = LiveReference(policy).logps(policy, batch())  # the policy's own log-probs
    assert not torch.allclose(with_adapter, expected)  # so the check below can tell the two apart
    live = LiveReference()  # reference = the policy with its adapter disabled
    torch.testing.assert_close(live.logps(policy, batch()), expected)
    torch.testing.assert_close(live.logps(Wrapper(policy), batch()), expected)
