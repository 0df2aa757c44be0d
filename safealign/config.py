"""Config schemas as dataclasses; YAML file + CLI ``key=value`` overrides; resolved config saved.

Schemas are plain dataclasses owned by the module that uses them (``TrainConfig`` in ``train/``,
``EvalConfig`` in ``eval/``). This module only loads, merges, validates and saves them, so a typo
in a YAML key or an override fails loudly with the list of valid keys.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from safealign.errors import UserError
from safealign.files import TextChanged, dump_yaml, load_value, load_yaml, read_text, yaml_quoted

T = TypeVar("T")
COMMAND_LINE = "command-line overrides"  # where a text override comes from, in errors


@dataclass(frozen=True)
class Value:
    """An override whose value is already typed (read from a YAML file, e.g. a sweep grid's ``demo:`` block or an
    axis value): assigned as it is, never re-read as text, so text holding quotes, newlines or non-ASCII arrives
    unchanged. ``source`` says where it was given (e.g. ``grid.yaml: axes.prefix``) in errors."""

    key: str
    value: Any
    source: str = COMMAND_LINE


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str | Value] | None = None, *,
                values: dict[str, Any] | None = None) -> T:
    """Build ``schema`` from an optional YAML file and ``key=value`` dotlist overrides.

    Layers, later wins: the schema's defaults, the YAML file (after the recipe it extends with ``base:``),
    ``values`` (e.g. parsed command-line flags), then the overrides in order (``key=value`` text, or a
    :class:`Value` with its value typed already).
    """
    merged = OmegaConf.structured(schema)
    where = "defaults"
    try:
        # one layer at a time, so that an error names the file that holds the bad key (a base recipe's own)
        for file, data in recipe_files(Path(path)) if path is not None else []:
            where = file
            merged = _merge(merged, data, where)
        if values:
            where = "command-line options"
            merged = _merge(merged, values, where)
        for override in overrides or []:
            where = override.source if isinstance(override, Value) else COMMAND_LINE
            _apply_override(merged, override)
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:  # the one setting has no default and nobody gave it: say where it can be given
            raise UserError(f"no value for {', '.join(missing)}: set it in the YAML config or on the command line "
                            f"({missing[0]}=...)")
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise UserError(f"{where}: invalid config: {_describe(exc, schema)}") from None


def _merge(merged: Any, data: Any, where: str) -> Any:
    """``data`` (a YAML layer read from ``where``) merged into ``merged``. A mapping merges key by key, so an empty
    one would leave a free-form mapping's defaults in place: given empty (``attack_params: {}``, as save_config
    writes a config whose mapping was emptied), such a mapping is emptied, so a saved config loads back as it was.
    An empty section of the schema (``eval: {}``) still changes nothing; a key left out keeps its default. Text
    arrives as written (:func:`literal_text`)."""
    _check_lists(merged, data, where)
    merged = OmegaConf.merge(merged, OmegaConf.create(literal_text(data)))
    for path in _empty_mappings(data):
        parent = merged
        for key in path[:-1]:
            parent = parent[key]
        if OmegaConf.get_type(parent, path[-1]) is dict:  # a free-form mapping, not a dataclass section
            parent[path[-1]] = {}
    return merged


def _check_lists(node: Any, data: Any, where: str, path: tuple[str, ...] = ()) -> None:
    """A mapping given where the schema has a list (``losses: {name: dpo}``) is a UserError naming the file and
    key: OmegaConf's merge raised a bare TypeError that named neither."""
    for key, value in data.items() if isinstance(data, dict) and OmegaConf.is_dict(node) else ():
        if not isinstance(value, dict) or key not in node:
            continue
        child, dotted = node._get_node(key), ".".join((*path, str(key)))
        if OmegaConf.is_list(child):
            raise UserError(f"{where}: {dotted}: expected a list, got a mapping {value!r}; write a list, e.g. "
                            f"{key}: [...]")
        _check_lists(child, value, where, (*path, str(key)))


