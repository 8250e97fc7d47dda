"""packed_gemm: pyattn's fp32 CPU GEMM on a packed right operand (the micro-kernel the
LSTM ops run every step), against a float64 product, on every CPU code path.

Shapes cover full and partial micro-kernel row blocks (6 rows on AVX2, 12 on AVX-512,
4 generic), partial 32-column panels and partial vectors, k = 1, and strided operands.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

import pyattn
from conftest import randn, to_np

OPS = torch.ops.pyattn
F32 = torch.float32


def check(a, b, c=None):
    """out against float64, within the rounding bound of a k-term fp32 dot product."""
    out = OPS.packed_gemm(a, b, c)
    a64, b64 = to_np(a), to_np(b)
    want = a64 @ b64.T + (to_np(c) if c is not None else 0.0)
    k = a.shape[1]
    # |fl(sum) - sum| <= k·u·sum|a_i b_i| (+ one rounding of c): the classic bound, u = 2^-24
    bound = (k + 2) * 2.0**-24 * (np.abs(a64) @ np.abs(b64).T + (np.abs(to_np(c)) if c is not None else 0.0))
    err = np.abs(to_np(out) - want)
    assert out.shape == want.shape and out.dtype == F32
    assert (err <= bound + 1e-30).all(), f"max err {err.max()} vs bound {bound[err > bound].min()} at {np.argwhere(err > bound)[:3]}"


SHAPES = [  # (m, n, k)
    (1, 1, 1), (1, 32, 7), (1, 1024, 256), (2, 33, 5), (3, 31, 64), (5, 17, 3), (6, 32, 32), (7, 64, 1),
    (11, 40, 19), (12, 96, 48), (13, 100, 77), (17, 65, 130), (25, 47, 9), (64, 256, 256), (65, 1024, 33),
]


@pytest.mark.parametrize("m,n,k", SHAPES, ids=lambda v: str(v))
def test_matches_float64(cpu_isa, m, n, k, gen):
    a, b = randn((m, k), F32, gen=gen), randn((n, k), F32, gen=gen)
    check(a, b)
    check(a, b, randn((m, n), F32, gen=gen, std=3.0))  # accumulate into c


def test_strided_operands(cpu_isa, gen):
    """a with a row stride, b given transposed (unit stride along n) and sliced."""
    a = randn((23, 70), F32, gen=gen)[:, 3:60]           # lda 70
    b = randn((57, 50), F32, gen=gen).t()[5:45]           # [40, 57], strides (1, 50)
    check(a, b)


def test_every_output_written(cpu_isa, gen):
    """Outputs are exactly a·bᵀ for integer-valued inputs (exact in fp32): catches a
    column or row the kernel skips or writes twice, whatever the rounding."""
    a = torch.randint(-3, 4, (29, 37), generator=gen).float()
    b = torch.randint(-3, 4, (71, 37), generator=gen).float()
    assert torch.equal(OPS.packed_gemm(a, b, None), a @ b.t())


@hyp_settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 80), k=st.integers(1, 70), seed=st.integers(0, 2**31 - 1))
def test_random_shapes(m, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    check(randn((m, k), F32, gen=g), randn((n, k), F32, gen=g), randn((m, n), F32, gen=g))


def test_empty_and_bad_inputs(gen):
    assert OPS.packed_gemm(torch.empty(0, 4), torch.empty(3, 4), None).shape == (0, 3)
    a = randn((3, 4), F32, gen=gen)
    with pytest.raises(RuntimeError, match="expected the same k"):
        OPS.packed_gemm(a, randn((5, 3), F32, gen=gen), None)
    with pytest.raises(RuntimeError, match="b has dtype"):
        OPS.packed_gemm(a, randn((5, 4), torch.float64, gen=gen), None)
    with pytest.raises(RuntimeError, match="c has shape"):
        OPS.packed_gemm(a, randn((5, 4), F32, gen=gen), randn((3, 4), F32, gen=gen))


def test_opcheck(gen):
    a, b, c = randn((7, 9), F32, gen=gen), randn((5, 9), F32, gen=gen), randn((7, 5), F32, gen=gen)
    torch.library.opcheck(OPS.packed_gemm, (a, b, c))
    torch.library.opcheck(OPS.packed_gemm, (a, b, None))
