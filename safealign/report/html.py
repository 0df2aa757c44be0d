"""Render a :class:`Document` as one self-contained HTML page (inline CSS, plots as data: URIs).

Every piece of text goes through :func:`esc` (``html.escape`` with quotes), whether it lands in an
element or an attribute: model outputs, prompts, file names and config values are all untrusted.
A Content-Security-Policy forbids scripts and remote loads as a second line of defence.
"""

from __future__ import annotations

import base64
import html

from safealign.report.document import Block, Code, Document, Examples, Para, Plot, Section, Table
from safealign.report.results import OWN_PROMPTS, Answer

PREFILL_LEGEND = "greyed: the attack's prefill, not the model's text"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#fff; --soft:#f6f8fa; --accent:#0969da;
        --warn:#9a6700; --warnbg:#fff8c5; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color:var(--fg);
       background:var(--bg); }
header { padding:28px 40px 18px; border-bottom:1px solid var(--line); background:var(--soft); }
header h1 { margin:0 0 4px; font-size:24px; }
header p { margin:0; color:var(--muted); font-size:13px; overflow-wrap:anywhere; }
nav { padding:10px 40px; border-bottom:1px solid var(--line); font-size:13px; }
nav a { color:var(--accent); text-decoration:none; margin-right:16px; white-space:nowrap; }
main { max-width:1180px; padding:8px 40px 60px; }
section { margin-top:30px; }
h2 { font-size:19px; border-bottom:1px solid var(--line); padding-bottom:6px; }
p.note { color:var(--muted); font-size:13px; margin:6px 0; }
p.warn { color:var(--warn); background:var(--warnbg); padding:6px 10px; border-radius:6px; font-size:13px; }
.table-wrap { overflow-x:auto; margin:10px 0 16px; }
table { border-collapse:collapse; font-size:13px; font-variant-numeric:tabular-nums; }
caption { caption-side:bottom; text-align:left; color:var(--muted); font-size:12px; padding-top:4px; }
th, td { border:1px solid var(--line); padding:5px 10px; text-align:left; vertical-align:top; }
th { background:var(--soft); font-weight:600; white-space:normal; min-width:60px; }
td { white-space:nowrap; }
td:first-child { font-weight:600; }
img.plot { max-width:100%; height:auto; display:block; margin:10px 0; border:1px solid var(--line); border-radius:6px; }
details { margin:8px 0; }
summary { cursor:pointer; color:var(--accent); font-size:13px; overflow-wrap:anywhere; }
pre { background:var(--soft); border:1px solid var(--line); border-radius:6px; padding:10px 12px; margin:6px 0;
      font:12px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space:pre-wrap;
      overflow-wrap:anywhere; max-height:420px; overflow:auto; }
.example { border:1px solid var(--line); border-radius:8px; margin:14px 0; overflow:hidden; }
.example h3 { margin:0; padding:8px 12px; font-size:14px; background:var(--soft); border-bottom:1px solid var(--line);
              overflow-wrap:anywhere; }
.example .prompt { margin:10px 12px; }
.answers { display:grid; grid-template-columns:repeat(auto-fit, minmax(300px, 1fr)); gap:10px; padding:0 12px 12px; }
.answer h4 { margin:0; font-size:13px; }
.answer .prompt { margin:6px 0; }
.prefill { color:var(--muted); background:var(--line); font-style:italic; }
.verdict { color:var(--muted); font-size:12px; }
.label { font-size:12px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _truncate(text: str, limit: int) -> tuple[str, str]:
    if len(text) <= limit:
        return text, ""
    return text[:limit] + " …", f" (truncated; {len(text)} characters in all)"


def _table(block: Table) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in block.columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows)
    caption = f"<caption>{esc(block.caption)}</caption>" if block.caption and not block.collapsed else ""
    table = f'<div class="table-wrap"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    if block.collapsed:
        return f"<details><summary>{esc(block.caption or 'table')}</summary>{table}</details>"
    return table


def _examples(block: Examples) -> str:
    out = []
    for ex in block.items:
        parts = [f'<div class="example"><h3>{esc(ex.attack)} · {esc(ex.behavior_id)}</h3>',
                 _prompt("prompt", ex.prompt, block.max_chars) if ex.prompt is not None else
                 f'<p class="note prompt">{esc(OWN_PROMPTS)}</p>', '<div class="answers">']  # fmt: skip
        parts += [_answer(answer, block.max_chars) for answer in ex.answers]
        out.append("".join(parts) + "</div></div>")
    return "\n".join(out)


def _prompt(label: str, text: str, limit: int) -> str:
    shown, note = _truncate(text, limit)
    return f'<div class="prompt"><div class="label">{esc(label)}{esc(note)}</div><pre>{esc(shown)}</pre></div>'


def _answer(answer: Answer, limit: int) -> str:
    """The stage's own prompt where the stages differ, then its answer: the attack's prefill greyed in a span of its
    own, the model's continuation after it (each escaped and cut at ``limit``)."""
    prompt = _prompt(f"prompt sent to {answer.stage}", answer.prompt, limit) if answer.prompt is not None else ""
    (prefill, cut_prefill), (text, cut_text) = _truncate(answer.prefill, limit), _truncate(answer.text, limit)
    total = len(answer.prefill) + len(answer.text)
    note = f" (truncated; {total} characters in all)" if cut_prefill or cut_text else ""
    span = f'<span class="prefill">{esc(prefill)}</span>' if answer.prefill else ""
    legend = f" · {PREFILL_LEGEND}" if answer.prefill else ""
    return (f'<div class="answer"><h4>{esc(answer.stage)}</h4>{prompt}'
            f'<div class="verdict">{esc(answer.verdicts)}{esc(legend)}{esc(note)}</div>'
            f"<pre>{span}{esc(text)}</pre></div>")  # fmt: skip


def _block(block: Block) -> str:
    if isinstance(block, Para):
        return f'<p class="{esc(block.tone)}">{esc(block.text)}</p>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Plot):
        data = base64.b64encode(block.png).decode("ascii")
        return f'<img class="plot" alt="{esc(block.alt)}" src="data:image/png;base64,{data}">'
    if isinstance(block, Examples):
        return _examples(block)
    if isinstance(block, Code):
        return f"<details><summary>{esc(block.title)}</summary><pre>{esc(block.text)}</pre></details>"
    raise TypeError(f"unknown report block {type(block).__name__}")


def _section(section: Section) -> str:
    body = "\n".join(_block(b) for b in section.blocks)
    return f'<section id="{esc(section.anchor)}"><h2>{esc(section.title)}</h2>\n{body}\n</section>'


def render_html(doc: Document) -> str:
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in doc.sections)
    sections = "\n".join(_section(s) for s in doc.sections) or "<p class=\"warn\">Nothing to report.</p>"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(doc.title)}</title><style>{CSS}</style></head>\n<body>"
        f"<header><h1>{esc(doc.title)}</h1><p>{esc(doc.subtitle)}</p></header>"
        f"<nav>{nav}</nav>\n<main>{sections}</main></body></html>\n"
    )