def literal_text(value: Any) -> Any:
    """``value`` with every ``${`` in its text escaped, so OmegaConf keeps the text as written instead of reading
    an interpolation (``Answer as ${model} would`` took the model's name; ``${oc.env:VAR}`` copied an environment
    variable into the saved config): a ``\\`` right before it is doubled, as OmegaConf's grammar unescapes it. A
    config dataclass is copied with its fields escaped (to_dict builds OmegaConf's view of a loaded config)."""
    if isinstance(value, str):
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value) if "${" in value else value
    if isinstance(value, dict):
        return {k: literal_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [literal_text(v) for v in value] if isinstance(value, list) else tuple(literal_text(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        copied = copy.copy(value)  # no __init__ (a frozen section's checks ran when it was built)
        for f in dataclasses.fields(value):
            object.__setattr__(copied, f.name, literal_text(getattr(value, f.name)))
        return copied
    return value


def _empty_mappings(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The key paths of the empty mappings in ``data`` (not inside lists, which replace their defaults whole)."""
    found: list[tuple[Any, ...]] = []
    for key, value in data.items() if isinstance(data, dict) else ():
        if isinstance(value, dict):
            found += [(*path, key)] if not value else _empty_mappings(value, (*path, key))
    return found


def config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """A command's optional CONFIG argument and its overrides: a first argument that is ``key=value`` rather
    than a YAML file is the first override (``safealign eval model.name=x`` runs with no config file)."""
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, list(overrides)


def read_recipe(path: Path) -> list[dict[str, Any]]:
    """The YAML mappings of a recipe, base first: a recipe may extend another with ``base: other.yaml``
    (a path relative to the recipe's own folder); the recipe's keys then override the base's (mappings
    merge key by key, lists and scalars are replaced)."""
    return [data for _, data in recipe_files(path)]


def recipe_files(path: Path, _seen: tuple[Path, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """:func:`read_recipe`'s mappings, each with the file it was read from (named in errors)."""
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise UserError(f"{path}: recipes extend each other in a cycle: {chain}")
    try:
        data = load_yaml(read_text(path, "config file")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: top level must be a mapping of config keys, got {type(data).__name__}")
    parent = data.pop("base", None)
    if parent is None:
        return [(str(path), data)]
    if not isinstance(parent, str) or not parent:
        raise UserError(f"{path}: 'base' must be the path of another recipe, got {parent!r}")
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise UserError(f"{path}: base recipe {parent!r} not found (looked for {parent_path})")
    return [*recipe_files(parent_path, (*_seen, resolved)), (str(path), data)]


def _apply_override(config: Any, override: str | Value) -> None:
    """``key=value`` with a dotted key (list items by index: ``losses.0.params.beta=0.5``), or a :class:`Value`.
    Inside a free-form mapping (``attack_params``, ``data.columns``) a missing key is created, so
    ``attack_params.template.names=[a]`` works before ``template`` has any parameters."""
    if isinstance(override, Value):
        key, where = override.key, override.source
    else:
        key, sep, raw = override.partition("=")
        where = COMMAND_LINE
        if not sep or not key:
            raise UserError(f"overrides must look like key=value, got {override!r}")
    *path, leaf = key.split(".")
    parent = config
    for depth, part in enumerate(path):
        parent = _child(parent, part, key, ".".join(path[: depth + 1]), where)
    value = literal_text(override.value if isinstance(override, Value) else _parse_value(parent, leaf, raw, override))
    # a list or mapping as OmegaConf's own container (_typed_items builds the sections of a list of them on their
    # schema)
    value = OmegaConf.create(value) if isinstance(value, (list, dict)) else value
    if OmegaConf.is_list(parent):
        if not leaf.isdigit() or int(leaf) >= len(parent):
            raise UserError(f"{where}: {key}: list index {leaf!r} out of range (length {len(parent)})")
        parent[int(leaf)] = _as_declared(parent, int(leaf), value)
    else:
        parent[leaf] = _typed_items(parent[leaf], _as_declared(parent, leaf, value)) if leaf in parent else value


def _parse_value(parent: Any, leaf: str, raw: str, override: str) -> Any:
    """The override's value. A text field (``model.name``, ``behaviors.rows``, ``output_dir``) or a list of texts
    takes the text as written: YAML would read `` #2`` as a comment (and YAML 1.1 ``10:50`` as the base-60 number
    650, ``0123`` as octal 83, ``No`` as false). Anything else is read as YAML by the config files' loader
    (safealign.files.load_value: 1e-4, [a,b], null); a value it cannot read, or would read as other than the text
    written (`` #2`` a comment, ``Sure: {target}`` a mapping), is a UserError naming the override."""
    from omegaconf import ListConfig
    from omegaconf.nodes import StringNode

    node = parent._get_node(leaf) if hasattr(parent, "_get_node") and _has(parent, leaf) else None
    if isinstance(node, StringNode) and raw not in ("null", "~"):
        quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
        return raw[1:-1] if quoted else raw
    text_list = isinstance(node, ListConfig) and getattr(node._metadata, "element_type", None) is str
    if text_list and raw.startswith("[") and raw.endswith("]"):
        return _text_items(raw[1:-1], override)
    try:
        return load_value(raw)
    except yaml.YAMLError as exc:
        raise UserError(f"command-line overrides: {override!r}: not a readable value "
                        f"({getattr(exc, 'problem', None) or exc}); quote it, e.g. {leaf}='...'") from None
    except TextChanged as exc:  # YAML would change the text (a `` #`` comment, ``a: b`` a mapping)
        key = override.partition("=")[0]
        raise UserError(f"command-line overrides: {override!r}: {exc}; to keep the text as written, quote it: "
                        f'"{key}={yaml_quoted(raw)}"') from None


def _text_items(inner: str, override: str) -> list[str]:
    """``a, 'b, c', "d"`` → ``['a', 'b, c', 'd']``: items split at commas outside quotes, each stripped of
    spaces and of the quotes around it; no other character is special (``[User:]``, ``[###]``, ``[on]``)."""
    items, current, quote = [], "", ""
    for char in inner:
        if quote:
            current += char
            quote = "" if char == quote else quote
        elif char in "'\"" and not current.strip():
            current, quote = char, char
        elif char == ",":
            items.append(current)
            current = ""
        else:
            current += char
    if quote:
        raise UserError(f"command-line overrides: {override!r}: a quote is not closed")
    items.append(current)
    stripped = [item.strip() for item in items]
    if stripped == [""]:
        return []
    return [t[1:-1] if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"" else t for t in stripped]


def _has(parent: Any, leaf: str) -> bool:
    if OmegaConf.is_list(parent):
        return leaf.isdigit() and int(leaf) < len(parent)
    return leaf in parent


def _as_declared(parent: Any, leaf: Any, value: Any) -> Any:
    """An integer (``beta=1``, ``losses.0.weight=2``) or a number word (``nan``) given for a float field, as the
    float it declares: OmegaConf deprecates converting them on assignment."""
    from omegaconf.nodes import FloatNode

    node = parent._get_node(leaf) if hasattr(parent, "_get_node") else None
    if not isinstance(node, FloatNode) or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):  # "nan", "inf": not numbers to OmegaConf's grammar
        try:
            return float(value)
        except ValueError:
            return value  # OmegaConf names the field and the bad value
    return value


def _typed_items(current: Any, value: Any) -> Any:
    """``value`` for a list of config sections (``defenses=[{name: smoothllm}]``): each mapping built on the
    section's schema, so missing fields take their defaults (OmegaConf refuses a plain mapping there)."""
    element = getattr(getattr(current, "_metadata", None), "element_type", None)
    if not (OmegaConf.is_list(current) and OmegaConf.is_list(value) and dataclasses.is_dataclass(element)):
        return value
    return [OmegaConf.merge(OmegaConf.structured(element), item) if OmegaConf.is_dict(item) else item
            for item in value]  # fmt: skip


def _child(node: Any, part: str, key: str, so_far: str, where: str) -> Any:
    if OmegaConf.is_list(node):
        if not part.isdigit() or int(part) >= len(node):
            raise UserError(f"{where}: {key}: no such key {so_far!r} (a list of length {len(node)})")
        child = node[int(part)]
    else:
        if part not in node:
            if OmegaConf.get_type(node) is not dict:  # a schema section: a missing key is a typo, not a new entry
                valid = ", ".join(sorted(str(k) for k in node.keys()))
                raise UserError(f"{where}: {key}: no such key {so_far!r}; valid keys here: {valid}")
            node[part] = {}
        child = node[part]
    if not (OmegaConf.is_dict(child) or OmegaConf.is_list(child)):
        raise UserError(f"{where}: {key}: no such key {key.rpartition('.')[0]!r} "
                        f"({so_far} is a value, not a mapping)")
    return child


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
    """A plain dict of a dataclass config (for saving and hashing); text as it is (``${`` is no interpolation)."""
    return OmegaConf.to_container(OmegaConf.structured(literal_text(config)), resolve=True)  # type: ignore[return-value]


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML next to a run's outputs."""
    from safealign.files import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, dump_yaml(to_dict(config)).encode())  # reports read it beside runs
    return path
