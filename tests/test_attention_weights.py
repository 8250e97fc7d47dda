"""torch.ops.pyattn.attention_with_weights: attention that also returns its weights (per
head, or their mean over heads), the inference path of nn.MultiheadAttention with
need_weights=True. Against the NumPy float64 reference, on every CPU code path."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import ATTENTION_SHAPES, DTYPES, assert_close, attention_shape_id, randn, to_np
from pyattn.reference import attention_weights as ref_weights

OPS = torch.ops.pyattn

MASKS = ["none", "bool_bcast", "bool_dead", "additive", "additive_neginf"]


def _case(shape, mask_kind, dtype, gen):
    b, hq, hkv, lq, lk, d, dv = shape
    q, k, v = randn((b, hq, lq, d), dtype, gen=gen), randn((b, hkv, lk, d), dtype, gen=gen), randn(
        (b, hkv, lk, dv), dtype, gen=gen)
    mask = None
    if mask_kind == "bool_bcast":  # True = attend
        mask = torch.rand((b, 1, lq, lk), generator=gen) > 0.3
    elif mask_kind == "bool_dead":  # every third query row sees no key
        mask = torch.rand((b, hq, lq, lk), generator=gen) > 0.3
        mask[..., ::3, :] = False
    elif mask_kind == "additive":
        mask = randn((lq, lk), dtype, gen=gen)
    elif mask_kind == "additive_neginf":
        mask = randn((b, hq, lq, lk), dtype, gen=gen).masked_fill(torch.rand((b, hq, lq, lk), generator=gen) < 0.2,
                                                                    float("-inf"))
    return q, k, v, mask


def _check(q, k, v, mask, scale, average, msg):
    out, weights = OPS.attention_with_weights(q, k, v, mask, scale, average)
    out_ref, w_ref = ref_weights(to_np(q), to_np(k), to_np(v), None if mask is None else to_np(mask), scale, average)
    assert out.shape == out_ref.shape and out.dtype == q.dtype, msg
    assert weights.shape == w_ref.shape and weights.dtype == q.dtype, msg
    assert_close(out, out_ref, q.dtype, msg=f"{msg} out")
    assert_close(weights, w_ref, q.dtype, magnitude=1.0, msg=f"{msg} weights")


@pytest.mark.parametrize("average", [True, False], ids=["mean", "per_head"])
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=attention_shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(dtype, shape, mask_kind, average, gen):
    q, k, v, mask = _case(shape, mask_kind, dtype, gen)
    scale = (0.5 + float(torch.rand((), generator=gen))) / math.sqrt(shape[5])
    _check(q, k, v, mask, scale, average, f"{shape} {mask_kind}")


def test_rows_without_keys_give_zeros(gen):
    q, k, v, _ = _case((2, 2, 2, 9, 11, 8, 8), "none", torch.float32, gen)
    mask = torch.rand(2, 2, 9, 11, generator=gen) > 0.5
    mask[:, :, 4] = False
    out, weights = OPS.attention_with_weights(q, k, v, mask, 0.3, False)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    assert (out[:, :, 4] == 0).all() and (weights[:, :, 4] == 0).all()


@pytest.mark.parametrize("average", [True, False], ids=["mean", "per_head"])
def test_every_cpu_isa(cpu_isa, average, gen):
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v, mask = _case((2, 4, 2, 70, 130, 33, 17), "additive_neginf", dtype, gen)
        _check(q, k, v, mask, 0.2, average, f"{cpu_isa} {dtype}")


def test_strided_inputs(gen):
    """The layout nn.MultiheadAttention passes: heads as strided views of one projection."""
    n, l, h, hd = 2, 67, 4, 16
    qkv = randn((n, l, 3, h, hd), torch.float32, gen=gen)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (N, H, L, hd), row stride 3E
    _check(q, k, v, None, hd**-0.5, True, "strided")


@pytest.mark.parametrize("average", [True, False])
def test_opcheck(average, gen):
    q, k, v, mask = _case((2, 4, 2, 9, 13, 8, 6), "bool_bcast", torch.float32, gen)
    # inference only: the autograd utils would call a backward that, by design, raises
    torch.library.opcheck(OPS.attention_with_weights.default, (q, k, v, mask, 0.35, average),
                          test_utils=("test_schema", "test_faketensor"))


def test_backward_raises_clearly(gen):
    q, k, v, _ = _case((1, 2, 2, 5, 6, 8, 8), "none", torch.float32, gen)
    out, _ = OPS.attention_with_weights(q.requires_grad_(), k, v, None, 0.3, True)
    with pytest.raises(RuntimeError, match="inference only"):
        out.sum().backward()


@pytest.mark.parametrize("name", ["query_3d", "key_dtype", "heads", "mask_shape", "int_query"])
def test_bad_inputs_name_the_argument(name, gen):
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    op = OPS.attention_with_weights
    call, words = {
        "query_3d": (lambda: op(q[0], k, v, None, 0.5, True), "query has 3 dims"),
        "key_dtype": (lambda: op(q, k.double(), v, None, 0.5, True), "key has dtype"),
        "heads": (lambda: op(torch.randn(2, 3, 5, 8), k, v, None, 0.5, True), "must divide query's 3 heads"),
        "mask_shape": (lambda: op(q, k, v, torch.ones(3, 5, 7, dtype=torch.bool), 0.5, True), "mask of shape"),
        "int_query": (lambda: op(q.int(), k.int(), v.int(), None, 0.5, True), "query has dtype"),
    }[name]
    with pytest.raises(RuntimeError, match=words):
        call()
