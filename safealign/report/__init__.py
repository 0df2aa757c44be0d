"""Reports from a run directory: one self-contained HTML page and a markdown twin.

``build_report(run_dir)`` reads whatever the directory holds (a ``safealign demo`` run, a training
run, an evaluation, a defense comparison or a sweep), and renders the same numbers twice; see
:mod:`.load` for the layout.
"""

from __future__ import annotations

from pathlib import Path

from safealign.errors import UserError
from safealign.files import check_output_path, write_atomic

__all__ = ["build_report"]


def build_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` (into ``run_dir``, or beside ``out``); return both paths."""
    from safealign.report.document import build_document
    from safealign.report.html import render_html
    from safealign.report.load import load_run
    from safealign.report.markdown import render_markdown

    if out is not None and Path(out).suffix.lower() != ".html":  # its .md twin would be the file itself, or none
        raise UserError(f"--out {out}: name the HTML file (ending in .html); the markdown is written beside it")
    html_path = Path(out) if out else Path(run_dir) / "report.html"
    md_path = html_path.with_suffix(".md")
    if out is not None:  # before the run is read; the default lands in the run directory load_run checks
        check_output_path(html_path, "HTML report")
        check_output_path(md_path, "markdown report")
    data = load_run(run_dir)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(html_path, _utf8(render_html(build_document(data, with_plots=True))))
    write_atomic(md_path, _utf8(render_markdown(build_document(data, with_plots=False))))
    return html_path, md_path


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8. A run file may hold a lone UTF-16 surrogate (a behaviors file or a model's answer
    with ``"\\ud83d"``), which UTF-8 cannot encode: a surrogate pair is joined into its character and a lone
    one shown as U+FFFD, so the report is written instead of failing."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode("utf-8")
