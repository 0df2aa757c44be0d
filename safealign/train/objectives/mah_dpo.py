"""MAH-DPO objective: one LM head per attribute on a shared backbone, DPO per attribute (Shen, Xia, Chang,
Ammanabrolu 2025, arXiv 2510.01167; docs/seed-methods.md).

Data: preference pairs with an ``attribute`` column; ``attributes`` lists the attribute names, attribute
``attributes[k]`` trains head ``k`` (head 0 = the model's own head). The extra heads are added before training,
the reference log-probs are cached from the starting model (every head starts as head 0, so they are the
ordinary ones; safealign/train/multihead.py), and the heads are saved with every checkpoint and the final model.
Every head trains, as in the official code: with LoRA head 0 trains as a copy beside the frozen original (peft
``modules_to_save``, saved in the adapter), which stays what the adapter-disabled model scores with.
Refused: several processes (DDP; :func:`safealign.train.multihead.require_one_process`), a model whose logits are
not ``lm_head(decoder(x))`` (:func:`safealign.train.multihead.require_routable`), ``reference.model``, and
continuing heads saved for other attributes than ``attributes`` (:meth:`MahDpoObjective.check_continued_heads`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from safealign.data import PreferenceCollator
from safealign.errors import UserError
from safealign.models.heads import (
    HEADS_FILE,
    add_heads,
    extra_heads,
    head_attributes,
    heads_source,
    lm_heads,
    load_heads,
    save_heads,
)
from safealign.models.modes import eval_mode
from safealign.train.multihead import mah_dpo_losses, require_one_process, require_routable, routed_pair_logps
from safealign.train.objectives.base import ObjectiveContext, ObjectiveOutput, register_objective, require
from safealign.train.objectives.seed_data import ObjectiveData, SeedObjective, encode_kept_pairs, parse_pairs

logger = logging.getLogger(__name__)


class HeadCollator:
    """Wraps a collator: adds ``head`` ``(B,)``, each row's head from a table indexed by ``index``."""

    def __init__(self, collate, heads: Tensor) -> None:
        self.collate, self.heads = collate, heads

    def __call__(self, items: list[Any]) -> dict[str, Tensor]:
        batch = self.collate(items)
        batch["head"] = self.heads[batch["index"]]
        return batch


@torch.no_grad()
def routed_reference(model: nn.Module, encoded: list[Any], collate: HeadCollator, *, batch_size: int,
                     chunk_size: int) -> Tensor:
    """``(N, 2)`` log-probs of every pair's chosen and rejected under the model as it is now (adapter on), each
    through the pair's own head: the reference of a run that continues trained heads, taken before training."""
    device = next(model.parameters()).device
    table = torch.zeros(len(encoded), 2)
    with eval_mode(model):
        for start in range(0, len(encoded), max(1, batch_size)):
            batch = {k: v.to(device) if isinstance(v, Tensor) else v
                     for k, v in collate(encoded[start : start + batch_size]).items()}
            chosen, rejected = routed_pair_logps(model, batch, chunk_size=chunk_size)
            table[batch["index"].cpu()] = torch.stack([chosen, rejected], dim=1).float().cpu()
    return table


