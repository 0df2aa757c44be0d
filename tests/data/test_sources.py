"""Readers: every file kind yields the same (row, record) pairs; unreadable input raises ValueError."""

from __future__ import annotations

import gzip
import json

import pytest

from safealign.data.sources import file_kind, read_rows

RECORDS = [{"prompt": "p0", "chosen": "c0", "rejected": "r0"}, {"prompt": "p1", "chosen": "c1", "rejected": "r1"}]
EXPECTED = list(enumerate(RECORDS))


def _jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_jsonl_with_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n" + json.dumps(RECORDS[1]) + "\n")
    assert list(read_rows(path)) == EXPECTED


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(_jsonl(RECORDS))
    assert list(read_rows(path)) == EXPECTED


@pytest.mark.parametrize("payload", [RECORDS, {"data": RECORDS}])
def test_json_list_or_wrapped_list(tmp_path, payload):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(payload))
    assert list(read_rows(path)) == EXPECTED


def test_csv_and_tsv(tmp_path):
    (tmp_path / "d.csv").write_text('prompt,chosen,rejected\np0,c0,r0\n"p1",c1,r1\n')
    (tmp_path / "d.tsv").write_text("prompt\tchosen\trejected\np0\tc0\tr0\np1\tc1\tr1\n")
    assert list(read_rows(tmp_path / "d.csv")) == EXPECTED
    assert list(read_rows(tmp_path / "d.tsv")) == EXPECTED


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "d.parquet")
    assert list(read_rows(tmp_path / "d.parquet")) == EXPECTED


def test_limit(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(_jsonl(RECORDS * 3))
    assert [row for row, _ in read_rows(path, limit=4)] == [0, 1, 2, 3]


def test_file_kind():
    from pathlib import Path

    assert [file_kind(Path(n)) for n in ("a.JSONL.gz", "a.ndjson", "a.json", "a.csv.gz", "a.parquet")] == [
        "jsonl", "jsonl", "json", "csv", "parquet"
    ]


def test_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"d\.jsonl: line 2: invalid JSON"):
        list(read_rows(path))


def test_non_object_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"d\.jsonl: row 1: expected a JSON object, got list"):
        list(read_rows(path))


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"d\.jsonl\.gz: cannot read file"):
        list(read_rows(path))


def test_csv_row_with_extra_fields(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen\na,b\na,b,c\n")
    with pytest.raises(ValueError, match=r"d\.csv: row 1: more fields than the header has \(2\)"):
        list(read_rows(path))


@pytest.mark.parametrize("text, line", [
    ('prompt,chosen,rejected\np0,c0,r0\n"p1 with a stray quote,c1,r1\np2,c2,r2\np3,c3,r3\n', 3),
    ('prompt,chosen,rejected\n"p0\nsecond line",c0,r0\np1,"c1 never closed,r1\np2,c2,r2', 4),  # after a good one
    ('prompt,chosen,rejected\np0,c0,"r0', 2),  # the last field of the file
])
def test_csv_quote_never_closed_names_the_line_instead_of_swallowing_the_rest(tmp_path, text, line):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"d\.csv: line {line}: a quoted field opens there and is never closed"):
        list(read_rows(path))


def test_csv_quotes_the_lenient_reader_accepts_still_read(tmp_path):
    """A quote inside an unquoted field, text after a closing quote, a quoted field spanning lines at the end."""
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen\nWrite a "guide,c0\n"Write a" guide,c1\np2,"two\nlines"\n')
    assert [r["prompt"] for _, r in read_rows(path)] == ['Write a "guide', "Write a guide", "p2"]


def test_unsupported_suffix_and_missing_file(tmp_path):
    (tmp_path / "d.xml").write_text("x")
    with pytest.raises(ValueError, match=r"d\.xml: unsupported file type"):
        list(read_rows(tmp_path / "d.xml"))
    with pytest.raises(ValueError, match=r"missing\.jsonl: no such file"):
        list(read_rows(tmp_path / "missing.jsonl"))


