"""LoRA adapters for the tests: one whose B matrices left their zero init (a trained adapter, so the policy
differs from its base), and such an adapter saved over a saved tiny base. Imported as ``train.lora_helpers``
(``tests/`` is on ``sys.path``, as for ``eval.fakes``)."""

from __future__ import annotations

from pathlib import Path

import torch


def perturb_adapter(model, seed: int = 1, std: float = 0.5):
    """Move the adapter's B matrices off their zero init: a trained adapter."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, std)
    return model


def saved_trained_adapter(tmp_path: Path, name: str = "final", seed: int = 0) -> tuple[Path, Path]:
    """(a saved tiny base folder, a saved trained LoRA adapter over it named ``name``)."""
    from safealign.models import LoraSettings, load_model
    from safealign.models.tiny import tiny_model, tiny_tokenizer

    base = tmp_path / "base"
    tiny_model().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    model, _ = load_model(str(base), lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    perturb_adapter(model, seed=seed)
    model.save_pretrained(tmp_path / name)
    return base, tmp_path / name
