"""scaled_masked_softmax: y = softmax(scale * x + mask) over the last dim, and its backward.

Checked against pyattn/reference/scaled_masked_softmax.py (NumPy float64), per device and
dtype, with the tolerances of tests/conftest.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

import pyattn
from conftest import (
    DEVICES,
    DTYPES,
    HAS_CUDA,
    LOW_PRECISION,
    assert_close,
    assert_err_within_2x_torch,
    randn,
    to_np,
)
from pyattn.functional import scaled_masked_softmax
from pyattn.reference import (
    scaled_masked_softmax_bwd as ref_bwd,
    scaled_masked_softmax_fwd as ref_fwd,
    scaled_masked_softmax_mask_grad as ref_mask_grad,
)

OPS = torch.ops.pyattn
NEG_INF = float("-inf")

# Raised for bad user input, at the Python layer or by TORCH_CHECK in C++.
USER_ERRORS = (RuntimeError, ValueError, TypeError)


def _shape_id(shape) -> str:
    return "x".join(map(str, shape))


def _dtype_id(dtype) -> str:
    return str(dtype).replace("torch.", "")


# --------------------------------------------------------------------------- inputs

# x shapes [..., sq, sk]: sk = 1, odd sizes, rows of 8192 and more, 2-d to 5-d layouts,
# sq > sk and sq < sk for causal.
SHAPES = [
    (1, 1),
    (6, 1),
    (3, 3),
    (2, 5, 17),
    (2, 3, 16, 17),
    (1, 2, 9, 127),
    (2, 1, 3, 1000),
    (3, 1025),
    (2, 2, 2, 3, 33),
    (1, 1, 2, 8192),
    (2, 12345),
    (2, 2, 7, 5),
    (1, 2, 3, 64),
    (1, 4, 32, 32),
]

#   none        no mask tensor
#   bool_bcast  bool [b, 1, .., sq, sk] (shared by heads); [1, sq, sk] for 3-d x, [sq, sk] for 2-d
#   bool_full   bool of x's shape
#   bool_sk     bool [sk] only (a key padding mask shared by every row)
#   add_bcast   additive, x's dtype, broadcast like bool_bcast
#   add_neginf  additive, x's dtype, x's shape, about a fifth of it -inf
#   add_other   additive in another floating dtype than x (converted to x's dtype)
MASK_KINDS = ["none", "bool_bcast", "bool_full", "bool_sk", "add_bcast", "add_neginf", "add_other"]


def bcast_shape(shape):
    shape = list(shape)
    if len(shape) == 3:
        shape[0] = 1
    for d in range(1, len(shape) - 2):
        shape[d] = 1
    return tuple(shape)


def bool_mask(shape, device, gen, p=0.3):
    return (torch.rand(tuple(shape), generator=gen) < p).to(device)


def make_mask(kind, shape, dtype, device, gen):
    """A mask for x of ``shape`` and ``dtype``; leaf tensor on ``device`` (or None)."""
    sk = shape[-1]
    if kind == "none":
        return None
    if kind == "bool_bcast":
        return bool_mask(bcast_shape(shape), device, gen)
    if kind == "bool_full":
        return bool_mask(shape, device, gen)
    if kind == "bool_sk":
        return bool_mask((sk,), device, gen)
    if kind == "add_bcast":
        return randn(bcast_shape(shape), dtype, device, gen)
    if kind == "add_neginf":
        m = randn(shape, dtype, "cpu", gen)
        m = m.masked_fill(torch.rand(tuple(shape), generator=gen) < 0.2, NEG_INF)
        return m.to(device)
    if kind == "add_other":
        other = torch.float64 if dtype == torch.float32 else torch.float32
        return randn(bcast_shape(shape), other, device, gen)
    raise AssertionError(kind)


def mask_for_ref(mask, x_dtype):
    """What the reference gets: bool as is, additive as converted to x's dtype."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return to_np(mask)
    return to_np(mask.detach().to(x_dtype))


def is_additive(mask) -> bool:
    return mask is not None and mask.dtype != torch.bool


def draw_scale(gen) -> float:
    return 0.125 + 1.5 * float(torch.rand((), dtype=torch.float64, generator=gen))


def grad_magnitude(y_ref, dy, scale) -> float:
    """The size of a softmax gradient: |scale| * max y * max |dy|."""
    return abs(scale) * float(np.abs(y_ref).max(initial=0.0)) * float(np.abs(to_np(dy)).max(initial=0.0))


def dead_rows(y_ref) -> np.ndarray:
    """[..., sq, 1] True where the reference row is fully masked (all zeros)."""
    return ~np.any(y_ref != 0, axis=-1, keepdims=True)


