"""The counter-based draws the kernels share (kernels/include/pyattn/hd_math.h), on NumPy
uint64 arrays."""

from __future__ import annotations

import numpy as np

_U64 = np.uint64


def mix64(x):
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))
