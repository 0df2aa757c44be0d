"""Import directions between safealign's layers (docs/design.md, "Layers"; an arrow may only point down).

Every ``import safealign.X`` / ``from safealign.X import ...`` in safealign/, including the lazy ones inside
functions, is read with ``ast``. A module may import its own layer's package and any layer below it.
Strings that name modules (the lazy plug-in tables) are not imports and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "safealign"

# bottom to top; a package may import packages of its own row and of the rows above it in this table
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "__main__", "types", "registry", "config", "errors", "interrupt", "checks", "files", "params"),
    ("io",),           # JSONL append/read, typed run records
    ("models",),       # loading weights, LoRA, model identity
    ("data",),         # formats, transforms, tokenization: pure, no model calls
    ("losses",),       # pure functions over log-probs
    ("train",),        # log-probs, reference, per-pair gradients (grads.py), trainer, probe callback
    ("eval",),         # backends, attacks, judges, reward-model scoring, helpfulness, eval pipeline
    ("online",),       # reward/cost model training, online RLOO/GRPO/IPO, Safe RLHF: judges are reward sources
    ("diagnostics",),  # ranking accuracy, anchor gap; entanglement re-exported from train.grads
    ("report",),       # HTML/markdown from run directories
    ("pipelines",),    # demo, build-safety, diagnose runners, paired margins: compose everything below
    ("cli",),          # parse arguments, call a pipeline
]
RANK = {name: rank for rank, row in enumerate(LAYERS) for name in row}
FOUNDATION = 0
# __main__ only forwards to the CLI: it is the entry point, not a layer anyone imports
ENTRY_POINTS = {"__main__": "cli"}


def top_level(path: Path, root: Path) -> str:
    return path.relative_to(root).parts[0].removesuffix(".py")


def imported_packages(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line, top-level safealign package)`` of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = ["safealign", *path.relative_to(root).with_suffix("").parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if module == "safealign":  # `from safealign import x`: x is a module or an attribute (__version__)
                modules = [f"safealign.{a.name}" if _is_module(root, a.name) else "safealign" for a in node.names]
            else:
                modules = [module]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] != "safealign":
                continue
            found.append((node.lineno, parts[1] if len(parts) > 1 else "__init__"))
    return found


def _is_module(root: Path, name: str) -> bool:
    return (root / name).is_dir() or (root / f"{name}.py").is_file()


def violations(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        source = top_level(path, root)
        if source not in RANK:
            problems.append(f"{path}: package {source!r} is in no layer; add it to LAYERS in {__file__}")
            continue
        for line, target in imported_packages(path, root):
            if target == source or ENTRY_POINTS.get(source) == target:
                continue
            if target not in RANK:
                problems.append(f"{path}:{line}: imports safealign.{target}, which is in no layer")
            elif RANK[target] > RANK[source] or (RANK[target] == RANK[source] != FOUNDATION):
                problems.append(f"{path}:{line}: {source} (layer {RANK[source]}) imports {target} "
                                f"(layer {RANK[target]}), an arrow pointing up")
    return problems


def test_safealign_imports_only_point_down():
    assert not violations(PACKAGE), "\n".join(violations(PACKAGE))


def test_the_issue_11_directions_are_in_the_table():
    assert RANK["data"] < RANK["eval"] and RANK["train"] < RANK["diagnostics"]
    assert RANK["pipelines"] > max(RANK[p] for p in ("train", "eval", "diagnostics", "report"))
    assert RANK["cli"] == len(LAYERS) - 1


@pytest.mark.parametrize("source, text", [
    ("train/x.py", "def f():\n    from safealign.diagnostics import measure_entanglement\n"),
    ("data/x.py", "import safealign.eval.backends\n"),
    ("data/sub/x.py", "from ...eval import config\n"),
    ("eval/x.py", "from safealign.cli import main\n"),
    ("newpkg/x.py", "import os\n"),
])
def test_the_checker_catches_upward_imports(tmp_path, source, text):
    path = tmp_path / "safealign" / source
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert len(violations(tmp_path / "safealign")) == 1


def test_the_checker_accepts_downward_and_same_package_imports(tmp_path):
    path = tmp_path / "safealign" / "diagnostics" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text("from safealign.train.grads import pair_entanglement\nfrom . import y\nimport safealign.types\n"
                    "from safealign import errors\n")
    assert violations(tmp_path / "safealign") == []


def _readme_section(title: str) -> str:
    text = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_layout_names_every_layer_in_this_order_and_every_top_level_folder():
    layout = _readme_section("Layout")
    tree = layout.split("```", 2)[1]
    packages = [name for row in LAYERS[1:] for name in row]
    positions = [tree.find(f"{name}/") for name in packages]
    assert -1 not in positions, [p for p, at in zip(packages, positions) if at < 0]
    assert positions == sorted(positions), f"README's Layout orders the layers otherwise than {packages}"
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert all(f"{m}.py" in tree for m in modules), [m for m in modules if f"{m}.py" not in tree]
    configs = sorted(p.name for p in (PACKAGE.parent / "configs").iterdir() if p.is_dir())
    assert f"configs/{{{','.join(configs)}}}" in tree
    for folder in ("docs/", "bench/", "tests/", "examples/", "results/"):
        assert folder in tree, folder


def test_the_readme_indexes_every_doc_and_links_the_benchmark_layouts_from_evaluation():
    layout = _readme_section("Layout")
    docs = sorted(p.name for p in (PACKAGE.parent / "docs").glob("*.md"))
    index = [line for line in layout.splitlines() if line.startswith("- `docs/")]
    assert [line.split("`")[1] for line in index] == [f"docs/{name}" for name in docs]
    evaluation = next(b for b in _readme_section("Concepts").split("\n- ") if b.startswith("**Evaluation**"))
    assert "docs/benchmarks.md" in evaluation
