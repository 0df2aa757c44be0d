"""Student's t quantile (safealign/eval/student_t.py) against table values and a 40-digit reference."""

from __future__ import annotations

import math

import pytest

from safealign.eval.student_t import LARGE_DF, t_quantile


@pytest.mark.parametrize("df, expected", [(2, 4.302653), (4, 2.776445), (39, 2.022691), (1e9, 1.959964)])
def test_table_values(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-5)


# mpmath (40 digits): the root in t of betainc(ν/2, 1/2, 0, ν/(ν+t²), regularized) / 2 = 0.025
@pytest.mark.parametrize("df, expected", [(0.5, 164.557673480488), (1.5, 6.01666310443), (2.5, 3.57465484200368),
                                          (7.3, 2.3450667365477), (2592 / 757, 2.9706951122232269),
                                          (3, 3.18244630528371)])
def test_non_integer_degrees_of_freedom(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, rel=1e-11)


def test_closed_forms_symmetry_and_the_large_df_branch():
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-12)  # Cauchy
    p = 0.9  # two degrees of freedom: t = (2p − 1) / √(2p(1 − p))
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
    assert t_quantile(0.025, 4) == -t_quantile(0.975, 4) and t_quantile(0.5, 3) == 0.0
    # the expansion above LARGE_DF meets the continued fraction below it
    assert t_quantile(0.975, LARGE_DF * (1 + 1e-12)) == pytest.approx(t_quantile(0.975, LARGE_DF), rel=1e-13)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="probability"):
        t_quantile(1.0, 3)
