"""The host/device softmax arithmetic of kernels/include/pyattn/softmax_math.h (used by
the CUDA kernels), run on the CPU through a test hook: an online (max, sum) reduction
in chunks, merged in another order, equals the two-pass result, and its edge rules hold
(all -inf gives sum 0 and inv_sum 0; NaN propagates)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pyattn

REDUCE = {"float32": pyattn._C._online_softmax_reduce_f32, "float64": pyattn._C._online_softmax_reduce_f64}
RTOL = {"float32": 1e-5, "float64": 1e-13}


def two_pass(z: np.ndarray):
    m = np.max(z)
    if m == -np.inf:
        return m, 0.0
    return m, float(np.sum(np.exp(z - m)))


@pytest.mark.parametrize("acc", ["float32", "float64"])
@pytest.mark.parametrize("chunk", [1, 3, 32, 1000])
def test_online_reduce_matches_two_pass(acc, chunk, rng):
    for n in (1, 2, 31, 257, 4000):
        z = rng.standard_normal(n) * rng.choice([1.0, 30.0])
        z[rng.random(n) < 0.3] = -np.inf
        z = z.astype(acc).astype(np.float64)  # what the kernel sees
        m, s, inv = REDUCE[acc](z.tolist(), chunk)
        m_ref, s_ref = two_pass(z)
        assert m == m_ref
        if s_ref == 0.0:
            assert s == 0.0 and inv == 0.0
        else:
            assert s == pytest.approx(s_ref, rel=RTOL[acc])
            assert inv == pytest.approx(1.0 / s_ref, rel=RTOL[acc])


@pytest.mark.parametrize("acc", ["float32", "float64"])
def test_online_reduce_edge_rules(acc, rng):
    reduce = REDUCE[acc]
    assert reduce([-math.inf] * 5, 2) == (-math.inf, 0.0, 0.0)  # fully masked row: 0, not NaN
    m, s, inv = reduce([0.5, math.nan, -1.0], 1)
    assert math.isnan(s) and math.isnan(inv)                    # NaN reaches the row
    m, s, _ = reduce([3.0, 80.0, -2.0], 2)                       # a large max does not overflow
    assert m == 80.0 and s == pytest.approx(1.0 + math.exp(-77.0), rel=1e-6)
    with pytest.raises(ValueError, match="chunk"):
        reduce([1.0], 0)