def torch_same_dtype(x, mask, scale, causal):
    """torch's own computation in x's dtype (NaN on fully masked rows)."""
    z = x * scale
    if mask is not None:
        z = z.masked_fill(mask, NEG_INF) if mask.dtype == torch.bool else z + mask.to(x.dtype)
    if causal:
        sq, sk = x.shape[-2:]
        z = z.masked_fill(torch.ones(sq, sk, dtype=torch.bool, device=x.device).triu(1), NEG_INF)
    return torch.softmax(z, dim=-1)


def check_fwd_bwd(x, mask, scale, causal, dy, *, x_leaf=None, msg=""):
    """Run forward and backward through the public function and check both against the
    reference; returns (y, y_ref). ``x`` must require grad (a leaf or a view of one)."""
    dtype = x.dtype
    x_before = x.detach().clone()
    y = scaled_masked_softmax(x, mask, scale=scale, causal=causal)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device, msg
    y_ref = ref_fwd(to_np(x), mask_for_ref(mask, dtype), scale, causal)
    assert_close(y, y_ref, dtype, msg=f"{msg} forward")
    assert torch.equal(x.detach(), x_before), f"{msg}: x was modified"

    wrt = [x] + ([mask] if is_additive(mask) and mask.requires_grad else [])
    grads = torch.autograd.grad(y, wrt, dy)
    mag = grad_magnitude(y_ref, dy, scale)
    assert grads[0].shape == x.shape and grads[0].dtype == dtype, msg
    assert_close(grads[0], ref_bwd(y_ref, to_np(dy), scale), dtype, magnitude=mag, msg=f"{msg} dx")
    if len(wrt) == 2:
        dmask = grads[1]
        assert dmask.shape == mask.shape and dmask.dtype == mask.dtype, msg
        summed = x.numel() // max(mask.numel(), 1)
        mag_m = grad_magnitude(y_ref, dy, 1.0) * summed
        # computed in x's dtype, returned in the mask's: the coarser of the two governs
        coarser = max((dtype, mask.dtype), key=lambda d: torch.finfo(d).eps)
        assert_close(
            dmask, ref_mask_grad(y_ref, to_np(dy), tuple(mask.shape)), coarser, magnitude=mag_m, msg=f"{msg} dmask"
        )
    return y, y_ref


# ------------------------------------------------------------------ the main matrix


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_matches_reference(device, dtype, shape, mask_kind, causal, gen):
    x = randn(shape, dtype, device, gen, std=2.0).requires_grad_()
    mask = make_mask(mask_kind, shape, dtype, device, gen)
    if is_additive(mask):
        mask.requires_grad_()
    dy = randn(shape, dtype, device, gen)
    check_fwd_bwd(x, mask, draw_scale(gen), causal, dy, msg=f"{shape} {mask_kind} causal={causal}")


