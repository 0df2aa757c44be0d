"""``gcg_multi`` and ``gcg_transfer``: one universal GCG suffix (HarmBench's EnsembleGCG; docs/attacks.md).

``gcg_multi`` optimises a single suffix jointly over ``n_train`` behaviors (the first of the run, or
``train_ids``): each step averages the one-hot token gradient of the target loss over the *active*
behaviors, samples ``search_width`` swaps as :mod:`safealign.eval.attacks.gcg` does, and keeps the
candidate with the lowest mean loss. With ``progressive=true`` it starts from one behavior and adds the next
when every active loss is under ``add_threshold`` or after ``add_after`` steps without an addition. The
suffix is saved to ``suffix_file`` (default ``<output_dir>/gcg_multi_suffix.json``) with the fingerprint of
the model it was optimised on (:mod:`safealign.models.identity`), the training target strings and a digest
of each training prompt around the suffix, and is reused only when the model, the training behaviors, their
targets and prompts and the settings all match, and, if ``max_seconds`` stopped it before its ``steps``, only
by a run with the same ``max_seconds``. Otherwise the default file is optimised anew (with a warning saying
what differs), while an explicit ``suffix_file``, which other runs may share, is refused rather than
overwritten. Every behavior of the run then gets ``request + separator + suffix``; attempt ids ``train`` and
``held_out`` split the ASR in ``by_attempt``, and each attempt's ``suffix_digest`` names the optimisation. A
run whose records already hold gcg_multi attempts never optimises another suffix (the behavior selection is
not in the run fingerprint): it refuses unless the saved suffix is theirs and still fits.

``gcg_transfer`` applies a saved suffix (that JSON, or a plain text file) to any target, remote ones included,
with the separator it was optimised with.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import torch

from safealign.checks import at_least, positive
from safealign.errors import UserError
from safealign.eval.attacks.base import Attack, AttackContext, behavior_prompt
from safealign.eval.attacks.gcg import GCGAttack, GCGConfig
from safealign.files import read_text
from safealign.interrupt import raise_if_stop_requested
from safealign.io import write_json
from safealign.io.rundir import json_digest
from safealign.types import Attempt, Behavior

logger = logging.getLogger(__name__)
DEFAULT_FILE = "gcg_multi_suffix.json"


@dataclass(frozen=True)
class GCGMultiConfig(GCGConfig):
    n_train: int = 5  # behaviors the suffix is optimised on (the run's first, unless train_ids)
    train_ids: tuple[str, ...] = ()
    progressive: bool = True
    add_threshold: float = 0.2  # add the next behavior when every active loss is below this
    add_after: int = 100  # ... or after this many steps without an addition
    suffix_file: str = ""  # default: <output_dir>/gcg_multi_suffix.json
    max_seconds: Optional[float] = None  # time budget of the whole optimisation
    # gcg's early stop does not apply (the one search serves every behavior, and nothing is answered during it):
    # the keys are refused rather than silently ignored
    early_stop_every: Optional[int] = None
    early_stop_max_new_tokens: Optional[int] = None
    params_key: ClassVar[str] = "attack_params.gcg_multi"

    def __post_init__(self) -> None:
        for key in ("early_stop_every", "early_stop_max_new_tokens"):
            if getattr(self, key) is not None:
                raise UserError(f"attack_params.gcg_multi.{key}: gcg_multi does not early-stop (its one search "
                                "serves every behavior and answers nothing); drop the key")
        super().__post_init__()
        at_least("attack_params.gcg_multi.n_train", self.n_train, 1)
        at_least("attack_params.gcg_multi.add_after", self.add_after, 1)
        positive("attack_params.gcg_multi.add_threshold", self.add_threshold)
        if self.max_seconds is not None:
            positive("attack_params.gcg_multi.max_seconds", self.max_seconds)


@dataclass
class UniversalSuffix:
    suffix: str
    suffix_ids: list[int]
    train_ids: list[str]
    mean_loss: float
    losses: list[float] = field(default_factory=list)  # mean active loss of the chosen candidate per step
    active: list[int] = field(default_factory=list)  # behaviors active at each step
    steps: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    model_fingerprint: str | None = None  # the weights it was optimised on (safealign.models.identity)
    targets: list[str] = field(default_factory=list)  # the training behaviors' target strings, as train_ids
    # why the optimisation ended: "steps" (all of settings["steps"] done) or "max_seconds" (the time limit,
    # maybe before them); "" in files written before this was recorded
    stopped: str = ""
    max_seconds: Optional[float] = None  # the time limit it ran under
    # per training behavior (as train_ids), the digest of its prompt text around the suffix (system prompt, chat
    # template, request; _prompt_digests); empty in files written before this was recorded
    prompt_digests: list[str] = field(default_factory=list)

    def cut_short(self) -> bool:
        """Stopped on time before its planned steps (a file that does not say why: fewer steps than planned)."""
        return self.steps < self.settings.get("steps", self.steps)


def suffix_digest(u: UniversalSuffix) -> str:
    """What identifies one optimisation (in each attempt's meta, so a resume can tell whether its records were made
    with the suffix it would use): the suffix and what it was optimised for, not its timings."""
    return json_digest({k: getattr(u, k) for k in ("suffix", "suffix_ids", "train_ids", "targets", "prompt_digests",
                                               "settings", "model_fingerprint")})  # fmt: skip


def _settings(cfg: GCGMultiConfig) -> dict[str, Any]:
    """What must match for a saved suffix to be reused (everything but the file and the early-stop knobs)."""
    skip = {"suffix_file", "early_stop_every", "early_stop_max_new_tokens", "batch_size", "max_seconds"}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k not in skip}


class GCGMultiAttack(GCGAttack):
    config_class: ClassVar[type] = GCGMultiConfig
    # the one search runs in prepare() and its suffix is saved (resumes reuse it); each behavior's attempt is
    # then the request and the suffix, cheap to batch across behaviors like template's
    searches: ClassVar[bool] = False

    def __init__(self, config: GCGMultiConfig, context: AttackContext | None = None) -> None:
        super().__init__(config, context)
        self.universal: UniversalSuffix | None = None
        self.train_ids: set[str] = set()

    @classmethod
    def check(cls, config: Any, behaviors: Sequence[Behavior]) -> None:
        super().check(config, behaviors)
        train_set(config, behaviors)

    def suffix_path(self) -> Path:
        if self.config.suffix_file:
            return Path(self.config.suffix_file)
        if self.context.work_dir is None:
            raise UserError("gcg_multi: set attack_params.gcg_multi.suffix_file (no run folder to save it in)")
        return Path(self.context.work_dir) / DEFAULT_FILE

    def prepare(self, behaviors: Sequence[Behavior], pending: Sequence[Behavior] | None = None) -> None:
        train = train_set(self.config, behaviors)
        self.train_ids = {b.id for b in train}
        if pending is not None and not pending:  # a resumed run with every attempt recorded needs no suffix
            logger.info("gcg_multi: every behavior is recorded; no suffix needed")
            return
        path = self.suffix_path()
        shared = bool(self.config.suffix_file)
        saved = _load_saved(path, shared)
        differences = self._differences(saved, train) if saved is not None else []
        self._refuse_mixing(path, saved, differences)
        if saved is not None:
            if not differences:
                if not saved.prompt_digests:
                    logger.warning("gcg_multi: %s records no digest of the training prompts (written before they "
                                   "were saved): reused without checking that the system prompt and request text "
                                   "are those it was optimised for", path)  # fmt: skip
                logger.info("gcg_multi: reusing the suffix saved in %s", path)
                self.universal = saved
                return
            if shared:
                raise UserError(f"gcg_multi: the suffix in suffix_file {path} was optimised for a different "
                                f"{'; '.join(differences)}; it is neither reused nor overwritten: name another "
                                "suffix_file, or delete this one to optimise anew")
            logger.warning("gcg_multi: the suffix in %s was optimised for a different %s: optimising a new one",
                           path, "; ".join(differences))
        self.universal = self.optimize_universal(train)
        write_json(path, asdict(self.universal))

    def _refuse_mixing(self, path: Path, saved: UniversalSuffix | None, differences: Sequence[str]) -> None:
        """Refuse when the run's records hold attempts of this attack made with another suffix than the one it
        would now use: the saved one is missing, would not be reused (``differences``), or is not theirs. A new
        optimisation would leave the records with two suffixes, and train/held_out labels of two training sets."""
        store = self.context.records
        recorded = [r for r in store if r.attack == self.name] if store is not None else []
        if not recorded:
            return
        where = f"{store.path} holds {len(recorded)} {self.name} attempts"
        undo = "resume with the behaviors and settings the run began with, or start it afresh in another output_dir"
        if saved is None:
            raise UserError(f"gcg_multi: {where}, but the suffix file {path} is missing (deleted, or unreadable): "
                            f"optimising a new suffix would mix two in one run; {undo}")
        if differences:
            raise UserError(f"gcg_multi: {where}, but the suffix in {path} was optimised for a different "
                            f"{'; '.join(differences)}: optimising a new one would mix two suffixes in one run; "
                            f"{undo}")
        digest = suffix_digest(saved)
        other = [r for r in recorded if not _made_with(r.attempt_meta, saved, digest)]
        if other:
            first = other[0].attempt_meta
            raise UserError(f"gcg_multi: {where}, {len(other)} of them (first: behavior {other[0].behavior_id!r}, "
                            f"suffix {first.get('suffix')!r}, suffix_digest {first.get('suffix_digest')}) made with "
                            f"another suffix than the one in {path} ({saved.suffix!r}, suffix_digest {digest}); {undo}")

    def _differences(self, saved: UniversalSuffix, train: Sequence[Behavior]) -> list[str]:
        """What keeps a saved suffix from being reused here (empty: nothing)."""
        model, settings = self.model_fingerprint, _settings(self.config)
        differences = []
        if saved.model_fingerprint is None or saved.model_fingerprint != model:
            differences.append(f"model (fingerprint {saved.model_fingerprint or 'not recorded'}, this one {model})")
        if saved.train_ids != [b.id for b in train]:
            differences.append(f"training set ({saved.train_ids}, this run {[b.id for b in train]})")
        elif saved.targets != [b.target for b in train]:
            differences.append("target strings of the training behaviors")
        elif saved.prompt_digests and saved.prompt_digests != self._prompt_digests(train):
            differences.append("prompt text of the training behaviors (system prompt, chat template or request)")
        changed = sorted(k for k in set(saved.settings) | set(settings) if saved.settings.get(k) != settings.get(k))
        if changed:
            differences.append(f"settings ({', '.join(changed)})")
        elif saved.cut_short() and (saved.stopped != "max_seconds" or saved.max_seconds != self.config.max_seconds):
            # only the same time limit (the same run resumed) would stop it there again
            limit = saved.max_seconds if saved.stopped == "max_seconds" else "(not recorded)"
            differences.append(f"time limit (stopped by max_seconds={limit} after {saved.steps} of "
                               f"{saved.settings.get('steps')} steps; this run: max_seconds={self.config.max_seconds})")
        return differences

    def _prompt_digests(self, train: Sequence[Behavior]) -> list[str]:
        """Per training behavior, the digest of the prompt text before and after its suffix slot, as the target
        renders it: a suffix optimised under one system prompt or request text is not reused for another."""
        return [json_digest(list(self.render_parts(behavior_prompt(b)))) for b in train]

    @cached_property
    def model_fingerprint(self) -> str | None:
        """The fingerprint of the weights being attacked (hashing an in-memory model's parameters: once)."""
        from safealign.models.identity import loaded_identity

        return loaded_identity(self.model).get("fingerprint")

    def attack(self, behavior: Behavior) -> list[Attempt]:
        if self.universal is None:
            raise RuntimeError("gcg_multi: prepare() must run before attack()")
        u = self.universal
        content = self.message(behavior_prompt(behavior), u.suffix)
        split = "train" if behavior.id in self.train_ids else "held_out"
        meta = {"suffix": u.suffix, "train_ids": u.train_ids, "mean_train_loss": u.mean_loss, "steps": u.steps,
                "suffix_digest": suffix_digest(u)}  # fmt: skip
        return [self.user_attempt(behavior, content, split, **meta)]

    def optimize_universal(self, train: Sequence[Behavior]) -> UniversalSuffix:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        problems = [self._problem(b) for b in train]
        ids = self._initial_ids()
        active = 1 if cfg.progressive else len(problems)
        last_add = 0
        out = UniversalSuffix(self._suffix_text(ids), ids.tolist(), [b.id for b in train], float("inf"),
                              settings=_settings(cfg), model_fingerprint=self.model_fingerprint,
                              targets=[b.target for b in train], stopped="steps", max_seconds=cfg.max_seconds,
                              prompt_digests=self._prompt_digests(train))  # fmt: skip
        start = time.perf_counter()
        for step in range(cfg.steps):
            raise_if_stop_requested()
            if cfg.max_seconds is not None and time.perf_counter() - start >= cfg.max_seconds:
                out.stopped = "max_seconds"
                break
            grad = torch.stack([self._token_gradients(p, ids) for p in problems[:active]]).mean(0)
            candidates = self._sample_candidates(ids, grad, generator, problems)  # sent as optimised for all
            losses = torch.stack([self._candidate_losses(p, candidates) for p in problems[:active]])  # (A, W)
            choice = losses.mean(0).argmin()
            ids = candidates[choice]
            chosen = losses[:, choice]
            out.losses.append(float(chosen.mean()))
            out.active.append(active)
            out.steps = step + 1
            solved = bool((chosen < cfg.add_threshold).all())
            if active < len(problems) and (solved or step - last_add >= cfg.add_after):
                active, last_add = active + 1, step
        out.suffix, out.suffix_ids = self._suffix_text(ids), ids.tolist()
        with torch.no_grad():  # the final suffix's mean loss over every training behavior, active or not
            final = torch.stack([self._candidate_losses(p, ids[None]) for p in problems])
        out.mean_loss = float(final.mean())
        out.seconds = round(time.perf_counter() - start, 3)
        logger.info("gcg_multi: mean loss %.3f over %d behaviors after %d steps", out.mean_loss, len(train), out.steps)
        return out


def train_set(cfg: GCGMultiConfig, behaviors: Sequence[Behavior]) -> list[Behavior]:
    if cfg.train_ids:
        by_id = {b.id: b for b in behaviors}
        unknown = [i for i in cfg.train_ids if i not in by_id]
        if unknown:
            raise UserError(f"attack_params.gcg_multi.train_ids: {unknown} are not among the run's behaviors")
        return [by_id[i] for i in cfg.train_ids]
    if cfg.n_train > len(behaviors):
        raise UserError(f"attack_params.gcg_multi.n_train={cfg.n_train} but the run has {len(behaviors)} behaviors")
    return list(behaviors[: cfg.n_train])


def _made_with(meta: dict[str, Any], saved: UniversalSuffix, digest: str) -> bool:
    """Whether a recorded attempt's ``meta`` was made with ``saved``: its digest, or, in records written before
    digests, its suffix and training ids."""
    if "suffix_digest" in meta:
        return meta["suffix_digest"] == digest
    return meta.get("suffix") == saved.suffix and meta.get("train_ids") == saved.train_ids


def _load_saved(path: Path, shared: bool) -> UniversalSuffix | None:
    """The suffix saved at ``path``; None when there is none, or when the run's own file is unreadable (it is
    optimised anew). An unreadable ``shared`` file (an explicit suffix_file) is refused, not overwritten."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return UniversalSuffix(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        if shared:
            raise UserError(f"gcg_multi: suffix_file {path} is not a gcg_multi suffix file ({exc}); name another "
                            "suffix_file, or delete it") from None
        logger.warning("gcg_multi: ignoring unreadable suffix file %s (%s)", path, exc)
        return None


@dataclass(frozen=True)
class GCGTransferConfig:
    suffix_file: str = ""  # gcg_multi's JSON, or a text file holding the suffix
    # between the request and the suffix; unset: the one gcg_multi optimised with (its JSON's settings.separator),
    # else " "; a separator that contradicts the JSON's is refused
    separator: Optional[str] = None


def read_suffix(path: str) -> tuple[str, str | None]:
    """The suffix in ``path`` and the separator it was optimised with (gcg_multi's JSON; None: not recorded)."""
    if not path:
        raise UserError("attack_params.gcg_transfer.suffix_file is required (a gcg_multi suffix JSON or a text file)")
    text = read_text(path, "suffix file (gcg_multi JSON or text)")
    if path.endswith(".json"):
        try:
            data = json.loads(text)
            suffix = data.get("suffix")
        except (json.JSONDecodeError, AttributeError):
            suffix = None
        if not isinstance(suffix, str) or not suffix:
            raise UserError(f"{path}: not a gcg_multi suffix file (no \"suffix\" text field)")
        separator = data.get("settings", {}).get("separator") if isinstance(data.get("settings"), dict) else None
        return suffix, separator if isinstance(separator, str) else None
    if not text.strip():
        raise UserError(f"{path}: empty suffix file")
    return text.rstrip("\n"), None


def transfer_separator(config: GCGTransferConfig, saved: str | None) -> str:
    """The separator gcg_transfer sends: the configured one, else the one the suffix was optimised with (a suffix's
    first token was optimised with it in front), else " "."""
    if config.separator is None:
        return " " if saved is None else saved
    if saved is not None and config.separator != saved:
        raise UserError(f"attack_params.gcg_transfer.separator {config.separator!r} differs from the separator the "
                        f"suffix in {config.suffix_file} was optimised with (settings.separator {saved!r}): drop the "
                        "key to use that one")
    return config.separator


class GCGTransferAttack(Attack):
    config_class: ClassVar[type] = GCGTransferConfig
    deterministic: ClassVar[bool] = True

    def __init__(self, config: GCGTransferConfig, context: AttackContext | None = None) -> None:
        super().__init__(config, context)
        self.suffix, saved = read_suffix(config.suffix_file)
        self.separator = transfer_separator(config, saved)

    @classmethod
    def check(cls, config: Any, behaviors: Sequence[Behavior]) -> None:
        super().check(config, behaviors)
        transfer_separator(config, read_suffix(config.suffix_file)[1])

    def attack(self, behavior: Behavior) -> list[Attempt]:
        content = behavior_prompt(behavior) + self.separator + self.suffix
        return [self.user_attempt(behavior, content, "gcg_transfer", suffix=self.suffix,
                                  suffix_file=self.config.suffix_file)]  # fmt: skip
