"""``.ci/run``: lint and tests decide the exit status; a run that collects no tests fails.

The script's install steps need the network, so the test runs only its checks (the lines after the last
``pip install``) with ``ruff`` and ``pytest`` replaced by stubs that exit with a chosen status.
"""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "run"


def _checks() -> str:
    lines = SCRIPT.read_text().splitlines()
    last_install = max(i for i, line in enumerate(lines) if line.startswith("pip install"))
    return "\n".join(["set -euo pipefail", *lines[last_install + 1:]]) + "\n"


def _run_checks(tmp_path: Path, ruff_rc: int, pytest_rc: int) -> int:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, rc in (("ruff", ruff_rc), ("pytest", pytest_rc)):
        stub = bin_dir / name
        stub.write_text(f"#!/usr/bin/env bash\nexit {rc}\n")
        stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run(["bash", "-c", _checks()], env=env, cwd=tmp_path, check=False).returncode


def test_checks_lint_then_test():
    checks = _checks()
    assert "ruff check safealign tests bench" in checks
    assert checks.index("ruff check") < checks.index("pytest")


@pytest.mark.parametrize(("ruff_rc", "pytest_rc", "expected"), [
    (0, 0, 0),
    (0, 5, 5),  # pytest collected no tests
    (0, 1, 1),
    (1, 0, 1),  # a lint error fails CI before the tests run
])
def test_exit_status(tmp_path, ruff_rc, pytest_rc, expected):
    assert _run_checks(tmp_path, ruff_rc, pytest_rc) == expected
