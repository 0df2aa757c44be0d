from __future__ import annotations

import json
from html.parser import HTMLParser

from safealign.report import build_report

from fixture_run import XSS, make_demo_run

ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "h4", "p", "nav", "a",
                "main", "section", "div", "table", "caption", "thead", "tbody", "tr", "th", "td", "img", "details",
                "summary", "pre"}  # fmt: skip


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(text: str):
    parser = TagCollector()
    parser.feed(text)
    return parser.tags


def test_completion_payloads_are_escaped_in_html(demo_report):
    html_path, _ = demo_report
    text = html_path.read_text()
    for raw in XSS:
        assert raw not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in text
    assert "<script" not in text.lower() and "<img src=x" not in text


def _adversarial_names(tmp_path):
    """A run whose stage, attack, judge and category names carry the payload into attribute contexts."""
    run = make_demo_run(tmp_path)
    evil = XSS[1]
    (run / "eval" / "before").rename(run / "eval" / evil)
    summary = json.loads((run / "summary.json").read_text())
    summary[evil] = summary.pop("before")
    (run / "summary.json").write_text(json.dumps(summary))
    jb = run / "eval" / "dpo" / "jailbreak" / "summary.json"
    data = json.loads(jb.read_text())
    data["attacks"][evil] = {evil: data["attacks"]["direct"]["refusal"]}
    data["by_category"][evil] = {evil: {evil: data["attacks"]["direct"]["refusal"]}}
    data["judges"][evil] = {"class": evil}
    jb.write_text(json.dumps(data))
    return run, evil


def test_names_from_files_are_escaped_in_attributes_and_markup(tmp_path):
    run, evil = _adversarial_names(tmp_path)
    html_path, md_path = build_report(run)
    text = html_path.read_text()
    assert evil not in text and "onerror=alert(1)>" not in text
    tags = _tags(text)
    assert {t for t, _ in tags} <= ALLOWED_TAGS
    for tag, attrs in tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,") and attrs["class"] == "plot"
    alts = [a["alt"] for t, a in tags if t == "img"]
    assert any(evil in alt for alt in alts)  # the payload reached an attribute, as inert text
    assert evil.replace("<", "&lt;").replace(">", "&gt;") in md_path.read_text()


def test_html_is_self_contained(demo_report):
    html_path, _ = demo_report
    text = html_path.read_text()
    tags = _tags(text)
    assert {t for t, _ in tags} <= ALLOWED_TAGS
    for tag, attrs in tags:
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not value or value.startswith(("data:image/png;base64,", "#")), (tag, name, value)
    assert "http://" not in text.split("<main>")[0] and "@import" not in text
    assert "default-src 'none'" in text
    # training curves, ASR, over-refusal, MT-Bench and entanglement plots
    assert sum(t == "img" for t, _ in tags) == 5
