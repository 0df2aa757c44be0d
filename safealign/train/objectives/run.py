"""``safealign train`` with ``objective.name`` set: check, load, encode, train (docs/objectives.md).

Everything that needs no model runs first — the objective and its parameters, the recipe keys that do not
apply to an objective, the data's roles — so a bad recipe or a dataset lacking a field fails in seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from safealign.config import to_dict
from safealign.errors import UserError
from safealign.train.config import LossConfig, TrainConfig
from safealign.train.objectives.base import Objective, build_objective
from safealign.train.objectives.data import ObjectiveCollator, encode_role_rows, load_role_rows, zip_roles

logger = logging.getLogger(__name__)


def check_objective_config(config: TrainConfig) -> Objective:
    """The objective the recipe names, after refusing recipe keys that would silently not apply."""
    config.validate()
    objective = build_objective(config.objective.name, dict(config.objective.params))
    name = config.objective.name
    if [to_dict(loss) for loss in config.losses] != [to_dict(LossConfig())]:
        raise UserError(f"objective {name!r} computes its own loss, so the recipe's losses "
                        f"({', '.join(loss.name for loss in config.losses)}) would not train: remove the losses key")
    if config.reference.transform != "identity":
        raise UserError(f"objective {name!r} compares the policy with the frozen model on the same tokens; "
                        f"reference.transform={config.reference.transform!r} (an E-variant's prompt view) has no "
                        "meaning for it: use identity (docs/objectives.md)")
    if config.reference.model and not objective.needs_reference:
        raise UserError(f"objective {name!r} does not use reference.model ({config.reference.model!r}): "
                        f"{getattr(objective, 'reference_role', 'it keeps no reference model')}; remove it "
                        "(docs/objectives.md, docs/seed-methods.md)")
    for key, value in (("normalize_pair_gradients", config.normalize_pair_gradients),
                       ("diagnostics.entanglement_every", config.diagnostics.entanglement_every),
                       ("data.unpair", config.data.unpair), ("data.transforms", config.data.transforms)):
        if value:
            raise UserError(f"{key} applies to preference losses, not to objective {name!r}: remove it")
    return objective


def run_objective_training(config: TrainConfig, *, resume: bool = False, overwrite: bool = False, model=None,
                           tokenizer=None, overwrite_flag: str = "--overwrite"):
    """Train ``config.objective`` on the data's roles; returns a :class:`~safealign.train.run.TrainResult`."""
    from safealign.train.objectives.trainer import FrozenReference, ObjectiveTrainer
    from safealign.train.run import (
        ListDataset,
        _load_policy,
        _starting_identities,
        finish_run,
        open_run,
        reference_revision,
        training_arguments,
    )

    start = time.time()
    objective = check_objective_config(config)
    # an objective with its own data layout (CUT, DCKD, ADPA, MAH-DPO; docs/seed-methods.md) parses it itself
    own_data = callable(getattr(objective, "setup", None))
    parsed, by_role = objective.load_rows(config) if own_data else load_role_rows(config, objective)
    args = training_arguments(config)
    checkpoint = open_run(config, args, resume=resume, overwrite=overwrite, model=model, overwrite_flag=overwrite_flag)
    model, tokenizer = _load_policy(config, args.device, model, tokenizer,
                                    train_output_head=getattr(objective, "trains_output_head", False))
    identities = _starting_identities(config, model)  # before training changes the weights
    if own_data:
        data = objective.setup(config, model, tokenizer, by_role, args.device)
        items, collator, report, callbacks = data.items, data.collator, data.report, data.callbacks
        encoded = {"rows": items}
    else:
        encoded, report = encode_role_rows(config, tokenizer, by_role)
        items, collator, callbacks = zip_roles(encoded), ObjectiveCollator(tokenizer.pad_token_id), []
    from safealign.train.reference import separate_reference

    separate, what = (separate_reference(config.reference.model, model, args.device,
                                         trust_remote_code=config.trust_remote_code,
                                         revision=reference_revision(config), policy_tokenizer=tokenizer,
                                         attn_implementation=config.attn_implementation)
                      if objective.needs_reference else (None, None))
    reference = FrozenReference.for_objective(objective, model, separate, what)
    described = data.describe if own_data and not objective.needs_reference else reference.describe()
    logger.info("objective %s; reference: %s", objective.name, described)
    if config.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    trainer = ObjectiveTrainer(
        model=model, args=args, train_dataset=ListDataset(items), data_collator=collator,
        processing_class=tokenizer, objective=objective, reference=reference, rows=encoded, callbacks=callbacks,
        chunk_size=config.logps_chunk_size, metrics_path=Path(args.output_dir) / "metrics.jsonl",
    )
    summary = {
        "reference": described, "objective": to_dict(config)["objective"], "input": "objective",
        "examples": len(items), "roles": {role: len(rows) for role, rows in encoded.items()}, "rows": parsed.rows,
        "dropped": len(parsed.dropped), "truncation": dataclasses.asdict(report), **identities,
    }
    return finish_run(trainer, checkpoint, summary, start)


