"""``safealign sweep GRID.yaml``: the demo's training over a grid of settings × variants × seeds.

A grid file (configs/sweep/e_effect.yaml) holds:

- ``demo``: the base :class:`~safealign.pipelines.demo_config.DemoConfig` as a mapping of its keys (nested
  ``train:``/``eval:`` mappings or dotted keys, the demo's flat aliases such as ``beta`` included);
- ``axes``: key -> list of values; every combination is one setting. Axes vary training only (``train.*``
  keys and the aliases that stand for them, ``nll_weight`` and ``lora_r`` included, and ``prefix``, the
  E-variant's safety prefix), so every cell trains
  from the *same* self-generated pairs and is evaluated on the *same* held-out prompts;
- ``variants`` (e.g. ``[dpo, e-dpo]``, or any training method of ``safealign demo --compare``), ``seeds``
  (training seeds), ``output_dir``, ``resamples``;
- ``compare``: the table's paired differences, ``[a, b]`` pairs of variants (``a − b``); by default the
  demo's: every method against ``dpo`` (else the first variant), each E-variant against its own method.

Two grids with the same base config may share one directory: a cell is keyed by its setting, variant and
seed, so a grid of methods at one setting (configs/sweep/safety_methods.yaml) reuses the DPO and E-DPO cells
of the E-effect grid at that setting. Each grid writes its own table, named after its file.

Layout under ``output_dir``: ``pairs.jsonl`` (built once from the base model), ``reference_cache/`` (the
reference log-probs, shared by every cell with the same reference view), and one directory per cell,
``cells/<setting>/<variant>-seed<N>/`` with the demo's ``train/`` and ``eval/`` folders, a
``fingerprint.json`` (safealign/io/rundir.py) and, written last, ``cell.json``. A cell whose ``cell.json``
carries the current fingerprint is finished and never recomputed; an interrupted one resumes its
training checkpoint and its evaluation records. A cell whose training loss went non-finite gets ``diverged.json``
instead (the step): never claimed again, and counted in the table rather than averaged.

Several workers may share one sweep directory (docs/sweep.md): ``safealign sweep GRID`` started N times (one
per GPU or core, even on several hosts sharing the folder), or ``--workers N`` (safealign/pipelines/
sweep_workers.py). Each claims the next unfinished cell, in the order above, with ``claim.lock`` in the
cell's directory (safealign/io/lockfile.py); the pairs and the base model's evaluation are built under
``shared.lock``, each reference-cache entry under its own lock. The worker that finds every cell finished
writes its grid's table; one that finds only cells other live workers hold exits naming them (and, as those may be
workers of another grid sharing the directory, which write only their own table, ``--table`` to write it after).

The table (``tables/<grid name>.json`` and ``.md`` under ``output_dir``, and the console) gives, per setting,
each metric's mean over seeds per variant and every compared pair's paired difference, both with hierarchical
intervals (safealign/eval/paired.py: seeds and prompts crossed, a two-way random-effects t). A grid of one
setting prints a method per row instead. ``safealign sweep GRID --table`` prints it from the cells finished so
far, computing nothing.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from safealign.config import Value, literal_text, to_dict
from safealign.errors import UserError
from safealign.files import TextChanged, load_value, load_yaml, read_text, yaml_quoted
from safealign.io import write_json
from safealign.io.committable import hold_back, mark_results, release
from safealign.io.jsonfile import write_atomic
from safealign.io.lockfile import ClaimedRun, Holder
from safealign.io.rundir import under
from safealign.io.summaries import Figure
from safealign.report import numbers
from safealign.pipelines.demo_config import ALIASES, SET_PER_STAGE, VARIANTS, DemoConfig, load_demo_config

logger = logging.getLogger(__name__)

GRID_KEYS = ("demo", "axes", "variants", "seeds", "compare", "output_dir", "resamples")
# the sweep owns these: a setting's config gets them from the grid, not from ``demo:``
_SWEEP_OWNED = ("output_dir", "variants", "train_seeds")
# what each stage sets itself (safealign/pipelines/demo_config.py, train_config) or the sweep shares
_SET_PER_CELL = (*SET_PER_STAGE, "train.reference.cache_dir")
_TRAINING_DEMO_KEYS = ("prefix",)  # demo keys that change training only (the E-variant's reference view)
# the config paths an alias sets (the others: ALIASES); nll_weight replaces the whole loss list but keeps its β
_ALIAS_PATHS = {"nll_weight": ("train.losses",), "lora_r": ("train.lora.r", "train.lora.alpha")}
_KEPT_BY = {"nll_weight": ("train.losses.0.params.beta",)}
# what refusals offer: --fresh deletes the whole directory, which other grids' cells may share
FRESH = ("--fresh (which deletes the whole sweep directory: the cells of every grid that shares it, not only this "
         "grid's)")
BEFORE = "before"  # the base model's evaluation under output_dir: its direct answers anchor the refusal margin
SHARED_DONE = "shared.json"  # under output_dir: which worker last finished the pairs and the base model's evaluation
CELL_LOCK = "claim.lock"  # in a cell's directory while a worker computes it (safealign/io/lockfile.py)
DIVERGED = "diverged.json"  # in a cell's directory, instead of cell.json, once its training loss went non-finite


@dataclass
class Grid:
    # the base DemoConfig: the grid file's demo: values, typed as YAML read them, then command-line key=value text
    demo: list[str | Value]
    axes: dict[str, list[Any]]
    variants: list[str] = field(default_factory=lambda: ["dpo", "e-dpo"])
    seeds: list[int] = field(default_factory=lambda: [0])
    output_dir: str = "runs/sweep"
    resamples: int = 2000
    compare: list[list[str]] | None = None  # [a, b]: the table's paired differences a − b (None: see comparisons)
    name: str = "sweep"  # the grid file's stem: its table is tables/<name>.json under output_dir
    # the command-line overrides other than output_dir (the grid's seeds, variants, axes, or a demo key, which pick
    # other cells): with any, `--table` prints a view of the directory and leaves the grid's table file as it is
    view_overrides: list[str] = field(default_factory=list)
    source: str = "sweep grid"  # the grid file, named in errors about its values

    @property
    def narrowed(self) -> bool:
        """Whether this is a view of the grid file's grid (see ``view_overrides``), not the grid itself."""
        return bool(self.view_overrides)

    def comparisons(self) -> list[tuple[str, str]]:
        """The compared pairs: as given, else the demo's (every method against dpo, each E-variant against its
        own method: safealign/pipelines/demo_methods.py, comparison_pairs)."""
        from safealign.pipelines.demo_methods import comparison_pairs

        return [(a, b) for a, b in self.compare] if self.compare is not None else comparison_pairs(self.variants)

    def table_path(self, suffix: str) -> Path:
        return Path(self.output_dir) / "tables" / f"{self.name}{suffix}"

    def settings(self) -> list[dict[str, Any]]:
        """Every combination of axis values, the first axis varying slowest."""
        keys = list(self.axes)
        return [dict(zip(keys, values)) for values in itertools.product(*self.axes.values())]

    def setting_config(self, setting: dict[str, Any]) -> DemoConfig:
        # the values as YAML read them, never re-read as text: a prefix with quotes, a newline or non-ASCII reaches
        # the cell as written (numbers and names give the same config, and fingerprint, as the text overrides of
        # earlier versions)
        where = f"{self.source}: axes"
        config = load_demo_config([*self.demo, *(Value(k, v, where) for k, v in setting.items()),
                                   Value("output_dir", self.output_dir, f"{self.source}: output_dir"),
                                   Value("variants", self.variants, f"{self.source}: variants"),
                                   Value("train_seeds", self.seeds, f"{self.source}: seeds")])
        # one cache folder for the sweep: cells with the same reference view reuse one table
        config.train.reference.cache_dir = str(Path(self.output_dir) / "reference_cache")
        return config


