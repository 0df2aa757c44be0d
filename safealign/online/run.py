"""Build an online run from an :class:`OnlineConfig` and execute it (``safealign train`` with ``trainer: online``).

Order: every config check, the prompts and the reward/cost callables' import paths are settled before the
policy loads; reward-model and judge sources load after it (they may share its device).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from safealign.config import save_config, to_dict
from safealign.errors import UserError
from safealign.io import read_jsonl, write_json, write_jsonl
from safealign.online.config import OnlineConfig
from safealign.train.config import same_model_revision
from safealign.train.run import TrainResult

logger = logging.getLogger(__name__)

# What --overwrite removes; fingerprint.json is handled by claim_run_dir.
OUTPUTS = ("checkpoint-*", "final", "metrics.jsonl", "train_summary.json", "config.yaml")
# Not part of the fingerprint: where it writes, how often it saves, how long it runs (a longer max_steps
# continues a run under the constant schedule; a linear one decays over max_steps, which is then fingerprinted),
# how log-probs are chunked, whether sampling pre-fills a prompt once or K times (the same distribution;
# safealign/online/prefix_cache.py).
EXCLUDED = ("output_dir", "trust_remote_code", "save_steps", "max_steps", "logps_chunk_size",
            "generation.reuse_prompt_cache")


OnlineResult = TrainResult  # the same run outcome as offline training: folders, reference kind, steps, wall time


def check_online_config(config: OnlineConfig) -> None:
    """Everything that needs no model: value ranges, the transform, callables' import paths."""
    from safealign.data import build_transform
    from safealign.online.rewards import resolve_callable

    config.validate()
    build_transform(config.reference.transform, **dict(config.reference.transform_params))
    sources = [("rewards", "reward", config.rewards),
               ("safe_rlhf.cost", "cost", config.safe_rlhf.cost if config.safe_rlhf.enabled else [])]
    for key, kind, specs in sources:
        for i, source in enumerate(specs):
            if source.kind == "callable":
                resolve_callable(source.path or "")
            if kind == "cost" and source.kind == "judge" and source.reward_if == "not_harmful" \
                    and source.apply_to != "benign":  # benign: an over-refusal cost, which is what it says
                logger.warning("%s.%d.reward_if: not_harmful on cost source %r charges the answers its judge finds "
                               "safe (refusals) to harmful prompts, so λ pushes the policy to comply with them; "
                               "a cost that charges harmful answers is reward_if: harmful (its default)",
                               key, i, source.label)
            if source.kind == "reward_model":
                from safealign.eval.reward_model import check_kind, is_reward_model_dir

                if not is_reward_model_dir(source.path or ""):
                    raise UserError(f"{kind} source {source.label!r}: {source.path} is not a reward-model folder "
                                    "(train one with a 'trainer: reward' recipe)")
                check_kind(source.path or "", kind, f"{key}.{i} ({source.label!r})")