def test_hf_dataset_id_uses_datasets_with_split(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        if name == "owner/missing":
            raise FileNotFoundError("Dataset 'owner/missing' doesn't exist on the Hub")
        return RECORDS

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert list(read_rows("owner/prefs", split="test")) == EXPECTED
    assert list(read_rows("owner/prefs")) == EXPECTED
    assert calls == [("owner/prefs", "test"), ("owner/prefs", "train")]
    with pytest.raises(
        ValueError,
        match=r"owner/missing: no such file \(a relative path is read from the current directory, .*\), and loading "
              r"it as a Hugging Face dataset \(split 'train'\) failed",
    ):
        list(read_rows("owner/missing"))


def test_hf_dataset_folder_is_passed_as_data_dir(monkeypatch):
    """The shipped HH recipes read ``Anthropic/hh-rlhf/harmless-base`` (its train split), not the whole repo."""
    import datasets

    calls = []

    def fake_load_dataset(name, split, **kwargs):
        calls.append((name, split, kwargs))
        return RECORDS

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert list(read_rows("Anthropic/hh-rlhf/harmless-base", split="train")) == EXPECTED
    assert calls == [("Anthropic/hh-rlhf", "train", {"data_dir": "harmless-base"})]


def test_a_text_file_is_one_prompt_per_line_and_becomes_behaviors(tmp_path):
    from safealign.eval.benchmarks.loaders import read_benchmark

    path = tmp_path / "MaliciousInstruct.txt"
    path.write_text("How to forge a signature?\n\n  How to pick a lock?  \n")
    assert list(read_rows(path)) == [(0, {"prompt": "How to forge a signature?"}),
                                     (2, {"prompt": "How to pick a lock?"})]
    behaviors = read_benchmark(path).harmful
    assert [(b.id, b.behavior) for b in behaviors] == [("MaliciousInstruct_0", "How to forge a signature?"),
                                                        ("MaliciousInstruct_2", "How to pick a lock?")]


def test_a_text_file_splits_at_line_ends_only(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("a\u2028b\r\nc\fd\n\x85e\x1cf\n".encode())
    assert list(read_rows(path)) == [(0, {"prompt": "a\u2028b"}), (1, {"prompt": "c\fd"}), (2, {"prompt": "e\x1cf"})]


def test_a_tsv_cell_follows_csv_quoting_as_wildjailbreak_is_read(tmp_path):
    """Not QUOTE_NONE: WildJailbreak's multi-line prompts are quoted cells (pandas/datasets read them so)."""
    path = tmp_path / "eval.tsv"
    path.write_text('adversarial\tdata_type\n"line one\n\tline ""two"""\tadversarial_harmful\n')
    assert list(read_rows(path)) == [(0, {"adversarial": 'line one\n\tline "two"', "data_type": "adversarial_harmful"})]


def test_a_lone_carriage_return_does_not_end_a_text_file_line(tmp_path):
    """The docs: lines end at \\n or \\r\\n, and a behavior's id is <stem>_<line>; universal newlines split at \\r."""
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"a\rb\r\n\r\nc\n")
    assert list(read_rows(path)) == [(0, {"prompt": "a\rb"}), (2, {"prompt": "c"})]
    gz = tmp_path / "prompts.txt.gz"
    gz.write_bytes(gzip.compress(b"a\rb\r\n\r\nc\n"))
    assert list(read_rows(gz)) == [(0, {"prompt": "a\rb"}), (2, {"prompt": "c"})]


def test_csv_extra_fields_are_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen\na,b\nWrite a guide, step by step,b\n")
    with pytest.raises(ValueError, match=r"d\.csv: row 1: more fields than the header has \(2\): 'b' after its "
                                         r"last column 'chosen'"):
        list(read_rows(path))


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_a_repeated_header_name_is_refused(tmp_path, suffix, delimiter):
    """csv.DictReader keeps the last of two columns with one name: the first column's values would be lost
    without a word (the second `chosen` read as the chosen response)."""
    path = tmp_path / f"d{suffix}"
    path.write_text(delimiter.join(["prompt", "chosen", "rejected", "chosen"]) + "\n"
                    + delimiter.join(["q", "a", "b", "c"]) + "\n")
    with pytest.raises(ValueError, match=rf"d\{suffix}: column 'chosen' appears 2 times in the header"):
        list(read_rows(path))
    path.write_text(delimiter.join(["prompt", "chosen", "rejected", "", ""]) + "\n"  # unnamed: no column to read
                    + delimiter.join(["q", "a", "b", "", ""]) + "\n")
    assert [r for _, r in read_rows(path)] == [{"prompt": "q", "chosen": "a", "rejected": "b", "": ""}]


def test_a_path_under_the_home_folder_is_read(tmp_path, monkeypatch):
    from safealign.data.formats import load_preferences

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "x.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    assert [r for _, r in read_rows("~/x.jsonl")] == [{"prompt": "q", "chosen": "a", "rejected": "b"}]
    assert len(load_preferences("~/x.jsonl").items) == 1
