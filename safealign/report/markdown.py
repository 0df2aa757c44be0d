"""Render a :class:`Document` as markdown for terminals: the same numbers as the HTML, no plots.

Untrusted text in table cells and paragraphs is escaped (``| < > & \\``, the ``](``, ``][``, ``]:`` and
``![`` of link and image syntax, and newlines), and the ``://`` of a bare URL and the ``www.`` of a bare domain,
which GitHub links by themselves, are broken with a zero-width space, so an id or category cannot become a link,
image or HTML; model output and configs go in fenced blocks whose fence is longer than any backtick run inside them.
"""

from __future__ import annotations

import re

from safealign.report.document import Block, Code, Document, Examples, Para, Plot, Table
from safealign.report.results import OWN_PROMPTS, Answer

ZWSP = "\u200b"  # zero-width space: invisible, and breaks a sequence GitHub would turn into a link


def md_escape(text: object) -> str:
    text = str(text).replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("|", "\\|").replace("`", "\\`")
    # A link or image needs "](", "][" or a "[..]:" definition, an image also "![": break exactly those, so
    # bracketed numbers such as a confidence interval [73.9–94.5] stay readable in a terminal.
    text = re.sub(r"\](?=\s*[(\[:])", r"\\]", text).replace("![", "\\![")
    # GitHub's extended autolinks need no syntax at all: "http://host", "www.host"; an invisible break stops them
    text = re.sub(r"(?i)(?<=www)\.", f"{ZWSP}.", text.replace("://", f":{ZWSP}//"))
    return re.sub(r"\s*[\r\n]+\s*", " ", text)


def fenced(text: str, info: str = "") -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def _table(block: Table) -> str:
    lines = []
    if block.caption:
        lines.append(f"_{md_escape(block.caption)}_\n")
    lines.append("| " + " | ".join(md_escape(c) or " " for c in block.columns) + " |")
    lines.append("|" + "|".join("---" for _ in block.columns) + "|")
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in block.rows]
    return "\n".join(lines)


def _examples(block: Examples) -> str:
    out = []
    for ex in block.items:
        shared = f"Prompt:\n\n{fenced(_cut(ex.prompt, block.max_chars), 'text')}" if ex.prompt is not None else \
            md_escape(OWN_PROMPTS)
        out.append(f"#### {md_escape(ex.attack)} · {md_escape(ex.behavior_id)}\n\n{shared}")
        out += [_answer(answer, block.max_chars) for answer in ex.answers]
    return "\n\n".join(out)


def _answer(answer: Answer, limit: int) -> str:
    """The stage's own prompt where the stages differ; the attack's prefill in a block of its own, labelled, before
    the model's continuation (a fence cannot grey part of its text)."""
    parts = [f"**{md_escape(answer.stage)}** ({md_escape(answer.verdicts)}):"]
    if answer.prompt is not None:
        parts += [f"Prompt sent to {md_escape(answer.stage)}:", fenced(_cut(answer.prompt, limit), "text")]
    if answer.prefill:
        parts += ["Prefilled by the attack (not the model's text):", fenced(_cut(answer.prefill, limit), "text"),
                  "The model's continuation:"]
    return "\n\n".join([*parts, fenced(_cut(answer.text, limit), "text")])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]} … [truncated; {len(text)} characters in all]"


def _block(block: Block) -> str:
    if isinstance(block, Para):
        prefix = {"note": "> ", "warn": "> **Warning:** "}.get(block.tone, "")
        return prefix + md_escape(block.text)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Plot):
        return ""  # plots only in the HTML report
    if isinstance(block, Examples):
        return _examples(block)
    if isinstance(block, Code):
        return f"**{md_escape(block.title)}**\n\n{fenced(block.text)}"
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_markdown(doc: Document) -> str:
    parts = [f"# {md_escape(doc.title)}", md_escape(doc.subtitle)]
    for section in doc.sections:
        parts.append(f"## {md_escape(section.title)}")
        parts += [text for text in (_block(b) for b in section.blocks) if text]
    return "\n\n".join(parts) + "\n"
