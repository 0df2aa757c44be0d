"""safealign/params.py: the one check of a plug-in's parameters (losses, objectives, transforms, attacks, judges,
defenses)."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, Optional

import pytest

from safealign.errors import UserError
from safealign.params import REQUIRED, check_params, dataclass_params, signature_params


def fn(scale: float, *, names: Optional[list[str]] = None, delta: float | None = None, ids: list[int] = (),
       mode: Literal["sum", "mean"] = "sum", pair: tuple[str, str] = ("q", "a"), key: int | str = 0,
       extra: dict = None) -> None: ...


DEFAULTS, HINTS = signature_params(fn)


@pytest.mark.parametrize("params, message", [
    ({"names": "a,b"}, r"^f: names: expected a list of texts, got text 'a,b'; write \['a,b'\]$"),
    ({"names": [0, 1]}, r"^f: names\[0\]: expected text, got 0 \(int\)$"),
    ({"names": ["a", True]}, r"^f: names\[1\]: expected text, got True \(bool\); quote it if it is text"),
    ({"delta": "x"}, r"^f: delta: expected a number, got 'x' \(str\)$"),
    ({"delta": True}, r"^f: delta: expected a number, got True \(bool\)$"),
    ({"ids": ["x"]}, r"^f: ids\[0\]: expected a whole number, got 'x'"),
    ({"ids": [1.5]}, r"^f: ids\[0\]: expected a whole number, got 1.5"),
    ({"mode": "max"}, r"^f: mode: expected one of 'sum', 'mean', got 'max' \(str\)$"),
    ({"pair": ["q"]}, r"^f: pair: expected a list of 2, got \['q'\]"),
    ({"pair": ["q", 7]}, r"^f: pair\[1\]: expected text, got 7 \(int\)$"),
    ({"key": 1.5}, r"^f: key: expected a whole number or text, got 1.5 \(float\)$"),
    ({"extra": [1]}, r"^f: extra: expected a mapping, got \[1\]"),
    ({"scale": math.inf}, r"^f: scale: expected a finite number, got inf$"),
    ({"scale": math.nan}, r"^f: scale: expected a finite number, got nan$"),
    ({"sacle": 1.0}, r"^f: unknown parameter\(s\) sacle; valid: scale \(required\), names \(default None\), "),
])
def test_a_value_that_does_not_fit_is_refused_naming_the_element_and_what_fits(params, message):
    with pytest.raises(UserError, match=message):
        check_params("f", params, DEFAULTS, HINTS)


def test_values_that_fit_pass_unchanged():
    params = {"scale": 1, "names": None, "delta": 0.5, "ids": (1, 2), "mode": "mean", "pair": ["x", "y"],
              "key": "k", "extra": {"a": 1}}
    assert check_params("f", params, DEFAULTS, HINTS) == params  # an int fits a float, a tuple a list
    assert check_params("f", {"anything": object()}, {"anything": None}, {}) != {}  # no hint: not type-checked


def test_a_config_dataclass_lists_its_defaults_and_a_default_factorys_value():
    @dataclasses.dataclass
    class Config:
        need: str
        n: int = 3
        names: list[str] = dataclasses.field(default_factory=lambda: ["a"])

    defaults, hints = dataclass_params(Config)
    assert defaults == {"need": REQUIRED, "n": 3, "names": ["a"]} and hints["n"] is int
    with pytest.raises(UserError, match=r"valid: need \(required\), n \(default 3\), names \(default \['a'\]\)$"):
        check_params("c", {"m": 1}, defaults, hints)