@pytest.mark.parametrize("shape", [(1, 1), (4, 3, 17), (2, 2, 5, 127), (2, 1025), (1, 12345)], ids=_shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_bwd_op_matches_reference(device, dtype, shape, gen):
    """The bwd op alone, from given y and dy (so only its own arithmetic is measured),
    with a fully masked (all-zero) row in y."""
    y_ref = ref_fwd(to_np(randn(shape, torch.float64, "cpu", gen, std=2.0)))
    y_ref[(0,) * (len(shape) - 1)] = 0.0
    y = torch.from_numpy(y_ref).to(dtype).to(device)
    dy = randn(shape, dtype, device, gen)
    scale = -draw_scale(gen)
    dx = OPS.scaled_masked_softmax_bwd(y, dy, scale)
    assert dx.shape == y.shape and dx.dtype == dtype
    expected = ref_bwd(to_np(y), to_np(dy), scale)
    assert_close(dx, expected, magnitude=grad_magnitude(to_np(y), dy, scale))
    assert torch.all(dx[(0,) * (len(shape) - 1)] == 0)


def test_defaults_are_plain_softmax(device, gen):
    x = randn((3, 4, 29), torch.float32, device, gen, std=3.0)
    assert_close(scaled_masked_softmax(x), ref_fwd(to_np(x)), msg="defaults")
    assert_close(scaled_masked_softmax(x), torch.softmax(x.double(), -1), torch.float32, msg="vs torch")


def test_scale_zero(device, gen):
    """scale = 0: uniform over the unmasked entries, dx = 0, and the additive mask still
    gets its gradient (it must not be derived from dx / scale)."""
    shape = (2, 3, 5, 9)
    x = randn(shape, torch.float64, device, gen).requires_grad_()
    mask = randn((1, 1, 5, 9), torch.float64, device, gen).requires_grad_()
    dy = randn(shape, torch.float64, device, gen)
    check_fwd_bwd(x, mask, 0.0, True, dy, msg="scale 0")


@pytest.mark.parametrize("sign", [-1.0, 0.0], ids=["negative", "zero"])
@pytest.mark.parametrize("mask_kind", ["none", "bool_bcast"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_scale_not_positive(device, dtype, mask_kind, sign, gen):
    """scale <= 0 without an additive mask: the CPU kernel cannot fold the scale into the
    exponent after taking the max there (max(scale * x) = scale * min(x)), so it takes
    its other path."""
    shape = (2, 3, 7, 41)
    x = randn(shape, dtype, device, gen, std=2.0).requires_grad_()
    mask = make_mask(mask_kind, shape, dtype, device, gen)
    dy = randn(shape, dtype, device, gen)
    check_fwd_bwd(x, mask, sign * draw_scale(gen), False, dy, msg=f"scale sign {sign}")


# Outputs of >= 16 MiB are written with non-temporal stores on CPU (kStreamMinBytes in
# cpu/scaled_masked_softmax_body.h). sk = 1030 makes the row stride 4120 bytes (fp32),
# so rows alternate between aligned (streamed) and unaligned (stored) starts.
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_dtype_id)
def test_large_output_streamed(device, dtype, causal, gen):
    shape = (2, 4 * (4 // dtype.itemsize), 520, 1030)  # 17 MB of output either way
    x = randn(shape, dtype, device, gen, std=2.0)
    mask = make_mask("bool_bcast", shape, dtype, device, gen)
    mask[0, 0, 3] = True  # a fully masked row
    scale = draw_scale(gen)
    y = scaled_masked_softmax(x, mask, scale=scale, causal=causal)
    assert_close(y, ref_fwd(to_np(x), mask_for_ref(mask, dtype), scale, causal), dtype, msg="large output")
    assert torch.all(y[0, :, 3] == 0)


# ------------------------------------------------------------------ out=


@pytest.mark.parametrize("shape", [(3, 17), (2, 3, 9, 1030), (2, 4, 520, 1030)], ids=_shape_id)  # last: 17 MB
@pytest.mark.parametrize("mask_kind", ["none", "bool_bcast", "add_bcast"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=_dtype_id)
def test_out_matches_reference(device, dtype, mask_kind, shape, gen):
    x = randn(shape, dtype, device, gen, std=2.0)
    mask = make_mask(mask_kind, shape, dtype, device, gen)
    scale, causal = draw_scale(gen), bool(torch.rand((), generator=gen) < 0.5)
    out = randn(shape, dtype, device, gen)  # stale contents, all overwritten
    y = scaled_masked_softmax(x, mask, scale=scale, causal=causal, out=out)
    assert y is out
    assert_close(out, ref_fwd(to_np(x), mask_for_ref(mask, dtype), scale, causal), dtype, msg="out=")
    assert torch.equal(out, scaled_masked_softmax(x, mask, scale=scale, causal=causal)), "out= and return differ"


def test_out_opcheck(device, gen):
    x = randn((2, 3, 5, 7), torch.float32, device, gen)
    mask = make_mask("bool_bcast", (2, 3, 5, 7), torch.float32, device, gen)
    torch.library.opcheck(OPS.scaled_masked_softmax_fwd_out.default, (x, mask, 0.5, True, torch.empty_like(x)))


OUT_BAD = {
    "shape": (lambda x: torch.empty(3, 5), RuntimeError, r"out has shape"),
    "dtype": (lambda x: torch.empty(3, 4, dtype=torch.float64), RuntimeError, r"out has dtype"),
    "strided": (lambda x: torch.empty(4, 3).t(), RuntimeError, r"out must be contiguous"),
    "aliases_x": (lambda x: x, RuntimeError, r"out must not overlap x"),
    "not_a_tensor": (lambda x: [0.0], TypeError, r"out must be a torch.Tensor"),
    "requires_grad": (lambda x: torch.empty(3, 4, requires_grad=True), RuntimeError, r"out= does not support autograd"),
}


@pytest.mark.parametrize("case", list(OUT_BAD))
def test_out_bad_inputs(case, gen):
    make, error, pattern = OUT_BAD[case]
    x = torch.randn(3, 4, generator=gen)
    with pytest.raises(error, match=pattern):
        scaled_masked_softmax(x, out=make(x))


def test_out_rejects_autograd_inputs(gen):
    x = torch.randn(3, 4, generator=gen, requires_grad=True)
    with pytest.raises(RuntimeError, match="out= does not support autograd"):
        scaled_masked_softmax(x, out=torch.empty(3, 4))
    with torch.no_grad():
        scaled_masked_softmax(x, out=torch.empty(3, 4))


# ----------------------------------------------------- bf16 / fp16 against torch's own


# A max error over a handful of elements is noise (two same-dtype computations can
# each get lucky): every row here comes in at least 8 copies (batch x heads), which
# matters for causal, where the large values sit in the first rows' few live entries.
LOW_PRECISION_SHAPES = [(2, 4, 16, 17), (1, 8, 9, 127), (16, 3, 1025), (1, 8, 4, 8192), (8, 2, 12345)]


@pytest.mark.parametrize("mask_kind", ["none", "bool_bcast", "add_bcast", "causal", "bool_sk+causal"])
@pytest.mark.parametrize("shape", LOW_PRECISION_SHAPES, ids=_shape_id)
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=_dtype_id)
def test_low_precision_within_2x_torch(device, dtype, shape, mask_kind, gen):
    causal = "causal" in mask_kind
    kind = mask_kind.replace("+causal", "").replace("causal", "none")
    scale = draw_scale(gen)
    x = randn(shape, dtype, device, gen, std=2.0)
    mask = make_mask(kind, shape, dtype, device, gen)
    dy = randn(shape, dtype, device, gen)

    xa = x.clone().requires_grad_()
    y = scaled_masked_softmax(xa, mask, scale=scale, causal=causal)
    y.backward(dy)
    xt = x.clone().requires_grad_()
    yt = torch_same_dtype(xt, mask, scale, causal)
    yt.backward(dy)

    y_ref = ref_fwd(to_np(x), mask_for_ref(mask, dtype), scale, causal)
    dx_ref = ref_bwd(y_ref, to_np(dy), scale)
    dead = dead_rows(y_ref)
    assert_err_within_2x_torch(y, yt, y_ref, exclude=dead, msg=f"{shape} {mask_kind} forward")
    assert_err_within_2x_torch(xa.grad, xt.grad, dx_ref, exclude=dead, msg=f"{shape} {mask_kind} dx")


# ----------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_fully_masked_rows(device, dtype, gen):
    """Rows with nothing left give exact zeros and exact zero gradients, never NaN."""
    shape = (2, 3, 6, 10)
    scale = draw_scale(gen)
    dy = randn(shape, dtype, device, gen)

    # bool mask with chosen dead rows, some rows alive
    mb = bool_mask(shape, "cpu", gen)
    mb[0, 1, 2, :] = True
    mb[1, :, 4, :] = True
    mb[:, :, 5, :] = False
    # additive mask: -inf rows, and a row dead only through causal (column 0 is -inf)
    ma = randn(shape, dtype, "cpu", gen)
    ma[1, 2, 3, :] = NEG_INF
    ma[0, :, 0, 0] = NEG_INF
    cases = [
        ("bool", mb.to(device), False, [(0, 1, 2), (1, 0, 4), (1, 1, 4), (1, 2, 4)]),
        ("bool+causal", mb.to(device), True, [(0, 1, 2), (1, 0, 4), (1, 1, 4), (1, 2, 4)]),
        ("additive+causal", ma.to(device).requires_grad_(), True, [(1, 2, 3), (0, 0, 0), (0, 1, 0), (0, 2, 0)]),
        ("all masked", torch.ones(shape[-1], dtype=torch.bool, device=device), False, None),
    ]
    for name, mask, causal, rows in cases:
        x = randn(shape, dtype, device, gen, std=2.0).requires_grad_()
        y, y_ref = check_fwd_bwd(x, mask, scale, causal, dy, msg=name)
        wrt = [x] + ([mask] if is_additive(mask) else [])
        y = scaled_masked_softmax(x, mask, scale=scale, causal=causal)
        grads = torch.autograd.grad(y, wrt, dy)
        for t, what in [(y, "y")] + [(g, "grad") for g in grads]:
            assert not torch.isnan(t).any(), f"{name}: NaN in {what}"
        if rows is None:
            assert torch.all(y == 0) and torch.all(grads[0] == 0), name
            continue
        for r in rows:
            assert torch.all(y[r] == 0), f"{name}: row {r} of y is not exactly 0: {y[r]}"
            assert torch.all(grads[0][r] == 0), f"{name}: row {r} of dx is not exactly 0"
            if len(grads) == 2:
                assert torch.all(grads[1][r] == 0), f"{name}: row {r} of dmask is not exactly 0"
        live = ~torch.from_numpy(dead_rows(y_ref)).to(device)
        sums = y.double().sum(-1, keepdim=True)
        assert torch.all(torch.where(live, (sums - 1).abs(), torch.zeros_like(sums)) < 1e-2), name


LARGE_LOGITS = [
    # (dtype, std of x, scale, clamp): scale * x far past exp's range (and past fp16's
    # range where x is fp16), so only a max-subtracting, fp32-accumulating kernel is right.
    (torch.float16, 1e4, 1.0, 65000.0),
    (torch.float16, 30.0, 1024.0, None),
    (torch.bfloat16, 1e4, 1024.0, None),
    (torch.float32, 1e3, 64.0, None),
    (torch.float64, 1e3, 2.0**20, None),
]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype,std,scale,clamp", LARGE_LOGITS, ids=lambda v: _dtype_id(v) if isinstance(v, torch.dtype) else f"{v}")
def test_large_logits_do_not_overflow(device, dtype, std, scale, clamp, causal, gen):
    shape = (2, 3, 9, 257)
    x64 = torch.randn(shape, dtype=torch.float64, generator=gen) * std
    if clamp is not None:
        x64 = x64.clamp(-clamp, clamp)
    x = x64.to(dtype).to(device).requires_grad_()
    mask = make_mask("bool_bcast", shape, dtype, device, gen)
    dy = randn(shape, dtype, device, gen)
    y, y_ref = check_fwd_bwd(x, mask, scale, causal, dy, msg="large logits")
    assert torch.isfinite(y).all()
    live = torch.from_numpy(~dead_rows(y_ref)).to(device)
    sums = y.double().sum(-1, keepdim=True)
    assert torch.all(torch.where(live, (sums - 1).abs(), torch.zeros_like(sums)) < 1e-2)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_nan_propagates_like_torch(device, dtype, gen):
    shape = (3, 8, 13)
    x = randn(shape, dtype, device, gen)
    x[1, 2, 5] = float("nan")
    y = scaled_masked_softmax(x, None, scale=0.5)
    assert torch.equal(torch.isnan(y), torch.isnan(torch.softmax(x.double() * 0.5, -1))), "NaN pattern"
    assert torch.isnan(y[1, 2]).all()
    assert_close(y, ref_fwd(to_np(x), None, 0.5), msg="unmasked NaN")

    # additive mask: NaN + m is still NaN
    m = randn(shape[-2:], dtype, device, gen)
    y = scaled_masked_softmax(x, m, scale=0.5)
    assert torch.isnan(y[1, 2]).all()
    assert_close(y, ref_fwd(to_np(x), to_np(m), 0.5), msg="additive mask, NaN")

    # a NaN at a masked-out position does not reach the output (masked_fill semantics);
    # the same for a position hidden by causal (j = 5 > i = 2)
    mb = torch.zeros(shape, dtype=torch.bool, device=device)
    mb[1, 2, 5] = True
    for mask, causal in [(mb, False), (None, True)]:
        y = scaled_masked_softmax(x, mask, scale=0.5, causal=causal)
        assert not torch.isnan(y).any(), f"masked NaN leaked (causal={causal})"
        yt = torch_same_dtype(x.double(), mask, 0.5, causal)
        assert not torch.isnan(yt).any()
        assert_close(y, ref_fwd(to_np(x), None if mask is None else to_np(mask), 0.5, causal), msg="masked NaN")


# ------------------------------------------------------------------------- strides


def make_layout(layout, shape, dtype, device, gen):
    """(view, leaf): a non-contiguous ``view`` of ``shape`` whose grad flows to ``leaf``."""
    b, h, sq, sk = shape
    if layout == "contiguous":
        leaf = randn(shape, dtype, device, gen, std=2.0)
        view_fn = lambda t: t  # noqa: E731
    elif layout == "transposed":  # last-dim stride sq
        leaf = randn((b, h, sk, sq), dtype, device, gen, std=2.0)
        view_fn = lambda t: t.transpose(-1, -2)  # noqa: E731
    elif layout == "step_cols":  # last-dim stride 2
        leaf = randn((b, h, sq, 2 * sk), dtype, device, gen, std=2.0)
        view_fn = lambda t: t[..., ::2]  # noqa: E731
    elif layout == "step_rows":  # row stride 2 * sk, last-dim stride 1
        leaf = randn((b, h, 2 * sq, sk), dtype, device, gen, std=2.0)
        view_fn = lambda t: t[..., 1::2, :]  # noqa: E731
    elif layout == "permuted_heads":  # [b, sq, h, sk] seen as [b, h, sq, sk]
        leaf = randn((b, sq, h, sk), dtype, device, gen, std=2.0)
        view_fn = lambda t: t.permute(0, 2, 1, 3)  # noqa: E731
    elif layout == "expanded":  # stride 0 over the batch
        leaf = randn((1, h, sq, sk), dtype, device, gen, std=2.0)
        view_fn = lambda t: t.expand(b, h, sq, sk)  # noqa: E731
    elif layout == "offset":  # nonzero storage offset
        leaf = randn((b + 1, h, sq, sk), dtype, device, gen, std=2.0)
        view_fn = lambda t: t[1:]  # noqa: E731
    else:
        raise AssertionError(layout)
    leaf.requires_grad_()
    view = view_fn(leaf)
    assert view.shape == shape
    return view, leaf


LAYOUTS = ["contiguous", "transposed", "step_cols", "step_rows", "permuted_heads", "expanded", "offset"]


@pytest.mark.parametrize("mask_kind", ["none", "bool_bcast+causal", "bool_transposed", "add_expanded"])
@pytest.mark.parametrize("dy_layout", ["contiguous", "transposed", "step_cols"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_strided_inputs(device, dtype, layout, dy_layout, mask_kind, gen):
    shape = (2, 3, 7, 33)
    x, leaf = make_layout(layout, shape, dtype, device, gen)
    dy, _ = make_layout(dy_layout, shape, dtype, device, gen)
    dy = dy.detach()
    causal = "causal" in mask_kind
    if mask_kind == "none":
        mask = None
    elif mask_kind == "bool_bcast+causal":
        mask = make_mask("bool_bcast", shape, dtype, device, gen)
    elif mask_kind == "bool_transposed":
        mask = bool_mask((2, 1, 33, 7), device, gen).transpose(-1, -2)
    else:  # additive, explicitly expanded over heads (stride 0), with a gradient
        mask = randn((2, 1, 7, 33), dtype, device, gen).requires_grad_()
    m_arg = mask.expand(shape) if mask_kind == "add_expanded" else mask
    y, y_ref = check_fwd_bwd(x, m_arg, draw_scale(gen), causal, dy, msg=f"{layout}/{dy_layout}/{mask_kind}")

    # the gradient also reaches the storage the view came from
    (g_leaf,) = torch.autograd.grad(scaled_masked_softmax(x, m_arg, scale=1.0, causal=causal), leaf, dy)
    assert g_leaf.shape == leaf.shape and torch.isfinite(g_leaf).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_bwd_op_strided(device, dtype, gen):
    shape = (2, 3, 7, 33)
    y_full = torch.from_numpy(ref_fwd(to_np(randn((2, 3, 33, 7), torch.float64, "cpu", gen)))).to(dtype).to(device)
    y = y_full.transpose(-1, -2)  # rows do not sum to 1 here; the op does not care
    dy = randn((2, 3, 7, 66), dtype, device, gen)[..., ::2]
    dx = OPS.scaled_masked_softmax_bwd(y, dy, 0.75)
    assert dx.shape == shape
    assert_close(dx, ref_bwd(to_np(y), to_np(dy), 0.75), magnitude=grad_magnitude(to_np(y), dy, 0.75))


# ------------------------------------------------------------ every CPU code path

@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_every_cpu_isa(cpu_isa, dtype, gen):
    """The best ISA runs in every other test; here each lower one (vector bodies and
    scalar tails: sk = 1, 7, 17, 33, 1025, 8192 + 3) gets the same checks."""
    for shape in [(3, 1), (2, 4, 7), (2, 3, 5, 17), (1, 2, 4, 33), (3, 1025), (1, 2, 8195)]:
        for mask_kind, causal in [("none", False), ("bool_bcast", True), ("add_neginf", False), ("add_bcast", True)]:
            x = randn(shape, dtype, "cpu", gen, std=2.0).requires_grad_()
            mask = make_mask(mask_kind, shape, dtype, "cpu", gen)
            if is_additive(mask):
                mask.requires_grad_()
            dy = randn(shape, dtype, "cpu", gen)
            check_fwd_bwd(x, mask, draw_scale(gen), causal, dy, msg=f"isa {cpu_isa} {shape} {mask_kind}")


# ----------------------------------------------------------------- gradcheck (fp64)


GRADCHECK_CASES = {
    "plain": ((2, 3, 4, 5), None, 0.7, False),
    "bool_dead_row+causal": ((2, 3, 4, 5), "bool_dead", 0.7, True),
    "add_bcast": ((2, 3, 4, 5), (1, 1, 4, 5), 0.5, False),
    "add_sk+causal_sq>sk": ((2, 6, 5), (5,), 1.3, True),
    "add_full_2d": ((3, 7), (3, 7), -0.8, False),
    "add_scale0": ((2, 4, 6), (2, 1, 6), 0.0, True),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_fp64(device, case, gen):
    shape, mask_spec, scale, causal = GRADCHECK_CASES[case]
    x = randn(shape, torch.float64, device, gen).requires_grad_()
    if mask_spec is None:
        inputs, mask = (x,), None
    elif mask_spec == "bool_dead":
        mask = bool_mask((shape[0], 1) + shape[2:], device, gen)
        mask[0, 0, 1, :] = True
        inputs = (x,)
    else:
        mask = randn(mask_spec, torch.float64, device, gen).requires_grad_()
        inputs = (x, mask)

    def f(*args):
        return scaled_masked_softmax(args[0], args[1] if len(args) == 2 else mask, scale=scale, causal=causal)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


# --------------------------------------------------------------- opcheck, compile


OPCHECK_FWD = {
    "no_mask": (None, False),
    "no_mask_causal": (None, True),
    "bool": ("bool", False),
    "bool_causal": ("bool", True),
    "additive": ("add", False),
}


def _needs_grad_param(op):
    """requires_grad=True inputs make opcheck also test the op's autograd registration
    and its backward under AOT dispatch; that only applies where autograd is registered
    on the op itself (register_autograd), not in a Python autograd.Function around it."""
    registered = torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Autograd")
    return [
        pytest.param(False, id="no_grad"),
        pytest.param(
            True,
            id="grad",
            marks=pytest.mark.skipif(not registered, reason=f"{op.name()} has no autograd kernel on the op"),
        ),
    ]


@pytest.mark.parametrize("requires_grad", _needs_grad_param(OPS.scaled_masked_softmax_fwd.default))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_dtype_id)
@pytest.mark.parametrize("case", list(OPCHECK_FWD))
def test_opcheck_fwd(device, case, dtype, requires_grad, gen):
    kind, causal = OPCHECK_FWD[case]
    shape = (2, 3, 5, 11)
    x = randn(shape, dtype, device, gen).requires_grad_(requires_grad)
    mask = {
        None: None,
        "bool": bool_mask((2, 1, 5, 11), device, gen),
        "add": randn((1, 1, 5, 11), dtype, device, gen).requires_grad_(requires_grad),
    }[kind]
    torch.library.opcheck(OPS.scaled_masked_softmax_fwd.default, (x, mask, 0.37, causal))


@pytest.mark.parametrize("requires_grad", _needs_grad_param(OPS.scaled_masked_softmax_bwd.default))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_dtype_id)
def test_opcheck_bwd(device, dtype, requires_grad, gen):
    shape = (2, 3, 5, 11)
    y = scaled_masked_softmax(randn(shape, dtype, device, gen), None, scale=0.5).requires_grad_(requires_grad)
    dy = randn(shape, dtype, device, gen).requires_grad_(requires_grad)
    torch.library.opcheck(OPS.scaled_masked_softmax_bwd.default, (y, dy, 0.5))


def test_torch_compile_fullgraph(fresh_dynamo, device, gen):

    def f(x, mask):
        return scaled_masked_softmax(x * 1.5, mask, scale=0.5, causal=True).sum(-2)

    cf = torch.compile(f, fullgraph=True)
    shape = (2, 3, 6, 19)
    for mask in [bool_mask((2, 1, 6, 19), device, gen), randn((6, 19), torch.float32, device, gen)]:
        x = randn(shape, torch.float32, device, gen).requires_grad_()
        out_c = cf(x, mask)
        out_e = f(x, mask)
        assert_close(out_c, out_e.detach().double(), torch.float32, msg="compiled forward")
        dy = randn(out_e.shape, torch.float32, device, gen)
        (g_c,) = torch.autograd.grad(out_c, x, dy)
        (g_e,) = torch.autograd.grad(out_e, x, dy)
        assert_close(g_c, g_e.double(), torch.float32, msg="compiled backward")


# ----------------------------------------------------------- random shapes (hypothesis)


@st.composite
def softmax_cases(draw):
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))
    sq = draw(st.integers(1, 12))
    sk = draw(st.integers(1, 80))
    shape = tuple(lead) + (sq, sk)
    dtype = draw(st.sampled_from(DTYPES))
    mask_kind = draw(st.sampled_from(["none", "bool", "additive", "additive_neginf"]))
    # each mask dim is x's or 1; a random number of leading dims dropped
    mshape = tuple(n if draw(st.booleans()) else 1 for n in shape)
    mshape = mshape[draw(st.integers(0, len(shape))) :]
    return dict(
        shape=shape,
        dtype=dtype,
        mask_kind=mask_kind,
        mshape=mshape,
        mask_transposed=draw(st.booleans()) and len(mshape) >= 2,
        mask_grad=draw(st.booleans()),
        layout=draw(st.sampled_from(["contiguous", "transposed", "step_cols", "step_rows"])),
        dy_transposed=draw(st.booleans()),
        causal=draw(st.booleans()),
        # 0 or |scale| in [1/64, 4] (a scale that underflows the dtype is not this test's point)
        scale=draw(st.one_of(st.just(0.0), st.floats(1 / 64, 4.0), st.floats(-4.0, -1 / 64))),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def _strided(shape, dtype, device, gen, layout):
    """A tensor of ``shape`` with the given layout of its last two dims."""
    lead, (sq, sk) = tuple(shape[:-2]), shape[-2:]
    if layout == "transposed":
        return randn(lead + (sk, sq), dtype, device, gen, std=2.0).transpose(-1, -2)
    if layout == "step_cols":
        return randn(lead + (sq, 2 * sk), dtype, device, gen, std=2.0)[..., ::2]
    if layout == "step_rows":
        return randn(lead + (2 * sq, sk), dtype, device, gen, std=2.0)[..., ::2, :]
    return randn(shape, dtype, device, gen, std=2.0)


@hyp_settings(max_examples=60)
@given(case=softmax_cases())
@pytest.mark.parametrize("dev", DEVICES)
def test_random_shapes_masks_strides(dev, case):
    gen = torch.Generator().manual_seed(case["seed"])
    shape, dtype = case["shape"], case["dtype"]
    x = _strided(shape, dtype, dev, gen, case["layout"]).detach().requires_grad_()
    mshape = case["mshape"]
    if case["mask_kind"] == "none":
        mask = None
    elif case["mask_kind"] == "bool":
        mask = bool_mask(mshape, dev, gen)
    else:
        mask = randn(mshape, dtype, dev, gen)
        if case["mask_kind"] == "additive_neginf":
            mask = mask.masked_fill(bool_mask(mshape, dev, gen, p=0.25), NEG_INF)
    if mask is not None and case["mask_transposed"]:
        mask = mask.transpose(-1, -2).contiguous().transpose(-1, -2)
    if is_additive(mask) and case["mask_grad"]:
        mask = mask.detach().requires_grad_()
    dy = _strided(shape, dtype, dev, gen, "transposed" if case["dy_transposed"] else "contiguous")
    check_fwd_bwd(x, mask, case["scale"], case["causal"], dy, msg=str({k: v for k, v in case.items() if k != "seed"}))


# --------------------------------------------------------------------- bad inputs


def _call_paths(x, mask=None, scale=1.0, causal=False):
    """Both entry points: the public function and the raw custom op."""
    return [
        lambda: scaled_masked_softmax(x, mask, scale=scale, causal=causal),
        lambda: OPS.scaled_masked_softmax_fwd(x, mask, scale, causal),
    ]


BAD_INPUTS = {
    "x_1d": (lambda d: (torch.randn(7, device=d), None), r"\bx\b"),
    "x_0d": (lambda d: (torch.tensor(1.5, device=d), None), r"\bx\b"),
    "x_int": (lambda d: (torch.randint(0, 9, (3, 4), device=d), None), r"\bx\b"),
    "x_bool": (lambda d: (torch.rand(3, 4, device=d) < 0.5, None), r"\bx\b"),
    "mask_not_broadcastable": (lambda d: (torch.randn(2, 3, 4, device=d), torch.rand(3, 5, device=d) < 0.5), r"\bmask\b"),
    "mask_too_long": (lambda d: (torch.randn(3, 4, device=d), torch.randn(5, device=d)), r"\bmask\b"),
    "mask_int": (lambda d: (torch.randn(3, 4, device=d), torch.randint(0, 2, (3, 4), device=d)), r"\bmask\b"),
    "mask_uint8": (lambda d: (torch.randn(3, 4, device=d), torch.randint(0, 2, (4,), dtype=torch.uint8, device=d)), r"\bmask\b"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_name_the_argument(device, case):
    make, pattern = BAD_INPUTS[case]
    x, mask = make(device)
    for call in _call_paths(x, mask):
        with pytest.raises(USER_ERRORS, match=pattern):
            call()


def test_bwd_op_rejects_mismatched_shapes(device, gen):
    y = randn((2, 3, 5), torch.float32, device, gen)
    dy = randn((2, 3, 6), torch.float32, device, gen)
    with pytest.raises(USER_ERRORS, match=r"\bdy\b"):
        OPS.scaled_masked_softmax_bwd(y, dy, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to put the mask on another device")
def test_mask_on_other_device():
    pairs = [("cpu", "cuda")] + ([("cuda", "cpu")] if HAS_CUDA else [])
    for xd, md in pairs:
        x = torch.randn(2, 3, 4, device=xd)
        mask = torch.rand(3, 4, device=md) < 0.5
        for call in _call_paths(x, mask):
            with pytest.raises(USER_ERRORS, match=r"\bmask\b"):
                call()


# ---------------------------------------------------------------------- build info


def test_build_info():
    info = pyattn.build_info()
    assert isinstance(info, dict)
    for key in ("cuda", "cuda_archs", "cpu_isa", "torch_built_with", "torch_version", "compiler"):
        assert key in info, f"build_info() lacks {key!r}: {sorted(info)}"
    assert isinstance(info["cuda"], bool)
    assert isinstance(info["cuda_archs"], (list, tuple, str))
    if info["cuda"]:
        assert len(info["cuda_archs"]) > 0
    assert info["cpu_isa"] in ("generic", "avx2", "avx512", "avx512_bf16"), info["cpu_isa"]
    assert isinstance(info["compiler"], str) and info["compiler"]
    # The extension must be built against the torch it runs with: its C++ ABI is not
    # stable across minor versions. torch_built_with comes from the headers it compiled with.
    major_minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    assert info["torch_built_with"].split(".")[:2] == major_minor.split("."), (info["torch_built_with"], torch.__version__)
    if torch.version.cuda is None:
        assert info["cuda"] is False
