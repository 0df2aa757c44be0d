"""A run directory belongs to one configuration: a fingerprint of everything that determines its results.

``fingerprint.json`` in a run directory holds the settings (flattened to dotted keys) that decide what
the run produces -- model, data content, generation, attack/judge or loss/optimiser settings -- and
leaves out what only says where or how fast (output_dir, logging, batch sizes of cached passes...).
The excluded keys are listed below, one tuple per kind of run, each with why.

:func:`claim_run_dir` runs before anything is written: continuing a run requires the same fingerprint;
a different one is a :class:`~safealign.errors.UserError` naming the differing keys, unless the caller
asked to overwrite, in which case the old run's outputs are removed first so nothing mixes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign.errors import UserError
from safealign.io.jsonfile import finite_json, write_json
from safealign.io.run_lock import lock_run_dir, unlock_run_dir

logger = logging.getLogger(__name__)

FINGERPRINT_NAME = "fingerprint.json"
_VERSION = 1

# Not part of an eval's fingerprint: where it writes, how it resumes, how a backend is reached or batched,
# and which behaviors are selected (records are keyed by behavior, so widening a selection extends a run;
# the behaviors file's *content* is in the fingerprint instead of its path).
EVAL_EXCLUDED = (
    "output_dir", "retry_errors", "generation.batch_size",
    "model.device", "model.trust_remote_code", "model.base_url_env", "model.api_key_env", "model.timeout_s",
    "model.max_retries", "model.concurrency",
    "behaviors.path", "behaviors.targets", "behaviors.categories", "behaviors.ids", "behaviors.rows",
    "behaviors.sample", "behaviors.seed", "behaviors.limit", "behaviors.copyright",
)  # fmt: skip
# Not part of a training run's fingerprint: where it writes, logging/checkpoint cadence, measurement-only
# diagnostics, and settings that change speed or memory but not the numbers (cache location and batching,
# live vs cached reference, log-prob implementation and chunking, packing, gradient checkpointing); data.path is
# replaced by its content.
TRAIN_EXCLUDED = (
    "output_dir", "trust_remote_code", "logging_steps", "save_steps", "save_total_limit", "report_to",
    "diagnostics", "reference.cache_dir", "reference.batch_size", "reference.batch_tokens", "reference.mode",
    "logps", "logps_chunk_size", "packing", "gradient_checkpointing", "data.path",
)  # fmt: skip
# Recorded in a fingerprint, so every digest stays as runs recorded it (a sweep finds its committed cells by theirs),
# but not compared (a key or any key under it), since 2026-12-08: an eval's model.retry_budget_s, how a backend is
# reached like EVAL_EXCLUDED's timeouts (raising it after rate-limit errors to retry the failed records was refused);
# and in a demo or sweep cell, what its evaluations and trainings exclude, under eval. and train. (a demo or a cloned
# sweep continued with larger batches, another device or another logging cadence was refused).
_STAGES_NOT_COMPARED = (*(f"eval.{k}" for k in (*EVAL_EXCLUDED, "model.retry_budget_s")),
                        *(f"train.{k}" for k in TRAIN_EXCLUDED))
NOT_COMPARED = {"eval": ("model.retry_budget_s",), "demo": _STAGES_NOT_COMPARED, "sweep-cell": _STAGES_NOT_COMPARED}
# Fingerprints of weights: None where they can't be seen (an endpoint, a built-in model an earlier version found
# not fetched yet -- it is fetched first now --, a run directory from before fingerprints), so compared only when
# both runs know them; the spec is compared anyway.
# The same for what else decides a model's outputs (an adapter's base and adapter config, a folder's config.json;
# safealign.models.identity.setup_fingerprint), recorded since 2026-12-07: runs made before lack it. An MT-Bench
# judge's likewise (safealign.eval.helpfulness.mtbench), and a judged copy's judge's (safealign.pipelines.judge_records;
# recorded since 2026-12-07 for a judge that runs a model: a copy judged before resumes).
# The benign prompt file's content likewise, recorded since 2026-12-07 too (a run made before lacks it and resumes:
# its over-refusal records are still checked prompt by prompt, safealign.eval.helpfulness.overrefusal).
# An online run's prompts file content and its reward/cost model folders' weights likewise (safealign.online.run),
# recorded since 2026-12-07 along with its policy's and reference's weights: an online run made before resumes. The
# weights of the models its judge sources run likewise (rewards.judge_weights, safe_rlhf.cost.judge_weights), recorded
# since 2026-12-07 only where a judge source runs a model: a run made before resumes. Its reward/cost model folders'
# tokenizer files likewise (rewards.tokenizer, safe_rlhf.cost.tokenizer: the chat template decides every score),
# recorded since 2026-12-07 apart from their weights, whose recorded digests stay: an online run made before resumes.
# A model's tokenizer files with its chat template and generation config, and an adapter's base's config.json
# (model.tokenizer, model.base_setup and the reference's and judge's; safealign.models.identity.setup_keys) likewise,
# recorded since 2026-12-08 apart from model.setup, whose recorded values stay: a run made before resumes. Added only
# where known (not for a built-in or tiny model), so such a run keeps its digest.
WHEN_KNOWN = ("model.weights", "reference.weights", "model.setup", "reference.setup", "judge.weights", "judge.setup",
              "benign.path_data", "prompts.path_data", "rewards.weights", "safe_rlhf.cost.weights",
              "rewards.judge_weights", "safe_rlhf.cost.judge_weights", "rewards.tokenizer", "safe_rlhf.cost.tokenizer",
              "model.tokenizer", "model.base_setup", "reference.tokenizer", "reference.base_setup", "judge.tokenizer",
              "judge.base_setup")
# An eval's defense layers as they run (each layer's config with its defaults, the files and weights it names; around
# a handed-in chat model too), recorded since 2026-12-07. Only an eval with defenses records it, so one without keeps
# its digest; its absence therefore means "no defense" and is compared like any value (a bare model resuming a run
# answered through a defense, or the reverse, is refused), except in a run that configured defenses (its `defenses`
# list) yet lacks the key: recorded before it existed, that run resumes (its configured defenses are compared anyway).
# A run made before the key with a defense around a handed-in chat model (the demo's) left no trace of it and is
# refused, as a bare run would be.
DEFENSE_LAYERS = "defenses.layers"
# Settings added after runs were recorded whose unset value (None) is what those runs did: left out of a fingerprint
# while unset, at any depth (an eval's model.revision, a demo's eval.model.revision; a training, online, reward-model
# run's model_revision, a demo's or sweep cell's train.model_revision; a training, online, reward-model run's
# attn_implementation, a demo's or sweep cell's train.attn_implementation), so every recorded digest stays as it was
# (a sweep finds its committed cells by theirs); once set they are fingerprinted like any setting.
OMITTED_WHEN_UNSET = ("model.revision", "model_revision", "attn_implementation")
# Not part of the demo's fingerprint: only where it writes.
DEMO_EXCLUDED = ("output_dir",)
# Demo keys whose list may grow on resume: each extra benign set is answered under its own record ids and shown as
# its own figure, so adding one (the default added builtin:untuned_benign) leaves every recorded result as it was.
DEMO_EXTENDABLE = ("extra_benign",)


@dataclass(frozen=True)
class Fingerprint:
    """``kind`` (eval, train, demo) and the result-determining settings as dotted key -> JSON value."""

    kind: str
    values: Mapping[str, Any] = field(default_factory=dict)
    # the same settings' values in a default config: a key a recorded run lacks (added to the config since) matches
    # when it is at its default here -- new settings default to the earlier behaviour (docs/design.md). Not hashed.
    defaults: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # list-valued keys a run may extend: a recorded list whose every item is still in the new one matches. Not hashed.
    extendable: Collection[str] = field(default=(), compare=False, repr=False)

    @property
    def digest(self) -> str:
        """Over the values as ``fingerprint.json`` holds them (an inf or NaN is written as null), so a fingerprint
        read back digests as the one that wrote it."""
        return json_digest({"kind": self.kind, "values": finite_json(dict(self.values))})

    @property
    def legacy_digest(self) -> str:
        """The digest as taken before 2026-12-07, over the values as given: an inf or NaN digested as JSON's
        non-standard ``Infinity``/``NaN``. The same as :attr:`digest` unless a value is non-finite; records written
        under it (a sweep's ``cell.json``) are still matched by it."""
        return json_digest({"kind": self.kind, "values": dict(self.values)})

    def to_json(self) -> dict[str, Any]:
        return {"version": _VERSION, "kind": self.kind, "digest": self.digest, "values": dict(self.values)}


def make_fingerprint(kind: str, settings: Mapping[str, Any], *, exclude: Collection[str] = (),
                     extra: Mapping[str, Any] | None = None,
                     defaults: Mapping[str, Any] | None = None) -> Fingerprint:  # fmt: skip
    """Flatten ``settings`` (a nested config dict) to dotted keys, drop ``exclude`` keys and everything
    under them, add ``extra`` (e.g. a data file's content digest). ``defaults``: the same config class's
    default settings (``to_dict(Config())``), flattened alike, so a run recorded before a setting existed
    still matches while that setting is at its default (:func:`differing_keys`)."""
    def kept(settings: Mapping[str, Any]) -> dict[str, Any]:
        flat = _flatten(settings)
        return {k: v for k, v in flat.items() if under(k, exclude) is None and not (v is None and _unset_omitted(k))}

    return Fingerprint(kind, {**kept(settings), **(extra or {})}, kept(defaults) if defaults is not None else {})


def _unset_omitted(key: str) -> bool:
    return any(key == name or key.endswith("." + name) for name in OMITTED_WHEN_UNSET)


def under(key: str, paths: Iterable[str]) -> str | None:
    """The first of ``paths`` (dotted config keys) that ``key`` is or lies inside (``train.lora.r`` is under
    ``train.lora``, ``train.lora_x`` is not); None when it is under none."""
    return next((path for path in paths if key == path or key.startswith(path + ".")), None)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key in sorted(value, key=str):
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def file_digest(path: str | os.PathLike | None) -> str | None:
    """sha256 of a local file's bytes (the data a run read, wherever it lives); None if not a file."""
    if not path or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def eval_fingerprint(settings: Mapping[str, Any], *, attacked: str | None = None,
                     behaviors: Sequence[Any] | None = None, weights: str | None = None, setup: str | None = None,
                     defaults: Mapping[str, Any] | None = None,
                     defenses: Sequence[Mapping[str, Any]] = (),
                     more_setup: Mapping[str, Any] | None = None) -> Fingerprint:  # fmt: skip
    """An eval run: its config (``to_dict(EvalConfig)``) less :data:`EVAL_EXCLUDED`, the behaviors data
    (files' content, or ``behaviors`` passed in by a caller), the benign prompt file's content, the label of a
    passed-in model, the attacked ``weights``' fingerprint, ``setup`` and ``more_setup`` (its keys, as
    safealign.models.identity.setup_keys gives them with their ``model.`` prefix; None where they can't be seen),
    and the ``defenses`` layers' fingerprints, outermost first (safealign.eval.defenses.base.Defense.fingerprint)."""
    chosen = settings.get("behaviors", {})
    extra = {f"behaviors.{key}_data": _data_identity(chosen.get(key)) for key in ("path", "targets") if chosen.get(key)}
    # the over-refusal prompts' content too (their records are keyed by prompt id); added only when a file is named,
    # so a run without one keeps its digest
    if settings.get("benign", {}).get("path"):
        extra["benign.path_data"] = _data_identity(settings["benign"]["path"])
    if behaviors is not None:
        extra["behaviors.passed_in"] = json_digest([_behavior_json(b) for b in behaviors])
    if attacked is not None:
        extra["model.attacked"] = attacked
    extra["model.weights"], extra["model.setup"] = weights, setup
    extra.update(more_setup or {})
    if defenses:  # only then, so a run without defenses keeps its digest
        extra["defenses.layers"] = list(defenses)
    return make_fingerprint("eval", settings, exclude=EVAL_EXCLUDED, extra=extra, defaults=defaults)


def train_fingerprint(settings: Mapping[str, Any], *, weights: str | None = None,
                      reference_weights: str | None = None, setup: str | None = None,
                      reference_setup: str | None = None,
                      defaults: Mapping[str, Any] | None = None,
                      more_setup: Mapping[str, Any] | None = None) -> Fingerprint:  # fmt: skip
    """A training run: its config (``to_dict(TrainConfig)``) less :data:`TRAIN_EXCLUDED`, plus the data's
    content and the fingerprints of the starting policy's and a separate reference's weights and setups
    (``more_setup``: the further keys of both, prefixed, safealign.models.identity.setup_keys)."""
    path = settings.get("data", {}).get("path")
    extra = {"data.content": _data_identity(path), "model.weights": weights, "reference.weights": reference_weights,
             "model.setup": setup, "reference.setup": reference_setup, **(more_setup or {})}
    return make_fingerprint("train", settings, exclude=TRAIN_EXCLUDED, extra=extra, defaults=defaults)


def demo_fingerprint(settings: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> Fingerprint:
    """A demo run: its config less :data:`DEMO_EXCLUDED`; :data:`DEMO_EXTENDABLE` lists may grow on resume."""
    return dataclasses.replace(make_fingerprint("demo", settings, exclude=DEMO_EXCLUDED, defaults=defaults),
                               extendable=DEMO_EXTENDABLE)


def legacy_fingerprint(path: Path, load: Callable[[Path], Mapping[str, Any]],
                       build: Callable[[Mapping[str, Any]], Fingerprint]) -> Fingerprint | None:  # fmt: skip
    """The fingerprint of a run made before fingerprints, from the config it saved at ``path`` (``load``
    should fill settings added since with their defaults); None when there is none or it can't be read."""
    if not path.is_file():
        return None
    try:
        return build(load(path))
    except (ValueError, OSError) as exc:  # UserError is a ValueError; yaml/json errors are converted by load
        logger.warning("%s: cannot read the saved config to check this run against (%s)", path, exc)
        return None


def _data_identity(path: Any) -> str:
    """A local file by its content (it may move); anything else (a hub dataset, a built-in name) by name."""
    return file_digest(path) or str(path)


def _behavior_json(behavior: Any) -> Any:
    if not dataclasses.is_dataclass(behavior):
        return behavior
    # tags steer judges only (a hashing judge reads "hash_check"), and the judges are fingerprinted themselves;
    # left out, behaviors hash as before they had tags, so runs made then still resume
    return {k: v for k, v in dataclasses.asdict(behavior).items() if k != "tags"}


def json_digest(value: Any) -> str:
    """16 hex digits of the SHA-256 of ``value`` as JSON (sorted keys; a value JSON lacks, by its ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differing_keys(old: Fingerprint, new: Fingerprint, *, only_recorded: bool = False) -> list[str]:
    """Keys whose values differ; ``only_recorded`` ignores keys the old fingerprint does not hold, and a
    key it does not hold that ``new`` has at its default (``new.defaults``) is a setting added since, which
    does not change what the old run computed. Weights fingerprints (:data:`WHEN_KNOWN`) are compared only
    when both runs could see the weights, defense layers (:data:`DEFENSE_LAYERS`) unless a run recorded before them
    configured defenses; a key of ``new.extendable`` matches when ``new`` only adds items."""
    keys = set(old.values) if only_recorded else set(old.values) | set(new.values)
    if old.kind != new.kind:
        return ["kind"]
    keys = {k for k in keys if under(k, NOT_COMPARED.get(new.kind, ())) is None}
    unknown = {k for k in WHEN_KNOWN if old.values.get(k) is None or new.values.get(k) is None}
    if not (_layers_known(old) and _layers_known(new)):
        unknown.add(DEFENSE_LAYERS)
    added = {k for k in set(new.values) - set(old.values) if k in new.defaults and new.values[k] == new.defaults[k]}
    grown = {k for k in new.extendable if _only_adds(old.values.get(k), new.values.get(k))}
    # compared as recorded: fingerprint.json holds a non-finite number (max_grad_norm=inf) as null (jsonfile.py)
    return sorted(k for k in keys - unknown - added - grown
                  if finite_json(_compared(old, k)) != finite_json(_compared(new, k)))


def _layers_known(fingerprint: Fingerprint) -> bool:
    """Whether ``fingerprint`` says which defense layers its run answered through (:data:`DEFENSE_LAYERS`): it
    records them, or configured none (absent: no defense); not a run with configured defenses recorded before."""
    return DEFENSE_LAYERS in fingerprint.values or not fingerprint.values.get("defenses")


def _compared(fingerprint: Fingerprint, key: str) -> Any:
    """``key``'s value as compared: no defense layers, recorded as absent or as an empty list, alike."""
    value = fingerprint.values.get(key)
    return None if key == DEFENSE_LAYERS and value == [] else value


def _only_adds(old: Any, new: Any) -> bool:
    return isinstance(old, list) and isinstance(new, list) and all(item in new for item in old)


def same_settings(old: Fingerprint, new: Fingerprint) -> bool:
    """Whether a run recorded under ``old`` holds what ``new`` would compute (:func:`differing_keys`)."""
    return old.digest == new.digest or not differing_keys(old, new)


def read_fingerprint(run: Path) -> Fingerprint | None:
    return read_fingerprint_file(run / FINGERPRINT_NAME)


def _read_fingerprint(run: Path, overwrite_flag: str) -> Fingerprint | None:
    """:func:`read_fingerprint`, its unreadable-file error offering the calling command's ``overwrite_flag``."""
    return read_fingerprint_file(run / FINGERPRINT_NAME, f"pass {overwrite_flag} to start this run over, or use "
                                 "another output directory")


def read_fingerprint_file(path: Path, remedy: str = "pass --overwrite to start this run over, or use another "
                          "output directory") -> Fingerprint | None:  # fmt: skip
    """The fingerprint recorded at ``path`` (None when there is none); ``remedy`` ends the unreadable-file error."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Fingerprint(str(data["kind"]), dict(data["values"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable run fingerprint ({exc}); {remedy}") from None


def claim_run_dir(run: str | os.PathLike, fingerprint: Fingerprint, *, outputs: Sequence[str], overwrite: bool = False,
                  legacy: Callable[[Path], Fingerprint | None] | None = None,
                  check: Callable[[bool], None] | None = None,
                  overwrite_flag: str = "--overwrite", exclusive: bool = True) -> bool:  # fmt: skip
    """Check that ``run`` may hold this run, then record its fingerprint; True when it continues a run
    (one that recorded results; settings alone, from a run that failed early, are simply replaced).

    ``exclusive``: first take the directory's ``run.lock`` (safealign.io.run_lock), refusing while another live
    process writes it; False only for directories shared by design (a sweep's root, claimed by every worker).

    ``outputs``: names (glob patterns) of what the run writes, removed on ``overwrite``. ``legacy``:
    builds the fingerprint of a directory made before fingerprints existed (from its saved config),
    or None when it has no saved config. ``check(continues)``: the caller's own conditions (e.g. a
    checkpoint to resume from). Every check raises UserError before anything is written or removed;
    its message offers ``overwrite_flag``, the caller's name for ``overwrite``.
    """
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise UserError(f"output directory {run} is a file; name a directory")
    created = [d for d in (run, *run.parents) if not d.exists()]  # the folders taking the lock will create
    locked = exclusive and lock_run_dir(run)
    try:
        continues = _claim(run, fingerprint, outputs, overwrite, legacy, check, overwrite_flag)
    except BaseException:
        if locked:  # refused: leave the file system as it was found
            unlock_run_dir(run)
            for folder in created:  # innermost first; a folder something else wrote into meanwhile stays
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    return continues


def _claim(run: Path, fingerprint: Fingerprint, outputs: Sequence[str], overwrite: bool,
           legacy: Callable[[Path], Fingerprint | None] | None, check: Callable[[bool], None] | None,
           overwrite_flag: str) -> bool:  # fmt: skip
    existing = _existing_outputs(run, outputs)
    # a run that failed before recording anything (a model that would not load) has nothing to mix
    results = [name for name in existing if name not in (FINGERPRINT_NAME, "config.yaml")]
    continues = False
    if not overwrite:
        previous, only_recorded = _read_fingerprint(run, overwrite_flag), False
        if previous is None and legacy is not None and run.is_dir():
            previous, only_recorded = legacy(run), True
        if previous is None and results:
            raise UserError(f"{run} holds outputs of an earlier run ({', '.join(results[:5])}) with no fingerprint "
                            "or config.yaml to check them against; use another output directory or pass "
                            f"{overwrite_flag}")
        if previous is not None and results:
            _check_same(run, previous, fingerprint, only_recorded, overwrite_flag)
            continues = True
    if check is not None:
        check(continues)
    if overwrite:
        _remove(run, existing)
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / FINGERPRINT_NAME, fingerprint.to_json())
    logger.info("%s: %s %s run, fingerprint %s", run, "continuing the" if continues else "a new", fingerprint.kind,
                fingerprint.digest)
    return continues


def check_recorded(run: str | os.PathLike, fingerprint: Fingerprint, *, overwrite_flag: str = "--overwrite") -> None:
    """Read-only :func:`claim_run_dir`: raise UserError when ``run`` records a fingerprint other than
    ``fingerprint`` (a reader such as a table must not present one config's results as another's); writes nothing."""
    previous = _read_fingerprint(Path(run), overwrite_flag)
    if previous is not None:
        _check_same(Path(run), previous, fingerprint, False, overwrite_flag)


def _check_same(run: Path, previous: Fingerprint, current: Fingerprint, only_recorded: bool,
                overwrite_flag: str) -> None:  # fmt: skip
    if only_recorded:
        unchecked = sorted(set(current.values) - set(previous.values))
        not_checked = f"; not recorded there, not checked: {', '.join(unchecked)}" if unchecked else ""
        logger.info("%s has no %s (made before run fingerprints); checked this run against its config.yaml%s",
                    run, FINGERPRINT_NAME, not_checked)
    changed = differing_keys(previous, current, only_recorded=only_recorded)
    if changed:
        raise UserError(f"{run} holds an earlier {previous.kind} run with different settings "
                        f"({describe_changes(previous, current, changed)}); its results would mix with this run's. "
                        f"Use another output directory, or pass {overwrite_flag} to delete that run's outputs and "
                        "start over")


def describe_changes(previous: Fingerprint, current: Fingerprint, changed: Sequence[str]) -> str:
    """``key: old -> new; ...`` for the first eight ``changed`` keys (:func:`differing_keys`)."""
    shown = "; ".join(f"{k}: {_short(previous.values.get(k))} -> {_short(current.values.get(k))}" for k in changed[:8])
    return shown + (f" (and {len(changed) - 8} more)" if len(changed) > 8 else "")


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if value is not None else "(unset)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _existing_outputs(run: Path, outputs: Sequence[str]) -> list[str]:
    if not run.is_dir():
        return []
    names = sorted(p.name for p in run.iterdir())
    return [n for n in names if any(fnmatch.fnmatch(n, pattern) for pattern in (*outputs, FINGERPRINT_NAME))]


def _remove(run: Path, names: Sequence[str]) -> None:
    """Delete only what the run itself writes, so an output_dir pointed at a shared folder loses nothing else."""
    for name in names:
        target = run / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    if names:
        logger.info("--overwrite: removed the earlier run's outputs from %s (%s)", run, ", ".join(names))
