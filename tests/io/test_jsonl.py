"""The one JSONL module: crash repair before appending, the tolerant reader, fsync per batch."""

from __future__ import annotations

import json

import pytest

from safealign.errors import UserError
from safealign.io import jsonl
from safealign.io.jsonl import (
    append_jsonl,
    load_jsonl,
    parse_jsonl,
    read_jsonl,
    write_jsonl,
)


def test_append_then_read_round_trips_text_with_unicode_line_separators(tmp_path):
    path = tmp_path / "r.jsonl"
    rows = [{"id": "a", "text": "line\u2028sep\u0085next"}, {"id": "b", "text": "ü\nnewline inside"}]
    assert append_jsonl(path, rows[:1]) == 1
    append_jsonl(path, rows[1:])
    assert read_jsonl(path) == rows  # str.splitlines would have cut the first record in three
    assert path.read_bytes().count(b"\n") == 2


def test_cut_off_last_line_is_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "te')
    got = load_jsonl(path)
    assert got.rows == [{"id": "a"}] and got.cut_off is True and got.skipped == ()
    assert "r.jsonl:2: skipping a cut-off last line" in caplog.text


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')
    got = load_jsonl(path)
    assert got.rows == [{"id": "a"}, {"id": "b"}] and not got.cut_off


def test_append_after_cut_off_line_drops_the_fragment_and_stays_readable(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "te')
    append_jsonl(path, [{"id": "b"}, {"id": "c"}])
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n{"id": "c"}\n'
    assert load_jsonl(path) == jsonl.JsonlRows([{"id": "a"}, {"id": "b"}, {"id": "c"}], lines=(1, 2, 3))


def test_append_after_complete_unterminated_line_keeps_it(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}')
    append_jsonl(path, [{"id": "b"}])
    assert read_jsonl(path) == [{"id": "a"}, {"id": "b"}]


def test_append_repairs_a_fragment_longer_than_one_tail_block(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "_TAIL_BLOCK", 4)  # the backwards scan must cross block boundaries
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "text": "a long cut-off frag')
    append_jsonl(path, [{"id": "c"}])
    assert read_jsonl(path) == [{"id": "a"}, {"id": "c"}]
    path.write_text('{"id": "only fragment, no newline at all')
    append_jsonl(path, [{"id": "d"}])
    assert path.read_text() == '{"id": "d"}\n'


def test_cut_off_multibyte_character_counts_as_cut_off(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a"}\n' + '{"t": "ü'.encode()[:-1])
    assert load_jsonl(path).cut_off
    append_jsonl(path, [{"id": "b"}])
    assert read_jsonl(path) == [{"id": "a"}, {"id": "b"}]


@pytest.mark.parametrize("bad, problem", [
    ('{"id": "b"', "invalid JSON"), ("[1, 2]", "expected a JSON object, got list"), ("\udcff", "not UTF-8"),
])  # fmt: skip
def test_bad_middle_line_names_file_and_line(tmp_path, bad, problem):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a"}\n\n' + bad.encode("utf-8", "surrogateescape") + b'\n{"id": "c"}\n')
    with pytest.raises(UserError, match=rf"r\.jsonl:3: {problem}"):
        load_jsonl(path)
    lenient = load_jsonl(path, strict=False)
    assert lenient.rows == [{"id": "a"}, {"id": "c"}] and lenient.skipped == (3,) and not lenient.cut_off
    assert lenient.numbered() == [(1, {"id": "a"}), (4, {"id": "c"})]


def test_missing_file_reads_empty_and_directory_is_named(tmp_path):
    assert read_jsonl(tmp_path / "absent.jsonl") == []
    with pytest.raises(UserError, match="expected a JSONL file, found a directory"):
        read_jsonl(tmp_path)


def test_byte_order_mark_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a"}\r\n{"id": "b"}\r\n')
    assert read_jsonl(path) == [{"id": "a"}, {"id": "b"}]


def test_each_append_is_flushed_and_fsynced_once(tmp_path, monkeypatch):
    synced = []
    real = jsonl.os.fsync

    def spy(fd):
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(jsonl.os, "fsync", spy)
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [{"i": i} for i in range(3)])
    append_jsonl(path, [{"i": 3}])
    assert len(synced) == 2 and len(read_jsonl(path)) == 4
    append_jsonl(path, [{"i": 4}], fsync=False)
    assert len(synced) == 2


def test_unserialisable_row_writes_nothing(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [{"i": 0}])
    with pytest.raises(TypeError):
        append_jsonl(path, [{"i": 1}, {"bad": object()}])
    assert read_jsonl(path) == [{"i": 0}]


def test_write_jsonl_replaces_the_file(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("garbage")
    write_jsonl(path, [{"i": 1}])
    assert path.read_text() == '{"i": 1}\n' and not list(tmp_path.glob("*.tmp"))


def test_parse_jsonl_is_strict_about_the_last_line_too():
    assert parse_jsonl('{"a": 1}\n\n[2]\n', "t.jsonl") == [{"a": 1}, [2]]
    with pytest.raises(UserError, match=r"t\.jsonl: line 2: invalid JSON"):
        parse_jsonl('{"a": 1}\n{"a": ', "t.jsonl")
    assert json.loads(jsonl.dumps_line({"a": "ü"})) == {"a": "ü"}


def test_a_lone_surrogate_is_written_as_an_escape_and_reads_back_unchanged(tmp_path):
    """A behaviors file or a remote model's answer may hold "\\ud83d" alone, which UTF-8 cannot encode."""
    path = tmp_path / "r.jsonl"
    lone = json.loads('"half an emoji \\ud83d"')
    append_jsonl(path, [{"t": lone}, {"t": "ü"}])
    write_jsonl(tmp_path / "w.jsonl", [{"t": lone}])
    assert read_jsonl(path) == [{"t": lone}, {"t": "ü"}] and read_jsonl(tmp_path / "w.jsonl") == [{"t": lone}]
    first, second = path.read_text(encoding="utf-8").splitlines()
    assert "\\ud83d" in first and second == '{"t": "ü"}'  # only the line with the surrogate is escaped


def test_non_finite_floats_are_written_as_null(tmp_path):
    """Strict JSON: NaN and Infinity, at any depth, become null (other tools reject NaN/Infinity)."""
    path = tmp_path / "r.jsonl"
    nan, inf = float("nan"), float("inf")
    append_jsonl(path, [{"loss": nan, "nested": {"x": [1.5, inf, -inf]}, "t": (nan, "a")}])
    write_jsonl(tmp_path / "w.jsonl", [{"x": nan}])

    def reject(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    raw = path.read_text() + (tmp_path / "w.jsonl").read_text()
    rows = [json.loads(line, parse_constant=reject) for line in raw.splitlines()]
    assert rows == [{"loss": None, "nested": {"x": [1.5, None, None]}, "t": [None, "a"]}, {"x": None}]
    assert jsonl.dumps_line({"a": 1.0}) == '{"a": 1.0}\n'
