"""Config schemas as dataclasses; YAML file + CLI ``key=value`` overrides; resolved config saved.

Schemas are plain dataclasses owned by the module that uses them (``TrainConfig`` in ``train/``,
``EvalConfig`` in ``eval/``). This module only loads, merges, validates and saves them, so a typo
in a YAML key or an override fails loudly with the list of valid keys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``schema`` from an optional YAML file and ``key=value`` dotlist overrides."""
    base = OmegaConf.structured(schema)
    layers = [base]
    where = "defaults"
    try:
        if path is not None:
            where = str(path)
            data = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: top level must be a mapping of config keys, got {type(data).__name__}")
            layers.append(OmegaConf.create(data))
        merged = OmegaConf.merge(*layers)
        where = "command-line overrides"
        for override in overrides or []:
            _apply_override(merged, override)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ValueError(f"{where}: invalid config: {_describe(exc, schema)}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: not valid YAML: {exc}") from None


def _apply_override(config: Any, override: str) -> None:
    """``key=value`` with a dotted key (list items by index: ``losses.0.params.beta=0.5``)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ValueError(f"overrides must look like key=value, got {override!r}")
    value = OmegaConf.from_dotlist([f"value={raw}"])["value"]  # OmegaConf's value grammar: 1e-4, [a,b], null
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(config, parent_key) if parent_key else config
    if parent is None:
        raise ValueError(f"command-line overrides: {key}: no such key {parent_key!r}")
    if OmegaConf.is_list(parent):
        if not leaf.isdigit() or int(leaf) >= len(parent):
            raise ValueError(f"command-line overrides: {key}: list index {leaf!r} out of range (length {len(parent)})")
        parent[int(leaf)] = value
    else:
        parent[leaf] = value


def _describe(exc: OmegaConfBaseException, schema: type) -> str:
    msg = str(exc).splitlines()[0]
    key = getattr(exc, "full_key", None)
    parent = getattr(exc, "parent_node", None)
    valid: list[str] = []
    if parent is not None and hasattr(parent, "keys"):
        try:
            valid = sorted(str(k) for k in parent.keys())
        except Exception:  # pragma: no cover - best effort for the message only
            valid = []
    if not valid and dataclasses.is_dataclass(schema):
        valid = [f.name for f in dataclasses.fields(schema)]
    hint = f"; valid keys here: {', '.join(valid)}" if valid and " not in " in msg else ""
    return f"{key}: {msg}{hint}" if key else f"{msg}{hint}"


def to_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a dataclass config (for saving and hashing)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)  # type: ignore[return-value]


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML next to a run's outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return path
