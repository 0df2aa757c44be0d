"""Reports from a run directory: one self-contained HTML page and a markdown twin.

``build_report(run_dir)`` reads whatever the directory holds (a ``safealign demo`` run, a training
run, an evaluation, a defense comparison or a sweep), and renders the same numbers twice; see
:mod:`.load` for the layout.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_report"]


def build_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` (into ``run_dir``, or beside ``out``); return both paths."""
    from safealign.report.document import build_document
    from safealign.report.html import render_html
    from safealign.report.load import load_run
    from safealign.report.markdown import render_markdown

    data = load_run(run_dir)
    html_path = Path(out) if out else Path(run_dir) / "report.html"
    md_path = html_path.with_suffix(".md")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(build_document(data, with_plots=True)), encoding="utf-8")
    md_path.write_text(render_markdown(build_document(data, with_plots=False)), encoding="utf-8")
    return html_path, md_path
