"""``safealign.io`` is the lowest layer above the foundation: it may import the standard library, safealign.errors
and safealign.files only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import safealign.io

IO_DIR = Path(safealign.io.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_io_imports_only_stdlib_and_errors():
    files = sorted(IO_DIR.glob("*.py"))
    assert len(files) >= 3
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            # safealign.files: the foundation's file helpers (stdlib and errors only), where write_atomic lives so
            # that safealign.config can write config.yaml atomically without importing a layer above it
            allowed = top in sys.stdlib_module_names or top == "__future__" or name in ("safealign.errors",
                                                                                         "safealign.files")
            allowed = allowed or name.startswith("safealign.io")
            assert allowed, f"{path.name} imports {name}"