def setting_name(setting: dict[str, Any]) -> str:
    """E.g. ``nll_weight=0,beta=0.1,learning_rate=0.0005``: the setting's folder and table row. A value is named
    by its text, as it always was (so an earlier sweep's cells are found again; a whole-number float by its int's,
    ``1.0`` as ``1``, whose cells it trains), unless that text cannot be part of
    one folder name (``/``, a NUL) or is long (a prefix given as its text): then by a slug of it and a hash of the
    whole value, so it makes one folder of a legal length."""
    return ",".join(f"{k}={_value_name(v)}" for k, v in setting.items()) or "base"


def _value_name(value: Any) -> str:
    text = str(value)
    if isinstance(value, float) and text.endswith(".0"):  # 1.0 trains the cell of 1 (one fingerprint): one folder
        text = text[:-2]
    if "/" not in text and "\0" not in text and text not in (".", "..") and len(text.encode()) <= 100:
        return text
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:24].rstrip("-") or "text"
    whole = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(whole.encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def load_grid(path: str | Path, overrides: list[str] | None = None) -> Grid:
    """The grid file with command-line ``key=value`` overrides: grid keys (``seeds=[0,1]``,
    ``output_dir=...``, ``axes.beta=[0.1]``) set the grid; any other key overrides the base demo config."""
    try:
        data = load_yaml(read_text(path, "sweep grid")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) - set(GRID_KEYS):
        raise UserError(f"{path}: a sweep grid is a mapping of {', '.join(GRID_KEYS)}; unknown key(s) "
                        f"{sorted(set(data) - set(GRID_KEYS)) if isinstance(data, dict) else data!r}")
    grid_overrides, demo_overrides = [], []
    for override in overrides or []:
        key = override.partition("=")[0]
        (grid_overrides if key.split(".")[0] in GRID_KEYS else demo_overrides).append(override)
    if grid_overrides:
        data = _override_grid(path, data, grid_overrides)
    demo = data.get("demo") or {}
    if not isinstance(demo, dict):
        raise UserError(f"{path}: demo: expected a mapping of DemoConfig keys, got {demo!r}")
    owned = [k for k in demo if k in _SWEEP_OWNED]
    if owned:
        raise UserError(f"{path}: demo: {', '.join(owned)} are set by the sweep (output_dir, variants, seeds)")
    flat = _flatten(demo)
    axes = _axes(path, data.get("axes") or {})
    _check_not_swept(path, [(k, "demo") for k in flat] + [(o.partition("=")[0], "command line")
                                                          for o in demo_overrides], axes)
    grid = Grid(demo=[*(Value(k, v, f"{path}: demo") for k, v in flat.items()), *demo_overrides],
                axes=axes, name=Path(path).stem, source=str(path),
                view_overrides=[o for o in overrides or [] if o.partition("=")[0] != "output_dir"],
                **{k: data[k] for k in ("variants", "seeds", "compare", "output_dir", "resamples") if k in data})
    _validate(path, grid)
    return grid


def _override_grid(path: str | Path, data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``data`` with the grid's ``key=value`` overrides (``seeds=[0,1]``, ``axes.beta=[0.1]``), each value read
    as the grid file is (safealign.files.load_value: ``5e-4`` a number, ``0123`` text; a value YAML would change,
    `` #1`` a comment or ``a: b`` a mapping, is refused); ``output_dir`` is a folder's path, taken as written
    (``output_dir=2024`` is no number). Text holding ``${`` stays as it is."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config = OmegaConf.create(literal_text(data))
    for override in overrides:
        key, _, raw = override.partition("=")
        try:
            value = _unquoted(raw) if key == "output_dir" else load_value(raw)
            OmegaConf.update(config, key, literal_text(value), merge=True)
        except (yaml.YAMLError, OmegaConfBaseException, TypeError) as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UserError(f"{path}: command-line override {override!r}: {problem}") from None
        except TextChanged as exc:  # YAML would change the text
            raise UserError(f"{path}: command-line override {override!r}: {exc}; to keep the text as written, quote "
                            f'it: "{key}={yaml_quoted(raw)}"') from None
    return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]


def _unquoted(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def _paths(key: str) -> tuple[str, ...]:
    """The config paths ``key`` (a dotted key or a demo alias) sets."""
    return _ALIAS_PATHS.get(key) or (ALIASES.get(key, key),)


def _overwritten(key: str, axis: str) -> bool:
    """Whether the axis ``axis``, applied after ``key``, replaces what ``key`` sets (the same path or one inside
    it; a key setting a whole section around the axis keeps the rest of its value)."""
    kept = _KEPT_BY.get(axis, ())
    return key == axis or any(o == a or o.startswith(a + ".") for a in _paths(axis) for o in _paths(key)
                              if o not in kept)


def _check_not_swept(path: str | Path, keys: list[tuple[str, str]], axes: dict[str, list[Any]]) -> None:
    """A base-config value the sweep would silently replace in every cell is refused: a key an axis sets, or the
    training seeds (from the grid's ``seeds``)."""
    for key, where in keys:
        if key == "train_seeds":
            raise UserError(f"{path}: {where}: train_seeds is set by the sweep from its seeds; give seeds=[...]")
        for axis in axes:
            if _overwritten(key, axis):
                raise UserError(f"{path}: {where}: {key} is set in every cell by the axis {axis}, so this value "
                                f"would be silently replaced; give the values as axes.{axis}=[...] instead")


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _axes(path: str | Path, axes: Any) -> dict[str, list[Any]]:
    if not isinstance(axes, dict):
        raise UserError(f"{path}: axes: expected a mapping of key -> list of values, got {axes!r}")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: axes.{key}: expected a non-empty list of values, got {values!r}")
        target = ALIASES.get(key, key)
        if key in _TRAINING_DEMO_KEYS:
            continue
        if not target.startswith("train."):
            raise UserError(f"{path}: axes.{key}: a sweep varies training only (train.* keys or the aliases "
                            f"{', '.join(k for k, v in ALIASES.items() if v.startswith('train.'))}), so every "
                            "cell shares the same pairs and held-out prompts")
        if under(target, _SET_PER_CELL) is not None:
            raise UserError(f"{path}: axes.{key}: every cell sets {target} itself (from its variant, seed and "
                            "folder), so an axis on it would be silently replaced")
    return axes


def _validate(path: str | Path, grid: Grid) -> None:
    trained = [v for v in VARIANTS if VARIANTS.get(v).trains]  # a cell trains: inference-time methods have no cell
    if not isinstance(grid.output_dir, str) or not grid.output_dir:
        raise UserError(f"{path}: output_dir: a folder path as text, got {type(grid.output_dir).__name__} "
                        f"{grid.output_dir!r}; quote it (output_dir: '{grid.output_dir}')")
    variants = grid.variants if isinstance(grid.variants, list) else [None]
    if (not variants or not all(isinstance(v, str) and v in trained for v in variants)
            or len(set(variants)) != len(variants)):
        raise UserError(f"{path}: variants: a list of distinct training methods from {', '.join(trained)}, got "
                        f"{grid.variants!r}")
    pairs = grid.compare if grid.compare is not None else []
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 and p[0] != p[1]
                                              and all(v in grid.variants for v in p) for p in pairs):
        raise UserError(f"{path}: compare: a list of [a, b] pairs of two different variants of the grid "
                        f"({', '.join(grid.variants)}), got {grid.compare!r}")
    seeds = grid.seeds if isinstance(grid.seeds, list) else []
    if (not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise UserError(f"{path}: seeds: a list of distinct integers, non-empty, got {grid.seeds!r}")
    if not isinstance(grid.resamples, int) or grid.resamples < 100:
        raise UserError(f"{path}: resamples: an integer of at least 100, got {grid.resamples!r}")
    for setting in grid.settings():  # every setting's config is checked before any model loads
        grid.setting_config(setting)


def cell_setting(setting: dict[str, Any], variant: str) -> dict[str, Any]:
    """The part of ``setting`` that names ``variant``'s cell: the safety prefix only where the variant trains
    with it (E-variants) and differs from the demo's default. So a grid over prefixes trains DPO once per
    seed, not once per prefix, and its default-prefix E-DPO cells are those of grids without a prefix axis."""
    from safealign.pipelines.demo_methods import uses_prefix

    keep = uses_prefix(variant) and setting.get("prefix") != DemoConfig().prefix
    return {k: v for k, v in setting.items() if k != "prefix" or keep}


def cell_dir(grid: Grid, setting: dict[str, Any], variant: str, seed: int) -> Path:
    return Path(grid.output_dir) / "cells" / setting_name(cell_setting(setting, variant)) / f"{variant}-seed{seed}"


def _cell_fingerprint(config: DemoConfig, variant: str, seed: int, pairs_digest: str | None):
    from safealign.io.rundir import DEMO_EXCLUDED, make_fingerprint
    from safealign.pipelines.demo_methods import uses_prefix

    settings = to_dict(config)
    if not uses_prefix(variant):  # the prefix changes nothing this variant trains: one cell for every prefix
        settings["prefix"] = DemoConfig().prefix
    return make_fingerprint("sweep-cell", settings, exclude=(*DEMO_EXCLUDED, "variants", "train_seeds",
                                                             "train.reference.cache_dir"),
                            extra={"variant": variant, "train_seed": seed, "pairs": pairs_digest},
                            defaults=to_dict(DemoConfig()))


def _finished(cell: Path, fingerprint, name: str = "cell.json") -> dict[str, Any] | None:
    """The cell's record when it finished under these settings (settings added to the code since, at their
    defaults, included: a sweep outlives many code versions); None otherwise. ``name``: :data:`DIVERGED` reads the
    record of a cell whose training diverged under them (:func:`_diverged`)."""
    from safealign.io.rundir import read_fingerprint, same_settings

    try:
        record = json.loads((cell / name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    # legacy_digest: a cell recorded before 2026-12-07 under a non-finite setting (Fingerprint.legacy_digest)
    if record.get("fingerprint") in (fingerprint.digest, fingerprint.legacy_digest):
        return record
    recorded = read_fingerprint(cell)
    return record if recorded is not None and recorded.digest == record.get("fingerprint") and \
        same_settings(recorded, fingerprint) else None


def _diverged(cell: Path, fingerprint) -> dict[str, Any] | None:
    """The cell's :data:`DIVERGED` record when its training went non-finite under these settings; None otherwise."""
    return _finished(cell, fingerprint, DIVERGED)


def check_sweep_dir(grid: Grid, base: DemoConfig | None = None) -> None:
    """The pairs and held-out prompts belong to the base config's non-training keys: a sweep directory
    holds one of them (adding settings, variants or seeds extends it; each cell checks its own). How many
    workers run it is no setting of it: a sweep started by one process resumes with several."""
    from safealign.io.rundir import claim_run_dir

    claim_run_dir(grid.output_dir, sweep_fingerprint(grid, base),
                  outputs=("pairs.jsonl", "pairs.unpaired.jsonl", "cells"), overwrite_flag=FRESH, exclusive=False)
    _check_cell_folders(grid)
    _warn_axis_order(grid)


def _check_cell_folders(grid: Grid) -> None:
    """The directory's fingerprint leaves out the keys a cell decides (``train.*`` and the prefix: axes may vary
    them), and a cell's folder names only its setting's axis values. So a grid whose base config sets such a key
    to another value than the cells already in its folders (``prefix=responsible`` or ``epochs=2`` on the
    command line, a training key in ``demo:``) would train into the folders of another grid's cells: refused at
    its started cells, or taking the folders that grid has not started. Refused here, before anything is trained,
    naming the key: any cell trained in a folder this grid names, of any seed or method (all are trained from the
    setting's config: grids of other seeds or methods share the folders), must hold this grid's values. A folder
    no cell has started yet is the first grid's to claim."""
    from safealign.io.rundir import describe_changes, differing_keys, read_fingerprint
    from safealign.pipelines.demo_methods import METHODS, uses_prefix

    root = Path(grid.output_dir) / "cells"
    if not root.is_dir():
        return
    settings = grid.settings()
    # one fingerprint per folder and kind of variant (with a prefix or without), its per-cell keys set per cell below:
    # a fingerprint takes a tenth of a second, and a directory holds hundreds of cells
    fingerprints: dict[tuple[str, bool], Any] = {}
    named: dict[str, dict[str, dict[str, Any]]] = {}  # variant -> folder name -> the setting naming its cell there
    for cell in sorted(path.parent for path in root.glob("*/*/fingerprint.json")):
        if not any((cell / name).exists() for name in ("train", "eval", "cell.json", DIVERGED)):
            continue  # claimed, nothing written: the next claim replaces its fingerprint
        recorded = read_fingerprint(cell)
        variant, seed = recorded.values.get("variant"), recorded.values.get("train_seed")
        if not isinstance(variant, str) or variant not in METHODS.names() or not isinstance(seed, int):
            continue
        if variant not in named:
            named[variant] = {}
            for setting in settings:
                named[variant].setdefault(setting_name(cell_setting(setting, variant)), setting)
        setting = named[variant].get(cell.parent.name)
        if setting is None:  # a folder this grid does not name
            continue
        kind = (setting_name(setting), uses_prefix(variant))
        if kind not in fingerprints:
            fingerprints[kind] = _cell_fingerprint(grid.setting_config(setting), variant, seed, None)
        cell_keys = {"variant": variant, "train_seed": seed, "pairs": recorded.values.get("pairs")}
        mine = replace(fingerprints[kind], values={**fingerprints[kind].values, **cell_keys})
        changed = differing_keys(recorded, mine)
        if not any(map(uses_prefix, grid.variants)):  # this grid trains nothing the prefix changes
            changed = [k for k in changed if k not in _TRAINING_DEMO_KEYS]
        if changed:
            axes = ", ".join(f"axes.{_axis_name(k)}=[...]" for k in dict.fromkeys(_axis_name(k) for k in changed))
            raise UserError(f"{grid.source}: {cell} was trained under other values of keys a cell's folder does not "
                            f"name ({describe_changes(recorded, mine, changed)}: recorded -> this grid's); a cell's "
                            f"folder names only its axis values ({cell.parent.name}), so this grid's cells would "
                            f"share that grid's folders. Give the key as an axis, whose value the folder then names "
                            f"({axes}), or use another output_dir=")


def _axis_name(key: str) -> str:
    """The axis that sets the cell-fingerprint key ``key``: the demo's alias where one sets it, else the key."""
    exact = next((alias for alias, path in ALIASES.items() if path == key), None)
    return exact or next((alias for alias, paths in _ALIAS_PATHS.items()
                          if under(key, paths) is not None), key)


def _warn_axis_order(grid: Grid) -> None:
    """A cell's folder names its setting's axes in the grid's order: a grid listing the axes of another grid recorded
    in the directory (its ``tables/<name>.json``) in another order would compute the settings they share again,
    under other folder names. Warned, not refused: the cells are right, only computed twice."""
    for path in sorted((Path(grid.output_dir) / "tables").glob("*.json")):
        try:
            theirs = list(json.loads(path.read_text()).get("axes") or {}) if path.stem != grid.name else []
        except (OSError, ValueError, AttributeError, TypeError):  # not a table of this code: no axes to compare
            continue
        mine = [k for k in grid.axes if k in theirs]
        if mine != [k for k in theirs if k in mine]:
            logger.warning("%s: axes %s, in this order, are %s in grid %s (recorded in %s): a cell's folder names "
                           "the axes in the grid's order, so the settings the grids share get other folders and are "
                           "computed again; list the axes in that grid's order", grid.source, ", ".join(mine),
                           ", ".join(k for k in theirs if k in mine), path.stem, path)


def sweep_fingerprint(grid: Grid, base: DemoConfig | None = None) -> Any:
    """The fingerprint of what a sweep directory's cells share: the base config less its training keys."""
    from safealign.io.rundir import make_fingerprint

    base = base or grid.setting_config(grid.settings()[0])
    default = to_dict(DemoConfig())

    def shared(config: DemoConfig) -> dict[str, Any]:
        values = {k: v for k, v in to_dict(config).items() if k not in ("train", *_SWEEP_OWNED)}
        # the demo keys that change training only (the safety prefix) belong to each cell (its fingerprint holds
        # them), so a grid over any of their values shares the directory. Kept in, at the default, rather than left
        # out: directories recorded when the first setting's prefix counted hold it so (every grid that could share
        # one started at the default), and a key they hold that this one lacked would refuse them
        return {**values, **{k: default[k] for k in _TRAINING_DEMO_KEYS}}

    # with the defaults, a sweep started by earlier code resumes while settings added since stay at their defaults
    return make_fingerprint("sweep", shared(base), defaults=shared(DemoConfig()))


def run_sweep(grid: Grid) -> ClaimedRun:
    """Train and evaluate every unfinished cell this worker can claim; with every cell finished, write the table.

    Any number of workers (processes, on one host or several sharing the folder) may run this on one sweep
    directory at once (docs/sweep.md): a worker claims a cell with a lock file in it, so each cell is computed
    once, and the shared steps (pairs, the base model's evaluation, reference caches) run under locks too."""
    from safealign.pipelines.demo import prompt_sets

    started = time.time()
    root = Path(grid.output_dir)
    base = grid.setting_config(grid.settings()[0])
    check_sweep_dir(grid, base)
    mark_results(root)  # inside a git repository, `git add` takes the finished results only (committable.py)
    prompts = prompt_sets(base)  # the same for every setting: axes vary training only
    pairs = root / "pairs.jsonl"
    # seeds outermost: every setting and variant gets its first seed before any gets a second, so a sweep
    # stopped part-way still compares every setting (on fewer seeds) instead of a few settings fully
    # a cell shared by several settings (a variant the swept prefix does not change) is listed once
    unique: dict[Path, tuple[dict[str, Any], str, int]] = {}
    for seed in grid.seeds:
        for setting in grid.settings():
            for variant in grid.variants:
                unique.setdefault(cell_dir(grid, setting, variant, seed), (setting, variant, seed))
    cells = list(unique.values())
    if not pairs.exists() or any(not (cell_dir(grid, *c) / "cell.json").exists()
                                 and not (cell_dir(grid, *c) / DIVERGED).exists() for c in cells):
        _shared_steps(base, prompts, root)
    if (root / BEFORE / "figures.json").is_file():  # written last: finished, though its worker may have been killed
        release(root / BEFORE)  # before releasing it, and shared steps found done are not run again
    from safealign.io.rundir import file_digest

    pairs_digest = file_digest(pairs)  # the pairs are final here: hashed once, not once per cell
    computed, held = _claim_cells(grid, cells, pairs, pairs_digest, prompts)
    skipped = len(cells) - computed - len(held)
    logger.info("sweep: %d cell(s) computed, %d already finished", computed, skipped)
    run = ClaimedRun(computed, skipped, held, label_parts=2)  # cells/<setting>/<variant-seed>
    if held:  # the last of them writes the table if it runs this grid; else `--table` (cli/sweep.py says so)
        logger.info("sweep: no unclaimed cell left; %d still running elsewhere: %s", len(held), run.describe_held())
        return run
    run.table = sweep_table(grid)
    run.table.update(computed=computed, skipped=skipped, wall_seconds=round(time.time() - started, 1))
    if not grid.narrowed:  # a view (other seeds, variants, axes on the command line) leaves the grid's table alone
        write_tables(grid, run.table)
    return run


def narrowed_note(grid: Grid) -> str:
    """What a view of the directory says instead of writing the grid's table."""
    return (f"(settings overridden on the command line: {grid.table_path('.json')} is left as the grid file "
            "defines it)")


def write_tables(grid: Grid, table: dict[str, Any]) -> None:
    """``tables/<grid>.json`` and ``.md`` under the sweep's directory (each written whole: safe beside workers)."""
    grid.table_path(".json").parent.mkdir(parents=True, exist_ok=True)
    write_json(grid.table_path(".json"), table)
    text = f"{format_table(table, markdown=True)}\n{progress_line(table)}\n"
    write_atomic(grid.table_path(".md"), text.encode())


def _shared_steps(base: DemoConfig, prompts: dict[str, Any], root: Path) -> None:
    """The pairs and the base model's evaluation, which every cell reads, built (or resumed: both are
    resumable) by one worker at a time under ``shared.lock``. Recorded done (:func:`_shared_done`), they are
    skipped: no model load, and no file of committed results rewritten by every worker that starts. A worker that
    waited while another ran them to the end skips them; one that finds the lock free resumes them."""
    from safealign.io.lockfile import run_once
    from safealign.models import load_model
    from safealign.pipelines.demo import build_pairs, evaluate

    if _shared_done(root):
        return

    def build() -> None:
        model, tokenizer = load_model(base.model)
        build_pairs(base, model, tokenizer, prompts, root / "pairs.jsonl")
        hold_back(root / BEFORE)
        figures = evaluate(base, model, tokenizer, prompts, root / BEFORE)  # resumes its records
        write_json(root / BEFORE / "figures.json", {k: f.to_json() for k, f in figures.items()})
        release(root / BEFORE)

    run_once(root / "shared.lock", root / SHARED_DONE, "sweep: the pairs and the base model's evaluation", build,
             record=lambda: _shared_digests(root))


def _shared_digests(root: Path) -> dict[str, str]:
    """What the shared-steps marker records besides its holder: the digests of the pairs and base figures made."""
    from safealign.io.rundir import file_digest

    return {"pairs": file_digest(root / "pairs.jsonl"), "figures": file_digest(root / BEFORE / "figures.json")}


def _shared_done(root: Path) -> bool:
    """Whether the shared steps are recorded done: the pairs, the base model's figures (written last) and the
    marker of the worker that finished them all exist, and the digests the marker records are those of the files
    here (a marker of earlier code records none: its existence says they finished). Delete ``shared.json`` to have
    the next worker resume them (e.g. for a figure new code evaluates)."""
    try:
        marker = json.loads((root / SHARED_DONE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or not isinstance(marker.get("holder"), dict) or \
            not (root / "pairs.jsonl").is_file() or not (root / BEFORE / "figures.json").is_file():
        return False
    recorded = {k: marker[k] for k in ("pairs", "figures") if marker.get(k) is not None}
    return not recorded or recorded == {k: v for k, v in _shared_digests(root).items() if k in recorded}


def _claim_cells(grid: Grid, cells: list[tuple[dict[str, Any], str, int]], pairs: Path, pairs_digest: str | None,
                 prompts: dict[str, Any]) -> tuple[int, list[tuple[Path, Holder]]]:  # fmt: skip
    """Compute every unfinished cell this worker can claim, in order, looking again after each pass (a cell
    held by a worker that has since died is free by then). Returns the number computed and the cells other
    live workers hold once no unfinished cell is left to claim."""
    from safealign.io.lockfile import Job, claim_each

    configs = {setting_name(s): grid.setting_config(s) for s in grid.settings()}
    # built once: a config and a fingerprint take a tenth of a second each, and a worker passes over every cell
    # several times
    jobs = []
    for setting, variant, seed in cells:
        config, cell = configs[setting_name(setting)], cell_dir(grid, setting, variant, seed)
        fingerprint = _cell_fingerprint(config, variant, seed, pairs_digest)
        jobs.append(Job(cell / CELL_LOCK, functools.partial(_is_finished, cell, fingerprint),
                        functools.partial(_run_cell, config, variant, seed, pairs, prompts, cell, fingerprint,
                                          Path(grid.output_dir) / BEFORE)))
    return claim_each(jobs)


def _is_finished(cell: Path, fingerprint) -> bool:
    """Whether ``cell`` finished, or its training diverged (:data:`DIVERGED`: never claimed again, so one diverging
    cell does not stop every worker that would claim it); such a cell is released (git may take it): a worker
    killed between its record and its release left it held back, and it is never run again to release it."""
    if _finished(cell, fingerprint) is None and _diverged(cell, fingerprint) is None:
        return False
    release(cell)  # a stat where there is no hold
    return True


def _run_cell(config: DemoConfig, variant: str, seed: int, pairs: Path, prompts: dict[str, Any], cell: Path,
              fingerprint, before: Path) -> None:  # fmt: skip
    from safealign.io.rundir import claim_run_dir
    from safealign.pipelines.demo import evaluate, load_trained, train_stage
    from safealign.train.trainer import NonFiniteLossError

    started = time.time()
    claim_run_dir(cell, fingerprint, outputs=("train", "eval", "cell.json", DIVERGED), overwrite_flag=FRESH)
    hold_back(cell)  # git takes a cell once finished: a half-copied one would resume from missing checkpoints
    logger.info("sweep: cell %s", cell)
    try:
        final = train_stage(config, variant, seed, pairs, cell / "train")
    except NonFiniteLossError as exc:  # a setting that diverges is a result of the sweep, not a reason to stop it
        logger.warning("sweep: cell %s diverged (%s); recorded in %s, and the sweep goes on", cell, exc, DIVERGED)
        write_json(cell / DIVERGED, {"fingerprint": fingerprint.digest, "variant": variant, "seed": seed,
                                     "status": "diverged", "step": exc.step, "message": str(exc),
                                     "wall_seconds": round(time.time() - started, 1)})
        release(cell)
        return
    model, tokenizer = load_trained(final)
    figures = evaluate(config, model, tokenizer, prompts, cell / "eval", before=before)
    del model
    write_json(cell / "cell.json", {"fingerprint": fingerprint.digest, "variant": variant, "seed": seed,
                                    "figures": {k: f.to_json() for k, f in figures.items()},
                                    "wall_seconds": round(time.time() - started, 1)})
    release(cell)
    # a finished cell is never resumed: its checkpoints (optimizer state) would only fill the disk over 120 cells
    for checkpoint in (cell / "train").glob("checkpoint-*"):
        shutil.rmtree(checkpoint)


def sweep_table(grid: Grid) -> dict[str, Any]:
    """Per setting: each metric's mean over seeds per variant (with a hierarchical interval where the metric
    has per-prompt outcomes) and every compared pair's hierarchical paired difference per metric, from the
    cells finished so far (a pair is compared on the seeds both of its cells finished)."""
    from safealign.eval.paired import metric_differences, metric_intervals
    from safealign.io.rundir import check_recorded
    from safealign.pipelines.demo import stage_outcomes

    # the cells were computed under the directory's recorded config: a table under another (e.g. `--table
    # epochs=2`) would present them as that config's results
    check_recorded(grid.output_dir, sweep_fingerprint(grid), overwrite_flag=FRESH)
    from safealign.io.rundir import file_digest

    pairs_digest = file_digest(Path(grid.output_dir) / "pairs.jsonl")
    rows = []
    records: dict[Path, dict[str, Any] | None] = {}  # every distinct cell: its cell.json once finished
    diverged_cells: dict[Path, dict[str, Any]] = {}  # every distinct cell whose training diverged: its record
    has: dict[Path, set[str]] = {}  # every distinct finished cell: the metrics it has a value of
    for setting in grid.settings():
        config = grid.setting_config(setting)
        cells = {(v, s): cell_dir(grid, setting, v, s) for v in grid.variants for s in grid.seeds}
        fingerprints = {(v, s): _cell_fingerprint(config, v, s, pairs_digest) for v, s in cells}
        # finished under this setting's config (a cell trained under other training keys is not this table's)
        done = {key: record for key, path in cells.items()
                if (record := _finished(path, fingerprints[key])) is not None}
        # diverged: no figures, so left out of every mean and difference, and counted where they are shown
        diverged = {key: record for key, path in cells.items()
                    if key not in done and (record := _diverged(path, fingerprints[key])) is not None}
        for key, path in cells.items():
            records.setdefault(path, done.get(key))
            if key in diverged:
                diverged_cells[path] = diverged[key]
        outcomes = {key: stage_outcomes(config, cells[key] / "eval") for key in done}
        for key in done:
            has[cells[key]] = {m for m, v in _cell_values(done[key], outcomes[key]).items() if v is not None}
        means: dict[str, dict[str, float | None]] = {}
        counts: dict[str, dict[str, int]] = {}  # the seeds each mean is over: fewer for a metric some cells lack
        # the most prompts a cell's mean is over (each cell's own scored prompts): a difference, over the prompts
        # every compared cell scored, is marked where it is over fewer (safealign/report/numbers.py)
        prompt_counts: dict[str, dict[str, int]] = {}
        intervals: dict[str, dict[str, list[float]]] = {}
        for variant in grid.variants:
            per_metric: dict[str, list[float]] = {}
            prompts = prompt_counts[variant] = {}
            for key in (k for k in done if k[0] == variant):
                for metric, value in _cell_values(done[key], outcomes[key]).items():
                    per_metric.setdefault(metric, []).extend([] if value is None else [value])
                for metric, scored in outcomes[key].items():
                    prompts[metric] = max(len(scored), prompts.get(metric, 0))
            means[variant] = {m: statistics.fmean(vs) if vs else None for m, vs in per_metric.items()}
            counts[variant] = {m: len(vs) for m, vs in per_metric.items()}
            intervals[variant] = metric_intervals({s: o for (v, s), o in outcomes.items() if v == variant},
                                                  resamples=grid.resamples)
        differences = [{"a": a, "b": b, "metrics": metric_differences(
            {s: o for (v, s), o in outcomes.items() if v == a}, {s: o for (v, s), o in outcomes.items() if v == b},
            resamples=grid.resamples, label=f"sweep: {setting_name(setting)}: {a} − {b}"),
            "seeds": sum((a, s) in done and (b, s) in done for s in grid.seeds)}  # both finished: the full count
            for a, b in grid.comparisons()]
        rows.append({"setting": setting, "name": setting_name(setting), "cells_finished": len(done),
                     "cells": len(cells), "seeds_finished": {v: sum(k[0] == v for k in done) for v in grid.variants},
                     "diverged": {v: [{"seed": s, "step": diverged[(v, s)].get("step")} for s in grid.seeds
                                      if (v, s) in diverged]
                                  for v in grid.variants if any(k[0] == v for k in diverged)},
                     "means": means, "seed_counts": counts, "prompt_counts": prompt_counts, "ci95": intervals,
                     "differences": differences})
    before = Path(grid.output_dir) / BEFORE
    base = ({k: Figure.from_json(v).value for k, v in json.loads((before / "figures.json").read_text()).items()}
            if (before / "figures.json").is_file() else {})
    if base:  # metrics under judges added later (safealign judge records): from the base model's outcomes
        judged = stage_outcomes(grid.setting_config(grid.settings()[0]), before)
        base.update({m: _mean(o) for m, o in judged.items() if m not in base})
    return {"output_dir": grid.output_dir, "name": grid.name, "variants": grid.variants, "seeds": grid.seeds,
            "axes": grid.axes, "compared": [list(c) for c in grid.comparisons()], "resamples": grid.resamples,
            "base": base, "settings": rows, "progress": _progress(records, len(diverged_cells)),
            "partial_metrics": _partial(has)}


def _partial(has: dict[Path, set[str]]) -> dict[str, list[int]]:
    """metric -> [cells that have it, finished cells] for each metric some finished cells have and others lack (ASR
    under a judge run on some cells, the open refusal margin before ``--score-open-margins``): it counts as missing
    on those cells, for that metric alone."""
    counts = {m: sum(m in metrics for metrics in has.values()) for m in sorted(set().union(*has.values()))}
    return {m: [n, len(has)] for m, n in counts.items() if n < len(has)}


def _cell_values(record: dict[str, Any], outcomes: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """A finished cell's value per metric: its recorded figures, and for a metric the cell's figures lack (ASR
    under a judge added later by ``safealign judge records``) the mean of its per-prompt outcomes."""
    values = {m: Figure.from_json(f).value for m, f in record["figures"].items()}
    return {**values, **{m: _mean(o) for m, o in outcomes.items() if m not in values}}


def _mean(outcomes: dict[str, Any]) -> float | None:
    return statistics.fmean(float(v) for v in outcomes.values()) if outcomes else None


def _progress(records: dict[Path, dict[str, Any] | None], diverged: int = 0) -> dict[str, Any]:
    """Distinct cells (a cell several settings share counts once), how many finished and how many diverged (no
    work left in either), the median and the sum of the recorded wall times of the finished cells (a resumed cell
    records only its last part, so both are low estimates)."""
    finished = [r for r in records.values() if r is not None]
    walls = [r["wall_seconds"] for r in finished if r.get("wall_seconds") is not None]
    return {"cells": len(records), "finished": len(finished), "diverged": diverged,
            "median_cell_seconds": statistics.median(walls) if walls else None,
            "recorded_cell_seconds": sum(walls)}


def progress_line(table: dict[str, Any]) -> str:
    """``16/120 cells finished (2.9 h of recorded cell time); median 10.5 min per finished cell: about 18.2 h of
    one worker left`` (one process)."""
    progress = table.get("progress")
    if not progress:
        return ""
    line = f"{progress['finished']}/{progress['cells']} cells finished"
    if progress.get("diverged"):  # tables written before it was recorded lack it
        line += f", {progress['diverged']} diverged"
    if progress.get("recorded_cell_seconds"):  # tables written before the sum was recorded lack it
        line += f" ({progress['recorded_cell_seconds'] / 3600:.1f} h of recorded cell time)"
    left = progress["cells"] - progress["finished"] - progress.get("diverged", 0)
    if progress["median_cell_seconds"] and left:
        minutes = progress["median_cell_seconds"] / 60
        line += (f"; median {minutes:.1f} min per finished cell: about {left * minutes / 60:.1f} h of one worker "
                 "left (divide by the workers running)")
    return line


def format_table(table: dict[str, Any], *, markdown: bool = False, metrics: list[str] | None = None) -> str:
    """A grid of several settings: one block per metric, a row per setting with each variant's mean and every
    compared pair's difference. A grid of one setting (methods side by side): a row per method with every
    metric's mean and interval, then a row per compared pair with every metric's difference. ``metrics``: only
    these, in this order (default: every metric recorded)."""
    recorded = list(dict.fromkeys(m for row in table["settings"] for v in row["means"].values() for m in v))
    unknown = [m for m in metrics or [] if m not in recorded]
    if unknown and recorded:
        raise UserError(f"metrics: {', '.join(unknown)} not recorded; the table has {', '.join(recorded)}")
    metrics = metrics or recorded
    lines = [f"sweep {table['output_dir']} ({table.get('name', 'sweep')}): means over the finished seeds of "
             f"{table['seeds']} (each variant's own while some are missing: `cells`); a difference is over the seeds "
             "both of its variants finished (with their count where fewer than a variant finished); 95% intervals: "
             "seeds and prompts crossed, the crossed random-effects t (Satterthwaite df), a crossed bootstrap for a "
             "mean whose seeds scored different prompts, and the exact binomial bound over the prompts where no "
             "outcome varied (no discordant prompt: ±0.088 at 40 prompts)"]
    lines += _partial_notes(table, metrics) + _diverged_notes(table) + _prompt_notes(table, metrics)
    if len(table["settings"]) == 1:
        return "\n".join(lines + _methods_blocks(table, table["settings"][0], metrics, markdown))
    header = ["setting", *table["variants"], *(f"{a} − {b} [95% hierarchical]" for a, b in table["compared"]), "cells"]
    for metric in metrics:
        body = []
        for row in table["settings"]:
            values = [numbers.mean_cell(row, v, metric, numbers.value(row["means"][v].get(metric)))
                      + numbers.diverged_mark(row, v) for v in table["variants"]]
            diffs = [numbers.difference_cell(row, d, metric) for d in row["differences"]]
            body.append([row["name"], *values, *diffs,
                         f"{row['cells_finished']}/{row['cells']}{numbers.diverged_mark(row)}"])
        if metric in table.get("base", {}):  # the untrained model, for scale
            body.append(["(base model)", *[numbers.value(table["base"][metric])] * len(table["variants"]),
                         *["-"] * len(table["compared"]), "-"])
        lines += ["", f"### {metric}" if markdown else metric, *numbers.render([header, *body], markdown)]
    return "\n".join(lines)


def _partial_notes(table: dict[str, Any], metrics: list[str]) -> list[str]:
    """A line per shown metric some finished cells lack (:func:`_partial`), saying how it is counted."""
    from safealign.pipelines.demo_margin import OPEN_FIGURE

    notes = []
    for metric, (n, finished) in (table.get("partial_metrics") or {}).items():  # tables written before: none
        if metric in metrics:
            notes.append(f"{metric}: on {n} of {finished} finished cells; missing on the others, for this metric "
                         "alone (its means and differences are over the seeds that have it, marked when fewer)"
                         + ("; `safealign sweep GRID --score-open-margins` scores it on cells finished before it "
                            "existed" if metric == OPEN_FIGURE else ""))
    return notes


def _diverged_notes(table: dict[str, Any]) -> list[str]:
    """A line naming the cells whose training diverged (``(1 diverged)`` beside the means they are missing from)."""
    cells = [f"{row['name']}/{variant}-seed{d['seed']} at step {d['step']}" for row in table["settings"]
             for variant, seeds in (row.get("diverged") or {}).items() for d in seeds]  # tables before: none
    if not cells:
        return []
    return [f"diverged (a non-finite training loss; no figures, so each is left out of every mean and difference of "
            f"its setting, marked `(N diverged)`; delete its folder to train it again): {'; '.join(cells)}"]


def _prompt_notes(table: dict[str, Any], metrics: list[str]) -> list[str]:
    """A line where a shown difference is over fewer prompts than a mean beside it (numbers.difference_cell)."""
    marked = any(numbers.prompts_short(row, d, m) for row in table["settings"] for d in row["differences"]
                 for m in metrics)
    return ["a difference marked `(N of M prompts)` is over the N prompts every compared cell scored, while the "
            "means are over each cell's own scored prompts (at most M: a judge or score that left some unscored)"
            ] if marked else []


def _methods_blocks(table: dict[str, Any], row: dict[str, Any], metrics: list[str], markdown: bool) -> list[str]:
    body = [["method", "seeds", *metrics]]
    for variant in table["variants"]:
        ci95 = row["ci95"].get(variant, {})
        cells = [numbers.mean_cell(row, variant, m, numbers.with_interval(row["means"][variant].get(m), ci95.get(m)))
                 for m in metrics]
        body.append([variant, f"{row['seeds_finished'][variant]}{numbers.diverged_mark(row, variant)}", *cells])
    if table.get("base"):
        body.append(["(base model)", "-", *(numbers.value(table["base"].get(m)) for m in metrics)])
    out = ["", f"{row['cells_finished']}/{row['cells']} cells finished"]
    out += [""] + numbers.render(body, markdown)
    if row["differences"]:
        diffs = [["difference", *metrics]]
        diffs += [[f"{d['a']} − {d['b']}", *(numbers.difference_cell(row, d, m) for m in metrics)]
                  for d in row["differences"]]
        out += ["", "paired differences (mean over the seeds both finished, 95% hierarchical interval):", ""]
        out += numbers.render(diffs, markdown)
    return out