def run_online(config: OnlineConfig, *, resume: bool = False, overwrite: bool = False, model: Any = None,
               tokenizer: Any = None) -> OnlineResult:  # fmt: skip
    from safealign.online.prompts import load_training_prompts
    from safealign.online.rewards import build_sources
    from safealign.online.trainer import OnlineTrainer, Reference, checkpoints

    start = time.time()
    check_online_config(config)
    prompts = load_training_prompts(config.prompts)
    out = Path(config.output_dir)
    _claim(out, config, resume, overwrite, model)
    save_config(config, out / "config.yaml")
    model, tokenizer = _load_policy(config, model, tokenizer)
    from safealign.models.identity import base_record

    base = base_record(model)  # what the saved adapter was trained on, taken before training
    device = next(model.parameters()).device
    from safealign.train.reference import separate_reference

    reference = Reference(model, *separate_reference(config.reference.model, model, device,
                                                     trust_remote_code=config.trust_remote_code,
                                                     revision=_reference_revision(config),
                                                     policy_tokenizer=tokenizer,
                                                     attn_implementation=config.attn_implementation))
    logger.info("reference: %s", reference.kind)
    sources = build_sources(config.rewards, device)
    costs = build_sources(config.safe_rlhf.cost, device, what="cost") if config.safe_rlhf.enabled else []
    trainer = OnlineTrainer(config, model, tokenizer, reference, sources, costs, prompts, out)
    if resume:
        found = checkpoints(out)
        if not found:
            raise UserError(f"--resume: no checkpoint of this run found in {out}")
        trainer.load_checkpoint(found[-1])
        _truncate_metrics(out / "metrics.jsonl", trainer.step)
    elif (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    trainer.train()
    final = out / "final"
    _save_final(model, tokenizer, final, base)
    write_json(out / "train_summary.json", {
        "trainer": "online", "algorithm": config.algorithm, "reference": reference.kind,
        "transform": config.reference.transform, "steps": trainer.step, "prompts": len(prompts),
        "rewards": [s.label for s in sources], "costs": [s.label for s in costs],
        "wall_seconds": round(time.time() - start, 2),
    })
    return OnlineResult(out, final, out / "metrics.jsonl", reference.kind, trainer.step, round(time.time() - start, 2))


def _load_policy(config: OnlineConfig, model: Any, tokenizer: Any) -> tuple[Any, Any]:
    from safealign.models import LoraSettings, apply_lora, load_model

    lora = None
    if config.lora.enabled:
        lora = LoraSettings(r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout,
                            target_modules=config.lora.target_modules, last_layers=config.lora.last_layers)
    if model is None:
        return load_model(config.model, trust_remote_code=config.trust_remote_code, revision=config.model_revision,
                          lora=lora, for_training=True, attn_implementation=config.attn_implementation)
    if lora is not None and not hasattr(model, "peft_config"):
        model = apply_lora(model, lora)
    if lora is None:
        model.requires_grad_(True)
    model.train()
    return model, tokenizer


def _reference_revision(config: OnlineConfig) -> str | None:
    """``model_revision`` where ``reference.model`` names the policy's hub id (safealign.train.config)."""
    return same_model_revision(config.reference.model, config.model, config.model_revision)


def _save_final(model: Any, tokenizer: Any, final: Path, base: dict[str, Any] | None = None) -> None:
    """The trained policy and its tokenizer; an adapter with ``base``, its base's identity
    (safealign.models.identity.base_record), as offline training saves one (safealign.train.trainer)."""
    from safealign.models.identity import write_base_record

    kwargs = {"save_embedding_layers": False} if hasattr(model, "peft_config") else {}  # see train/trainer.py
    model.save_pretrained(str(final), **kwargs)
    tokenizer.save_pretrained(str(final))
    write_base_record(final, base)


def _claim(out: Path, config: OnlineConfig, resume: bool, overwrite: bool, model: Any = None) -> None:
    from safealign.io.rundir import claim_run_dir
    from safealign.online.trainer import checkpoints

    if resume and overwrite:
        raise UserError("--resume continues the run in output_dir and --overwrite deletes it: pass one of them")

    def check(continues: bool) -> None:
        found = checkpoints(out) if continues and not overwrite else []
        if resume and not found:
            raise UserError(f"--resume: no checkpoint of this run found in {out}")
        if not resume and found:
            raise UserError(f"{out} holds a run with the same settings and checkpoint {found[-1].name}; pass --resume "
                            "to continue it, or --overwrite to delete it and start over")
        if resume:
            check_not_shortened(out, config.max_steps, f"--resume: {out}",
                                "use another output_dir, or pass --overwrite (not --resume) to train it again")

    claim_run_dir(out, online_fingerprint(config, model), outputs=OUTPUTS, overwrite=overwrite, check=check)


def trained_steps(out: Path) -> int:
    """How far the online run in ``out`` has trained: its last checkpoint's step (one is saved at the last step),
    else its summary's (0 for none)."""
    from safealign.io import read_json
    from safealign.online.trainer import checkpoints

    found = checkpoints(out)
    steps = [int(found[-1].name.split("-")[-1])] if found else []
    if (out / "train_summary.json").is_file():
        steps.append(int(read_json(out / "train_summary.json").get("steps") or 0))
    return max(steps, default=0)


def check_not_shortened(out: Path, max_steps: int, where: str, remedy: str) -> None:
    """Refuse to continue the run in ``out`` when it has trained past ``max_steps`` (:func:`trained_steps`): it
    cannot be shortened, and resumed its training loop would not run while the longer run was saved as ``final`` and
    labelled with the shorter run's config. Under the constant schedule ``max_steps`` is no part of the fingerprint
    (a longer one extends a run), so this is the only check that sees it. ``where`` starts the error (the command and
    the folder), ``remedy`` ends it."""
    trained = trained_steps(out)
    if trained > max_steps:
        raise UserError(f"{where} holds a run trained for {trained} steps, more than max_steps={max_steps}: a run "
                        f"cannot be shortened; ask for max_steps={trained} or more, {remedy}")


def online_settings_fingerprint(config: OnlineConfig):
    """An online run's config less :data:`EXCLUDED` alone (safealign/io/rundir.py); ``defaults`` let a run recorded
    before a setting existed match while it is at its default. Its digest is what compare-online's finished stages
    were recorded under, so it stays this (safealign/pipelines/online_compare.py)."""
    from safealign.io.rundir import make_fingerprint

    schedule_length = () if config.lr_scheduler_type == "constant" else ("max_steps",)
    return make_fingerprint("online", to_dict(config), exclude=[k for k in EXCLUDED if k not in schedule_length],
                            defaults=to_dict(OnlineConfig()))


def online_fingerprint(config: OnlineConfig, model: Any = None):
    """What an online run's results depend on, as offline training's ``train_fingerprint``: the settings
    (:func:`online_settings_fingerprint`), the prompts file's content (``prompts.path_data``; a file edited in place
    is another run), the starting policy's (``model``, passed in, else the one ``config.model`` names) and a separate
    reference's weights and setups, the reward-model folders' weights and, apart (``rewards.tokenizer``, so the
    weights' digests recorded before stay), their tokenizer files with the chat template, of the reward and cost
    sources, and the weights of the models their judge sources run (:func:`_judge_weights`). These are
    :data:`~safealign.io.rundir.WHEN_KNOWN` keys: compared only where both runs recorded them, so a run made before
    they were recorded resumes."""
    from safealign.eval.reward_model import reward_model_fingerprint, reward_model_tokenizer_fingerprint
    from safealign.io.rundir import file_digest
    from safealign.models.identity import loaded_identity, model_identity, setup_fingerprint, setup_keys

    policy = loaded_identity(model) if model is not None else model_identity(config.model, config.model_revision)
    reference = (model_identity(config.reference.model, _reference_revision(config)) if config.reference.model
                 else {})
    extra: dict[str, Any] = {"model.weights": policy.get("fingerprint"), "model.setup": setup_fingerprint(policy),
                             "reference.weights": reference.get("fingerprint"),
                             "reference.setup": setup_fingerprint(reference),
                             **setup_keys(policy, "model."), **setup_keys(reference, "reference.")}
    if config.prompts.path:  # the built-in sets are chosen by the prompts.*_train counts, fingerprinted already
        extra["prompts.path_data"] = file_digest(config.prompts.path) or config.prompts.path
    costs = config.safe_rlhf.cost if config.safe_rlhf.enabled else []
    for key, sources in (("rewards", config.rewards), ("safe_rlhf.cost", costs)):
        if any(s.kind == "reward_model" for s in sources):  # only then, so a run without one keeps its digest
            extra[f"{key}.weights"] = [reward_model_fingerprint(s.path) if s.kind == "reward_model" and s.path
                                       else None for s in sources]  # fmt: skip
            extra[f"{key}.tokenizer"] = [reward_model_tokenizer_fingerprint(s.path) if s.kind == "reward_model"
                                         and s.path else None for s in sources]  # fmt: skip
        judged = _judge_weights(sources)
        if judged is not None:
            extra[f"{key}.judge_weights"] = judged
    settings = online_settings_fingerprint(config)
    return dataclasses.replace(settings, values={**settings.values, **extra})


def _judge_weights(sources: list[Any]) -> list[Any] | None:
    """The weights of the models each judge source runs (a classifier, an llm or strongreject judge on hf/vllm;
    safealign.eval.judges.base.Judge.models), [] for another source: a judge names its model by path or hub id
    only, so one retrained in place would go on scoring a resumed run with another reward. Hashed from the config
    before anything loads. None (no key) unless a judge source runs a model, so a run whose judges match strings
    (refusal) keeps the digest it was recorded under."""
    from safealign.eval.judges.base import judge_models, model_identities

    found = [model_identities(judge_models(s.name, dict(s.params))) if s.kind == "judge" else [] for s in sources]
    return found if any(found) else None


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metrics logged after the checkpoint (they will be logged again)."""
    if path.exists():
        write_jsonl(path, [row for row in read_jsonl(path) if row.get("step", 0) <= step])