class HeadsSaveCallback(TrainerCallback):
    """The extra heads go wherever the model is saved (checkpoints, the final folder) and come back on resume."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        save = model.save_pretrained

        @functools.wraps(save)
        def save_with_heads(save_directory, *a, **kw):
            save(save_directory, *a, **kw)
            save_heads(model, save_directory)

        model.save_pretrained = save_with_heads
        if state.global_step > 0:  # resuming: the Trainer restored the adapter or weights, not the heads
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if not load_heads(model, folder):
                raise UserError(f"resuming MAH-DPO at step {state.global_step}: {folder} holds no saved heads")


@register_objective("mah_dpo")
class MahDpoObjective(SeedObjective):
    """MAH-DPO: DPO per attribute, each attribute's pairs scored by its own LM head; mean over attributes."""

    paper = "Shen et al. 2025, Simultaneous Multi-objective Alignment (MAH-DPO), arXiv:2510.01167"
    data_layout = "preference pairs with an 'attribute' column"
    reference_role = ("its reference is the starting model itself (every head starts as a copy of head 0), cached "
                      "before training; to start from another model, set model")
    trains_output_head = True  # a fresh LoRA adapter trains head 0 too (as a copy), like the extra heads

    def __init__(self, *, attributes: Optional[list[str]] = None, beta: float = 0.1, noise_std: float = 0.0) -> None:
        self.attributes, self.beta, self.noise_std = list(attributes or []), beta, noise_std

    def load_rows(self, config):
        require_one_process()  # before any model loads: torchrun / accelerate launch set WORLD_SIZE
        require(len(self.attributes) >= 2, "mah_dpo", "params.attributes must list at least 2 attribute names "
                                                      "(attribute k trains head k; head 0 is the model's own)")
        require(len(set(self.attributes)) == len(self.attributes), "mah_dpo", "params.attributes has a repeat")
        require(self.noise_std >= 0, "mah_dpo", f"noise_std must be >= 0, got {self.noise_std}")
        parsed, pairs = parse_pairs(config, "mah_dpo")
        unknown = [(p.row, p.meta.get("attribute")) for p in pairs if p.meta.get("attribute") not in self.attributes]
        if unknown:
            rows = ", ".join(f"row {r} ({a!r})" for r, a in unknown[:5])
            raise UserError(f"objective 'mah_dpo': {len(unknown)} rows of {config.data.path} have no 'attribute' in "
                            f"params.attributes={self.attributes}: {rows}; add an attribute column (or map one "
                            "with data.columns.attribute)")
        return parsed, pairs

    def setup(self, config, model, tokenizer, rows: list[Any], device) -> ObjectiveData:
        from safealign.models.embedded import cache_root
        from safealign.train.reference import (
            CachedReferenceCollator,
            load_or_compute_reference,
            starts_from_trained_adapter,
        )

        encoded, report, kept = encode_kept_pairs(config, tokenizer, rows)
        # each kept item's own row: item.index counts kept rows only, so rows[item.index] would be another row
        heads = torch.tensor([self.attributes.index(pair.meta["attribute"]) for pair in kept])
        require_one_process()
        probe = PreferenceCollator(tokenizer.pad_token_id)(encoded[:1])
        require_routable(model, probe["input_ids"].to(device), probe["attention_mask"].to(device))
        continued = extra_heads(model) is not None  # heads trained by an earlier run, loaded with its adapter
        if continued:
            self.check_continued_heads(model)
        else:
            add_heads(model, len(self.attributes), noise_std=self.noise_std, seed=42, names=self.attributes)
        frozen = [k for k, head in enumerate(lm_heads(model)) if not any(p.requires_grad for p in head.parameters())]
        if frozen:  # e.g. continuing an adapter saved without its head 0
            logger.warning("MAH-DPO: heads %s are frozen, so their attributes (%s) train only through the shared "
                           "backbone; the official code trains every head", frozen,
                           ", ".join(self.attributes[k] for k in frozen))
        routed = HeadCollator(PreferenceCollator(tokenizer.pad_token_id), heads)
        if continued:  # the starting model's heads differ: each pair's reference is the starting model through its head
            table = routed_reference(model, encoded, routed, batch_size=config.reference.batch_size,
                                     chunk_size=config.logps_chunk_size)
            describe = "the starting model through each pair's own head (continued heads; computed, not cached)"
            return ObjectiveData(encoded, CachedReferenceCollator(routed, table), report,
                                 callbacks=[HeadsSaveCallback()], describe=describe)
        # fresh heads are copies of head 0: the starting model's log-probs are every head's reference (a trained
        # adapter being continued is part of the starting model: docs/algorithms.md, "Which πref")
        cache = load_or_compute_reference(model, encoded, config.reference.cache_dir or str(cache_root() / "reference"),
                                          batch_size=config.reference.batch_size, chunk_size=config.logps_chunk_size,
                                          describe={"model": config.model, "kind": "pair"},
                                          with_adapter=starts_from_trained_adapter(model))
        collate = CachedReferenceCollator(routed, cache.table)
        return ObjectiveData(encoded, collate, report, callbacks=[HeadsSaveCallback()], describe=cache.describe())

    def check_continued_heads(self, model: nn.Module) -> None:
        """UserError unless the heads being continued were trained on ``attributes`` in this order: another order
        would train each attribute on another's head, another count route pairs to heads the model lacks. Heads
        saved before their names were pass when the count matches, with a warning, and are named ``attributes``."""
        saved, count = head_attributes(model), len(lm_heads(model))
        source = heads_source(model) or f"the model's {HEADS_FILE}"
        if saved is None and count == len(self.attributes):
            logger.warning("MAH-DPO: %s holds %d heads without their attribute names (saved by an older version): "
                           "the order cannot be checked, so head k is taken to be params.attributes[k] (%s)",
                           source, count, ", ".join(f"{k}: {a}" for k, a in enumerate(self.attributes)))
            extra_heads(model).attribute_names = list(self.attributes)  # as taken: this run's saves name them
        elif saved is None:
            raise UserError(f"objective 'mah_dpo' continues the {count} heads in {source} (saved without their "
                            f"attribute names), but params.attributes lists {len(self.attributes)} attributes: "
                            f"{self.attributes}; attribute k trains head k (or start from a model without heads)")
        elif saved != self.attributes:
            raise UserError(f"objective 'mah_dpo' continues the heads in {source}, trained on attributes {saved}, "
                            f"but params.attributes is {self.attributes}: attribute k trains head k, so the two lists "
                            "must match in order (or start from a model without heads)")

    def __call__(self, model: nn.Module, batch, ctx: ObjectiveContext) -> ObjectiveOutput:
        chosen, rejected = routed_pair_logps(model, batch, chunk_size=ctx.chunk_size)
        losses, metrics = mah_dpo_losses(chosen, rejected, batch["ref_chosen_logps"], batch["ref_rejected_logps"],
                                         batch["head"], beta=self.beta, heads=len(self.attributes))
        return ObjectiveOutput(losses.mean(), metrics)
