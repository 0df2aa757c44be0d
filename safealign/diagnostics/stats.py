"""The median the diagnostics report: the middle value, or the mean of the two middle values for an even
count (``statistics.median``, as the entanglement probe and the sweep use). ``torch.median`` returns the lower
of the two, which would make one figure mean two things depending on where it was computed."""

from __future__ import annotations

from torch import Tensor


def median(values: Tensor) -> float:
    """The median of all elements of ``values`` (ValueError when there are none)."""
    v = values.detach().flatten().double().sort().values
    n = v.numel()
    if n == 0:
        raise ValueError("median of no values")
    return float((v[(n - 1) // 2] + v[n // 2]) / 2)
