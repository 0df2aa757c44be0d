"""Run files: the one crash-safe JSONL append and tolerant reader, atomic JSON writes, typed run records.

The lowest layer above ``types``: imports only the standard library and :mod:`safealign.errors`.
"""

from safealign.io.jsonfile import finite_or_none, read_json, write_json
from safealign.io.jsonl import (
    JsonlRows,
    append_jsonl,
    load_jsonl,
    parse_jsonl,
    read_jsonl,
    read_user_jsonl,
    write_jsonl,
)

__all__ = [
    "JsonlRows", "append_jsonl", "finite_or_none", "load_jsonl", "parse_jsonl", "read_json", "read_jsonl",
    "read_user_jsonl", "write_json", "write_jsonl",
]
