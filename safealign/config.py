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
        if overrides:
            where = "command-line overrides"
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ValueError(f"overrides must look like key=value, got {bad}")
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ValueError(f"{where}: invalid config: {_describe(exc, schema)}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: not valid YAML: {exc}") from None


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
