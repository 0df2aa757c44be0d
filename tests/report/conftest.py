"""Report test fixtures; the synthetic run itself is built by :mod:`fixture_run`."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixture_run import make_demo_run


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """Shared by the tests that only read it (building a report into it is idempotent)."""
    return make_demo_run(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo_report(demo_run) -> tuple[Path, Path]:
    """``(html, md)`` built once from the shared fixture run (rendering plots is slow on small CPUs)."""
    from safealign.report import build_report

    return build_report(demo_run)
