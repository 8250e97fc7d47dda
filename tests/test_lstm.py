"""LSTM: the fused cell and sequence ops, their autograd, and the drop-in nn modules.

Checked against pyattn/reference/lstm.py (NumPy float64) per device, dtype and CPU code
path, and against torch.nn.LSTM / LSTMCell for parity (outputs, gradients, init,
state_dicts both ways).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import pyattn
from conftest import CUDA_SKIP_REASON, HAS_CUDA, Tol, assert_close, assert_err_within_2x_torch, randn, to_np
from pyattn.functional import lstm, lstm_cell
from pyattn.reference import lstm as ref

OPS = torch.ops.pyattn
USER_ERRORS = (RuntimeError, ValueError, TypeError)
F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
DTYPES = [F32, F64, BF16]

# LSTM outputs go through a few GEMMs and T steps: a looser fp32 table than one kernel's.
SEQ_TOL = {F64: Tol(1e-11, 1e-9), F32: Tol(2e-5, 1e-4), BF16: Tol(6e-2, 6e-2)}


def _dtype_id(dtype) -> str:
    return str(dtype).replace("torch.", "")


def make_weights(c, h, p, dtype, gen, bias=True, proj=False, scale=0.5, device="cpu"):
    """(w_ih, w_hh, b_ih, b_hh, w_hr) as leaf tensors; None where absent."""
    d = device
    w = [randn((4 * h, c), dtype, d, gen, std=scale), randn((4 * h, p if proj else h), dtype, d, gen, std=scale)]
    w += [randn((4 * h,), dtype, d, gen), randn((4 * h,), dtype, d, gen)] if bias else [None, None]
    w += [randn((p, h), dtype, d, gen, std=scale)] if proj else [None]
    return [None if t is None else t.requires_grad_() for t in w]


def np_or_none(t):
    return None if t is None else to_np(t)


# ------------------------------------------------------------- activations (kernel)


def test_activations_accurate_to_fp32(cpu_isa):
    """gates = x @ I: the saved activations are sigmoid/tanh of x itself, in fp32."""
    h = 37  # 4H = 148 columns: full vectors and a tail on every ISA
    specials = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 0.625, -0.625, 88.0, -88.0, 200.0, -200.0])
    z = torch.cat([torch.linspace(-30, 30, 4001), specials, torch.linspace(-0.7, 0.7, 1001)])
    z = torch.cat([z, torch.zeros((-z.numel()) % (4 * h))]).reshape(-1, 4 * h)
    n = z.shape[0]
    _, _, act = OPS.lstm_cell_fwd(z, torch.zeros(n, h), torch.zeros(n, h), torch.eye(4 * h), torch.zeros(4 * h, h), None, None)
    z64 = z.double().numpy()
    want = np.concatenate(
        [1 / (1 + np.exp(-z64[:, :2 * h])), np.tanh(z64[:, 2 * h:3 * h]), 1 / (1 + np.exp(-z64[:, 3 * h:]))], axis=1
    )
    err = np.abs(act.double().numpy() - want)
    normal = np.abs(want) > 1e-37
    # within 8 units of 2^-24 relative (torch's own sigmoid/tanh: ~2.3), and 1 ulp of 1 absolute
    assert (err[normal] / np.abs(want[normal])).max() <= 8 * 2.0**-24, (err / np.maximum(np.abs(want), 1e-37)).max()
    assert err.max() <= 2.0**-23, err.max()


# --------------------------------------------------------------- cell vs reference


@pytest.mark.parametrize("shape", [(1, 3, 1), (4, 7, 19), (3, 16, 32), (5, 9, 40)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_cell_matches_reference(cpu_isa, dtype, shape, gen):
    check_cell(shape, dtype, "cpu", gen)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_cell_matches_reference_on_device(device, dtype, gen):
    check_cell((5, 9, 40), dtype, device, gen)


def check_cell(shape, dtype, device, gen):
    n, c, h = shape
    x, h0 = randn((n, c), dtype, device, gen), randn((n, h), dtype, device, gen)
    c0 = randn((n, h), dtype, device, gen, std=2.0)
    w_ih, w_hh, b_ih, b_hh, _ = make_weights(c, h, h, dtype, gen, device=device)
    for t in (x, h0, c0):
        t.requires_grad_()
    h1, c1 = lstm_cell(x, (h0, c0), w_ih, w_hh, b_ih, b_hh)
    rh, rc, cache = ref.lstm_cell_fwd(*map(to_np, (x, h0, c0, w_ih, w_hh, b_ih, b_hh)))
    tol = SEQ_TOL[dtype]
    # magnitudes at least 1 (the scale of the inputs): one cancelling element of a tiny
    # tensor (H = 1) must not be judged against its own near-zero size in bf16
    assert_close(h1, rh, tol=tol, magnitude=max(float(np.abs(rh).max()), 1.0), msg="h'")
    assert_close(c1, rc, tol=tol, magnitude=max(float(np.abs(rc).max()), 1.0), msg="c'")
    dh, dc = randn((n, h), dtype, device, gen), randn((n, h), dtype, device, gen)
    grads = torch.autograd.grad((h1, c1), (x, h0, c0, w_ih, w_hh, b_ih, b_hh), (dh, dc))
    rg = ref.lstm_cell_bwd(to_np(dh), to_np(dc), cache, to_np(w_ih), to_np(w_hh))
    for g, k in zip(grads, ["dx", "dh", "dc", "dw_ih", "dw_hh", "db", "db"]):
        assert_close(g, rg[k], tol=tol, magnitude=max(float(np.abs(rg[k]).max()), 1.0), msg=k)


# ----------------------------------------------------------- sequence vs reference

SEQ_CASES = {
    # name: (T, N, C, H, P or 0, batch_sizes or None, reverse)
    "plain": (5, 3, 4, 8, 0, None, False),
    "reverse": (5, 3, 4, 8, 0, None, True),
    "proj": (4, 2, 5, 9, 3, None, False),
    "proj_reverse": (4, 2, 5, 9, 3, None, True),
    "packed": (5, 4, 3, 17, 0, [4, 4, 3, 1, 1], False),
    "packed_reverse_proj": (5, 4, 3, 17, 5, [4, 3, 3, 2, 1], True),
    "n1_t1": (1, 1, 2, 3, 0, None, False),
    "empty_t": (0, 2, 3, 4, 0, None, False),
    # On CUDA without a projection, batches up to 8 take the CUDA-core persistent loop
    # (kernels/cuda/lstm_persistent.cu); batch 11 with H 8 takes the tensor-core one
    # (lstm_persistent_mma.cu) in fp16 / bf16 (fp32 runs strict here: see conftest's
    # device), the others the per-step loop (H 6 rows are not whole 16-byte pieces).
    "batch_11": (3, 11, 4, 8, 0, None, False),
    "packed_reverse_batch_10": (4, 10, 3, 6, 0, [10, 9, 4, 2], True),
}


@pytest.mark.parametrize("case", list(SEQ_CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_seq_matches_reference(device, dtype, case, gen):
    check_seq(SEQ_CASES[case], dtype, device, gen, case)


def check_seq(spec, dtype, device, gen, case="", bias=True):
    T, N, C, H, P, bs, reverse = spec
    proj = P > 0
    P = P or H
    bs_t = torch.tensor(bs) if bs is not None else None  # on the CPU, as PackedSequence keeps it
    x = randn((sum(bs), C) if bs else (T, N, C), dtype, device, gen).requires_grad_()
    h0 = randn((N, P), dtype, device, gen).requires_grad_()
    c0 = randn((N, H), dtype, device, gen).requires_grad_()
    w_ih, w_hh, b_ih, b_hh, w_hr = make_weights(C, H, P, dtype, gen, bias=bias, proj=proj, device=device)
    y, h_n, c_n = pyattn.ops.lstm.LstmSeq.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, bs_t, reverse)
    ry, rh, rc, caches = ref.lstm_seq_fwd(
        *map(np_or_none, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)), batch_sizes=bs, reverse=reverse
    )
    tol = SEQ_TOL[dtype]
    assert_close(y, ry, tol=tol, msg=f"{case} y")
    assert_close(h_n, rh, tol=tol, msg=f"{case} h_n")
    assert_close(c_n, rc, tol=tol, msg=f"{case} c_n")
    dy, dh, dc = (randn(t.shape, dtype, device, gen) for t in (y, h_n, c_n))
    wrt = [t for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) if t is not None]
    grads = torch.autograd.grad((y, h_n, c_n), wrt, (dy, dh, dc))
    rg = ref.lstm_seq_bwd(to_np(dy), to_np(dh), to_np(dc), to_np(x), caches, to_np(w_ih), to_np(w_hh),
                          np_or_none(w_hr), batch_sizes=bs, reverse=reverse)
    names = ["dx", "dh0", "dc0", "dw_ih", "dw_hh"] + (["db", "db"] if bias else []) + (["dw_hr"] if proj else [])
    assert len(names) == len(grads)
    for g, k in zip(grads, names):
        mag = max(float(np.abs(rg[k]).max(initial=0.0)), 1.0)
        assert_close(g, rg[k], tol=tol, magnitude=mag, msg=f"{case} {k}")


# fp32 on the CPU without projection runs the fused loop (packed GEMM + pointwise per
# 32-unit block, kernels/cpu/packed_gemm.h): hidden sizes past one block and not a
# multiple of it, batches past a micro-kernel row block (6 AVX2, 12 AVX-512, 4 generic)
# and of one row, growing and shrinking packed batches. Batches of 16 or more also do
# the input product per step in the loop (csrc/lstm.cpp fuse_input); smaller ones first.
FUSED_CASES = {
    # name: (T, N, C, H, 0, batch_sizes or None, reverse)
    "dense": (4, 13, 5, 37, 0, None, False),
    "reverse_h70": (3, 7, 9, 70, 0, None, True),
    "n1": (5, 1, 3, 33, 0, None, False),
    "n25_h64_fused_x": (3, 25, 8, 64, 0, None, False),
    "packed": (5, 9, 4, 40, 0, [9, 7, 7, 2, 1], False),
    "packed_fused_x": (5, 19, 4, 40, 0, [19, 16, 9, 2, 1], False),
    "packed_reverse_fused_x": (5, 19, 4, 40, 0, [19, 16, 9, 2, 1], True),
    # one step: dW_hh is h0's term alone (csrc/lstm.cpp takes it from views of y and h0)
    "t1_reverse": (1, 5, 3, 20, 0, None, True),
    # a batch of more than one row block per task, hidden past several 32-unit blocks
    "n32_h100_reverse": (3, 32, 6, 100, 0, None, True),
}


@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_fused_seq_matches_reference(cpu_isa, case, gen):
    check_seq(FUSED_CASES[case], F32, "cpu", gen, case)


@pytest.mark.parametrize("case", ["dense", "packed_reverse_fused_x", "t1_reverse"])
def test_fused_seq_without_bias(cpu_isa, case, gen):
    """No b_ih / b_hh: the fused backward sums no bias gradient (its dbias is null)."""
    check_seq(FUSED_CASES[case], F32, "cpu", gen, case, bias=False)


@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_fused_seq_inference_matches_reference(cpu_isa, case, gen):
    """need_backward=False: act and c live in per-step scratch (one step's gates, two
    steps' c, alternating); the outputs are the reference's and nothing is returned to save."""
    T, N, C, H, _, bs, reverse = FUSED_CASES[case]
    bs_t = torch.tensor(bs) if bs is not None else None
    x = randn((sum(bs), C) if bs else (T, N, C), F32, gen=gen)
    h0, c0 = randn((N, H), F32, gen=gen), randn((N, H), F32, gen=gen)
    w_ih, w_hh, b_ih, b_hh, w_hr = (None if w is None else w.detach() for w in make_weights(C, H, H, F32, gen))
    y, h_n, c_n, act, c_all, h_pre = OPS.lstm_seq_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, bs_t, reverse, False)
    ry, rh, rc, _ = ref.lstm_seq_fwd(*map(np_or_none, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)), batch_sizes=bs,
                                     reverse=reverse)
    tol = SEQ_TOL[F32]
    assert_close(y, ry, tol=tol, msg=f"{case} y")
    assert_close(h_n, rh, tol=tol, msg=f"{case} h_n")
    assert_close(c_n, rc, tol=tol, msg=f"{case} c_n")
    assert act.numel() == c_all.numel() == h_pre.numel() == 0
    saved = OPS.lstm_seq_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, bs_t, reverse, True)
    assert all(torch.equal(a, b) for a, b in zip((y, h_n, c_n), saved[:3])), "scratch changed the arithmetic"


def test_module_inference_saves_nothing_and_matches_training(gen):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    m = pyattn.nn.LSTM(12, 40, num_layers=2, bidirectional=True)
    x = torch.randn(6, 20, 12, generator=gen)
    with torch.no_grad():
        y0, (h0, c0) = m(x)
    y1, (h1, c1) = m(x)
    assert y1.requires_grad and not y0.requires_grad
    assert torch.equal(y0, y1.detach()) and torch.equal(h0, h1.detach()) and torch.equal(c0, c1.detach())
    y1.sum().backward()  # the training call saved what backward needs
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fused_seq_any_thread_count(threads, gen):
    """One worker runs every task itself; more share them (3 > the cores here: workers
    that are descheduled while others wait). The result is the same."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_seq((6, 17, 7, 100, 0, [17, 17, 9, 9, 4, 1], True), F32, "cpu", gen, f"{threads} threads")
    finally:
        torch.set_num_threads(before)


def test_cell_packed_weights(cpu_isa, gen):
    """lstm_cell_pack once, reused: the same outputs as packing per call, and the
    gradients still reach w_ih and w_hh."""
    n, c, h = 8, 11, 45
    x, h0, c0 = randn((n, c), F32, gen=gen), randn((n, h), F32, gen=gen), randn((n, h), F32, gen=gen)
    w_ih, w_hh, b_ih, b_hh, _ = make_weights(c, h, h, F32, gen)
    packed = OPS.lstm_cell_pack(w_ih.detach(), w_hh.detach())
    h1, c1 = lstm_cell(x, (h0, c0), w_ih, w_hh, b_ih, b_hh, w_packed=packed)
    h2, c2 = lstm_cell(x, (h0, c0), w_ih, w_hh, b_ih, b_hh)
    assert torch.equal(h1, h2) and torch.equal(c1, c2)
    g1 = torch.autograd.grad((h1.sum(), c1.sum()), (w_ih, w_hh))
    g2 = torch.autograd.grad((h2.sum(), c2.sum()), (w_ih, w_hh))
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="w_packed has shape"):
        lstm_cell(x, (h0, c0), w_ih, w_hh, b_ih, b_hh, w_packed=packed[:-1])


def test_lstm_cell_module_repacks_when_weights_change(gen):
    """The module's packed copy follows its weights: in-place updates (an optimizer step),
    load_state_dict, and .data changes followed by repack()."""
    torch.manual_seed(5)
    ours, peer = pyattn.nn.LSTMCell(6, 35), torch.nn.LSTMCell(6, 35)
    peer.load_state_dict(ours.state_dict())
    x, hx = randn((4, 6), F32, gen=gen), (randn((4, 35), F32, gen=gen), randn((4, 35), F32, gen=gen))

    def agree(msg):
        for a, b in zip(ours(x, hx), peer(x, hx)):
            assert_close(a, b.double(), F32, msg=msg)

    agree("fresh")
    opt_o, opt_p = torch.optim.SGD(ours.parameters(), lr=0.5), torch.optim.SGD(peer.parameters(), lr=0.5)
    for m, opt in ((ours, opt_o), (peer, opt_p)):
        m(x, hx)[0].pow(2).sum().backward()
        opt.step()
    agree("after an optimizer step")
    peer.load_state_dict(pyattn.nn.LSTMCell(6, 35).state_dict())
    ours.load_state_dict(peer.state_dict())
    agree("after load_state_dict")
    w = randn(tuple(peer.weight_hh.shape), F32, gen=gen)
    peer.weight_hh.data.copy_(w)
    ours.weight_hh.data.copy_(w)
    ours.repack()
    agree("after .data and repack()")


def test_seq_bf16_within_2x_torch(gen):
    """bf16 over 20 steps: our error vs fp64 at most 2x that of torch.nn.LSTM in bf16."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    m64 = torch.nn.LSTM(16, 32, num_layers=2).double()
    x = randn((20, 4, 16), F64, gen=gen)
    truth, (th, tc) = m64(x)
    ours = pyattn.nn.LSTM(16, 32, num_layers=2).to(BF16)
    ours.load_state_dict(m64.state_dict())
    peer = torch.nn.LSTM(16, 32, num_layers=2).to(BF16)
    peer.load_state_dict(m64.state_dict())
    with torch.no_grad():
        yo, (ho, co) = ours(x.to(BF16))
        yp, (hp, cp) = peer(x.to(BF16))
    assert_err_within_2x_torch(yo, yp, truth.detach(), msg="y")
    assert_err_within_2x_torch(co, cp, tc.detach(), msg="c_n")


def test_cell_bf16_within_2x_torch(gen):
    """bf16 cell: our error vs fp64 at most 2x that of torch.nn.LSTMCell in bf16."""
    m64 = torch.nn.LSTMCell(24, 40, dtype=F64)
    ours, peer = pyattn.nn.LSTMCell(24, 40, dtype=BF16), torch.nn.LSTMCell(24, 40, dtype=BF16)
    ours.load_state_dict(m64.state_dict())
    peer.load_state_dict(m64.state_dict())
    x, h, c = randn((16, 24), F64, gen=gen), randn((16, 40), F64, gen=gen), randn((16, 40), F64, gen=gen)
    # the truth from the bf16-rounded inputs and weights, so only the computation differs
    m64.load_state_dict({k: v.to(BF16).double() for k, v in m64.state_dict().items()})
    xb, hb, cb = (t.to(BF16) for t in (x, h, c))
    with torch.no_grad():
        th, tc = m64(xb.double(), (hb.double(), cb.double()))
        oh, oc = ours(xb, (hb, cb))
        ph, pc = peer(xb, (hb, cb))
    assert_err_within_2x_torch(oh, ph, th, msg="h'")
    assert_err_within_2x_torch(oc, pc, tc, msg="c'")


@st.composite
def seq_cases(draw):
    n = draw(st.integers(1, 5))
    packed = draw(st.booleans())
    lengths = sorted((draw(st.integers(1, 6)) for _ in range(n)), reverse=True) if packed else None
    h = draw(st.integers(1, 35))
    return dict(
        T=max(lengths) if packed else draw(st.integers(0, 6)),
        N=n,
        C=draw(st.integers(1, 20)),
        H=h,
        P=draw(st.integers(1, h - 1)) if h > 1 and draw(st.booleans()) else 0,
        batch_sizes=[sum(1 for l in lengths if l > t) for t in range(max(lengths))] if packed else None,
        reverse=draw(st.booleans()),
        bias=draw(st.booleans()),
        dtype=draw(st.sampled_from([F32, F64])),
        strided_x=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@hyp_settings(max_examples=25)
@given(case=seq_cases())
def test_random_sequences(case):
    """Random sizes (hidden sizes off the vector width), packing, direction, bias and
    projection, and a non-contiguous x, against the reference."""
    gen = torch.Generator().manual_seed(case["seed"])
    T, N, C, H, P, bs, dtype = (case[k] for k in ("T", "N", "C", "H", "P", "batch_sizes", "dtype"))
    proj = P > 0
    P = P or H
    shape = (sum(bs), C) if bs else (T, N, C)
    x = randn(shape[:-1] + (2 * C,), dtype, gen=gen)[..., ::2] if case["strided_x"] else randn(shape, dtype, gen=gen)
    x.requires_grad_()
    h0, c0 = randn((N, P), dtype, gen=gen).requires_grad_(), randn((N, H), dtype, gen=gen).requires_grad_()
    ws = make_weights(C, H, P, dtype, gen, bias=case["bias"], proj=proj)
    bs_t = torch.tensor(bs) if bs else None
    y, h_n, c_n = pyattn.ops.lstm.LstmSeq.apply(x, h0, c0, *ws, bs_t, case["reverse"])
    ry, rh, rc, caches = ref.lstm_seq_fwd(*map(np_or_none, (x, h0, c0, *ws)), batch_sizes=bs, reverse=case["reverse"])
    tol = SEQ_TOL[dtype]
    for a, e in ((y, ry), (h_n, rh), (c_n, rc)):
        assert_close(a, e, tol=tol, magnitude=1.0, msg=str(case))
    dy, dh, dc = (randn(t.shape, dtype, gen=gen) for t in (y, h_n, c_n))
    wrt = [t for t in (x, h0, c0, *ws) if t is not None]
    grads = torch.autograd.grad((y, h_n, c_n), wrt, (dy, dh, dc), allow_unused=True)
    rg = ref.lstm_seq_bwd(to_np(dy), to_np(dh), to_np(dc), to_np(x), caches, to_np(ws[0]), to_np(ws[1]),
                          np_or_none(ws[4]), batch_sizes=bs, reverse=case["reverse"])
    names = ["dx", "dh0", "dc0", "dw_ih", "dw_hh"] + (["db", "db"] if case["bias"] else []) + (["dw_hr"] if proj else [])
    for g, k in zip(grads, names):
        g = torch.zeros_like(wrt[names.index(k)]) if g is None else g
        assert_close(g, rg[k], tol=tol, magnitude=max(float(np.abs(rg[k]).max(initial=0.0)), 1.0), msg=f"{k} {case}")


# ----------------------------------------------------------------- gradcheck (fp64)


def test_gradcheck_cell(gen):
    x, h, c = (randn((3, n), F64, gen=gen).requires_grad_() for n in (4, 5, 5))
    w_ih, w_hh, b_ih, b_hh, _ = make_weights(4, 5, 5, F64, gen)
    assert torch.autograd.gradcheck(lambda *a: lstm_cell(a[0], (a[1], a[2]), *a[3:]), (x, h, c, w_ih, w_hh, b_ih, b_hh))


GRADCHECK_SEQ = {
    "plain": (3, 2, 2, 3, 0, None, False),
    "proj_reverse": (3, 2, 2, 4, 2, None, True),
    "packed_reverse_proj": (4, 3, 2, 3, 2, [3, 2, 2, 1], True),
    "packed": (3, 3, 2, 3, 0, [3, 3, 1], False),
}


@pytest.mark.parametrize("case", list(GRADCHECK_SEQ))
def test_gradcheck_seq(case, gen):
    T, N, C, H, P, bs, reverse = GRADCHECK_SEQ[case]
    proj = P > 0
    P = P or H
    bs_t = torch.tensor(bs) if bs is not None else None
    x = randn((sum(bs), C) if bs else (T, N, C), F64, gen=gen).requires_grad_()
    h0, c0 = randn((N, P), F64, gen=gen).requires_grad_(), randn((N, H), F64, gen=gen).requires_grad_()
    ws = make_weights(C, H, P, F64, gen, proj=proj)

    def f(*a):
        return pyattn.ops.lstm.LstmSeq.apply(*a, bs_t, reverse)

    assert torch.autograd.gradcheck(f, (x, h0, c0, *ws))


# ---------------------------------------------------------------- opcheck, compile


def _op_args(gen, dtype=F32, proj=True, packed=False):
    T, N, C, H, P = 3, 3, 4, 6, 4 if proj else 6
    bs = torch.tensor([3, 2, 2]) if packed else None
    x = randn((7, C) if packed else (T, N, C), dtype, gen=gen)
    h0, c0 = randn((N, P), dtype, gen=gen), randn((N, H), dtype, gen=gen)
    ws = [None if w is None else w.detach() for w in make_weights(C, H, P, dtype, gen, proj=proj)]
    return x, h0, c0, ws, bs


@pytest.mark.parametrize("dtype", [F32, BF16], ids=_dtype_id)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_opcheck_seq(dtype, packed, gen):
    x, h0, c0, (w_ih, w_hh, b_ih, b_hh, w_hr), bs = _op_args(gen, dtype, packed=packed)
    args = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, bs, True)
    torch.library.opcheck(OPS.lstm_seq_fwd.default, args)
    torch.library.opcheck(OPS.lstm_seq_fwd.default, args + (False,))  # inference: nothing saved
    y, h_n, c_n, act, c_all, h_pre = OPS.lstm_seq_fwd(*args)
    dy, dh, dc = torch.randn_like(y), torch.randn_like(h_n), None
    bargs = (dy, dh, dc, x, h0, c0, w_ih, w_hh, w_hr, y, act, c_all, h_pre, bs, True, True)
    torch.library.opcheck(OPS.lstm_seq_bwd.default, bargs)


@pytest.mark.parametrize("dtype", [F32, BF16], ids=_dtype_id)
def test_opcheck_cell(dtype, gen):
    x, h, c = randn((3, 4), dtype, gen=gen), randn((3, 5), dtype, gen=gen), randn((3, 5), dtype, gen=gen)
    w_ih, w_hh, b_ih, b_hh, _ = [None if w is None else w.detach() for w in make_weights(4, 5, 5, dtype, gen)]
    torch.library.opcheck(OPS.lstm_cell_fwd.default, (x, h, c, w_ih, w_hh, b_ih, None))
    if dtype == F32:  # packed weights: fp32 CPU only
        torch.library.opcheck(OPS.lstm_cell_pack.default, (w_ih, w_hh))
        packed = OPS.lstm_cell_pack(w_ih, w_hh)
        torch.library.opcheck(OPS.lstm_cell_fwd.default, (x, h, c, w_ih, w_hh, b_ih, b_hh, packed))
    h1, c1, act = OPS.lstm_cell_fwd(x, h, c, w_ih, w_hh, b_ih, b_hh)
    torch.library.opcheck(OPS.lstm_cell_bwd.default, (torch.randn_like(h1), None, x, h, c, w_ih, w_hh, act, c1, True))


def test_torch_compile_fullgraph(fresh_dynamo, gen):
    m = pyattn.nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
    cell = pyattn.nn.LSTMCell(4, 5)

    def f(x):
        y, (h, c) = m(x * 2.0)
        h1, c1 = cell(x[0])
        return y.sum(-1) + h.sum() + c1.sum()

    cf = torch.compile(f, fullgraph=True)
    x = randn((5, 3, 4), F32, gen=gen).requires_grad_()
    out_c, out_e = cf(x), f(x)
    assert_close(out_c, out_e.detach().double(), F32, msg="compiled forward")
    (g_c,) = torch.autograd.grad(out_c.sum(), x)
    (g_e,) = torch.autograd.grad(out_e.sum(), x)
    assert_close(g_c, g_e.double(), F32, msg="compiled backward")


def test_stacked_lstm_matches_reference(gen):
    """pyattn.nn.LSTM (3 layers, bidirectional, projected) against the NumPy stack."""
    m = pyattn.nn.LSTM(4, 6, num_layers=3, bidirectional=True, proj_size=2, dtype=F64)
    x = randn((5, 2, 4), F64, gen=gen)
    hx = (randn((6, 2, 2), F64, gen=gen), randn((6, 2, 6), F64, gen=gen))
    y, (h_n, c_n) = m(x, hx)
    params = [[[np_or_none(w) for w in m._weights()[layer * 2 + d]] for d in range(2)] for layer in range(3)]
    ry, rh, rc = ref.lstm_fwd(to_np(x), to_np(hx[0]), to_np(hx[1]), params, 3, bidirectional=True)
    for a, b in ((y, ry), (h_n, rh), (c_n, rc)):
        assert_close(a, b, tol=SEQ_TOL[F64])


# ------------------------------------------------------------ parity with torch.nn

NN_CASES = {
    "1layer": dict(),
    "2layer_bidir": dict(num_layers=2, bidirectional=True),
    "3layer_proj_batch_first": dict(num_layers=3, proj_size=3, batch_first=True),
    "bidir_proj_nobias": dict(bidirectional=True, proj_size=2, bias=False),
    "2layer_dropout0_batch_first_bidir": dict(num_layers=2, dropout=0.0, batch_first=True, bidirectional=True),
}


def _pair(kw, dtype=F64, seed=0):
    torch.manual_seed(seed)
    peer = torch.nn.LSTM(5, 7, dtype=dtype, **kw)
    torch.manual_seed(seed)
    ours = pyattn.nn.LSTM(5, 7, dtype=dtype, **kw)
    return peer, ours


def _outputs_and_grads(m, x, hx, params_first):
    out, (h, c) = m(x, hx)
    data = out.data if isinstance(out, PackedSequence) else out
    loss = (data * torch.linspace(-1, 1, data.shape[-1], dtype=data.dtype)).sum() + (h**2).sum() + c.sum()
    leaves = [x.data if isinstance(x, PackedSequence) else x] + [t for t in (hx or ()) if t is not None]
    return (data, h, c), torch.autograd.grad(loss, list(m.parameters()) + leaves)


@pytest.mark.parametrize("with_hx", [False, True], ids=["no_hx", "hx"])
@pytest.mark.parametrize("case", list(NN_CASES))
def test_lstm_matches_torch(case, with_hx, gen):
    kw = NN_CASES[case]
    peer, ours = _pair(kw)
    # same init under the same seed, same names and shapes in the same order
    assert [(k, v.shape) for k, v in peer.state_dict().items()] == [(k, v.shape) for k, v in ours.state_dict().items()]
    for (k, a), b in zip(peer.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(a, b), k
    assert repr(peer).replace("LSTM", "X") == repr(ours).replace("LSTM", "X")
    ndir = 2 if kw.get("bidirectional") else 1
    L, P = kw.get("num_layers", 1), kw.get("proj_size", 0) or 7
    x = randn((3, 6, 5) if kw.get("batch_first") else (6, 3, 5), F64, gen=gen).requires_grad_()
    hx = (randn((L * ndir, 3, P), F64, gen=gen).requires_grad_(), randn((L * ndir, 3, 7), F64, gen=gen).requires_grad_()) if with_hx else None
    outs_p, grads_p = _outputs_and_grads(peer, x, hx, True)
    outs_o, grads_o = _outputs_and_grads(ours, x, hx, True)
    for a, b in zip(outs_o + grads_o, outs_p + grads_p):
        assert_close(a, b, tol=SEQ_TOL[F64])


@pytest.mark.parametrize("case", ["1layer", "2layer_bidir", "3layer_proj_batch_first"])
def test_lstm_packed_matches_torch(case, gen):
    kw = NN_CASES[case]
    peer, ours = _pair(kw)
    bf = kw.get("batch_first", False)
    L, ndir, P = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1, kw.get("proj_size", 0) or 7
    x = randn((4, 6, 5) if bf else (6, 4, 5), F64, gen=gen)
    packed = pack_padded_sequence(x, torch.tensor([3, 6, 1, 3]), batch_first=bf, enforce_sorted=False)
    packed = PackedSequence(packed.data.requires_grad_(), *packed[1:])
    hx = (randn((L * ndir, 4, P), F64, gen=gen).requires_grad_(), randn((L * ndir, 4, 7), F64, gen=gen).requires_grad_())
    outs_p, grads_p = _outputs_and_grads(peer, packed, hx, True)
    outs_o, grads_o = _outputs_and_grads(ours, packed, hx, True)
    for a, b in zip(outs_o + grads_o, outs_p + grads_p):
        assert_close(a, b, tol=SEQ_TOL[F64])


@pytest.mark.parametrize("proj", [0, 3])
def test_lstm_unbatched_matches_torch(proj, gen):
    peer, ours = _pair(dict(num_layers=2, bidirectional=True, proj_size=proj))
    x = randn((6, 5), F64, gen=gen)
    hx = (randn((4, proj or 7), F64, gen=gen), randn((4, 7), F64, gen=gen))
    for h in (None, hx):
        yp, (hp, cp) = peer(x, h)
        yo, (ho, co) = ours(x, h)
        assert yo.shape == yp.shape and ho.shape == hp.shape and co.shape == cp.shape
        for a, b in ((yo, yp), (ho, hp), (co, cp)):
            assert_close(a, b, tol=SEQ_TOL[F64])


def test_lstm_fp32_matches_torch(gen):
    peer, ours = _pair(dict(num_layers=2, bidirectional=True), dtype=F32)
    x = randn((7, 4, 5), F32, gen=gen).requires_grad_()
    outs_p, grads_p = _outputs_and_grads(peer, x, None, True)
    outs_o, grads_o = _outputs_and_grads(ours, x, None, True)
    for a, b in zip(outs_o + grads_o, outs_p + grads_p):
        assert_close(a, b.double(), tol=SEQ_TOL[F32], magnitude=max(float(b.detach().abs().max()), 1.0))


@pytest.mark.skipif(not HAS_CUDA, reason=f"CUDA tests: {CUDA_SKIP_REASON}")
@pytest.mark.parametrize("batch", [8, 64])
def test_cuda_fp32_follows_cudnn_allow_tf32(batch, gen):
    """fp32 on CUDA follows torch.backends.cudnn.allow_tf32 as nn.LSTM does: fp32's
    accuracy when False (fp32's error against fp64), TF32 when True (within fp16's
    tolerance). At batch 64 the tensor-core kernels run fp32 as TF32 when allowed, else as
    3xTF32, so the error grows off the strict one only when allowed; at batch 8 (CUDA-core
    kernels) it stays strict."""
    C = H = 64
    ours = pyattn.nn.LSTM(C, H, device="cuda")
    truth = pyattn.nn.LSTM(C, H, device="cuda", dtype=torch.float64)
    truth.load_state_dict(ours.state_dict())
    x = randn((20, batch, C), torch.float32, gen=gen).cuda()
    y64, _ = truth(x.double())
    before = torch.backends.cudnn.allow_tf32
    errs = {}
    try:
        for allow in (False, True):
            torch.backends.cudnn.allow_tf32 = allow
            y, _ = ours(x)
            errs[allow] = float((y.double() - y64).abs().max())
    finally:
        torch.backends.cudnn.allow_tf32 = before
    assert errs[False] < 1e-5, errs
    assert errs[True] < 5e-3, errs
    if batch > 8:
        assert errs[True] > 4 * errs[False], f"TF32 allowed but the result is strict fp32's: {errs}"
    else:
        assert errs[True] < 1e-5, errs


def test_lstm_dropout(gen):
    peer, ours = _pair(dict(num_layers=2, dropout=0.5))
    x = randn((6, 3, 5), F64, gen=gen)
    ours.eval()
    peer.eval()
    assert_close(ours(x)[0], peer(x)[0].detach(), tol=SEQ_TOL[F64], msg="eval: no dropout")
    ours.train()
    torch.manual_seed(0)
    y1 = ours(x)[0]
    torch.manual_seed(1)
    y2 = ours(x)[0]
    assert not torch.allclose(y1, y2), "training with dropout=0.5 should draw different masks"


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_matches_torch(bias, gen):
    torch.manual_seed(3)
    peer = torch.nn.LSTMCell(5, 7, bias=bias, dtype=F64)
    torch.manual_seed(3)
    ours = pyattn.nn.LSTMCell(5, 7, bias=bias, dtype=F64)
    assert list(peer.state_dict()) == list(ours.state_dict())
    for a, b in zip(peer.state_dict().values(), ours.state_dict().values()):
        assert torch.equal(a, b)
    for batched in (True, False):
        x = randn((4, 5) if batched else (5,), F64, gen=gen).requires_grad_()
        hx = tuple(randn((4, 7) if batched else (7,), F64, gen=gen).requires_grad_() for _ in range(2))
        for h in (None, hx):
            res = []
            for m in (ours, peer):
                h1, c1 = m(x, h)
                leaves = [x] + list(m.parameters()) + (list(hx) if h is not None else [])
                res.append((h1, c1) + torch.autograd.grad((h1 * 1.5).sum() + (c1**2).sum(), leaves))
            for a, b in zip(*res):
                assert_close(a, b, tol=SEQ_TOL[F64])


def test_state_dict_both_ways(gen):
    kw = dict(num_layers=2, bidirectional=True, proj_size=3)
    torch.manual_seed(11)
    peer = torch.nn.LSTM(5, 7, **kw)
    torch.manual_seed(12)
    ours = pyattn.nn.LSTM(5, 7, **kw)
    ours.load_state_dict(peer.state_dict())
    ours.flatten_parameters()
    assert [[w.shape for w in ws] for ws in ours.all_weights] == [[w.shape for w in ws] for ws in peer.all_weights]
    x = randn((4, 2, 5), F32, gen=gen)
    assert torch.allclose(ours(x)[0], peer(x)[0], atol=1e-6)
    peer2 = torch.nn.LSTM(5, 7, **kw)
    torch.manual_seed(13)
    ours.reset_parameters()
    peer2.load_state_dict(ours.state_dict())
    assert torch.allclose(ours(x)[0], peer2(x)[0], atol=1e-6)
    cell_p, cell_o = torch.nn.LSTMCell(5, 7), pyattn.nn.LSTMCell(5, 7)
    cell_o.load_state_dict(cell_p.state_dict())
    assert torch.allclose(cell_o(x[0])[0], cell_p(x[0])[0], atol=1e-6)
    cell_p.load_state_dict(pyattn.nn.LSTMCell(5, 7).state_dict())


# ------------------------------------------------------------------------ bad inputs


def test_bad_inputs_name_the_argument():
    m = pyattn.nn.LSTM(5, 7, num_layers=2)
    with pytest.raises(USER_ERRORS, match=r"input_size"):
        m(torch.randn(4, 2, 6))
    with pytest.raises(USER_ERRORS, match=r"h_0"):
        m(torch.randn(4, 2, 5), (torch.zeros(2, 3, 7), torch.zeros(2, 2, 7)))
    with pytest.raises(USER_ERRORS, match=r"c_0"):
        m(torch.randn(4, 2, 5), (torch.zeros(2, 2, 7), torch.zeros(1, 2, 7)))
    with pytest.raises(USER_ERRORS, match=r"2D or 3D"):
        m(torch.randn(4, 2, 5, 1))
    cell = pyattn.nn.LSTMCell(5, 7)
    with pytest.raises(USER_ERRORS, match=r"input_size"):
        cell(torch.randn(3, 4))
    with pytest.raises(USER_ERRORS, match=r"hx\[1\]"):
        cell(torch.randn(3, 5), (torch.zeros(3, 7), torch.zeros(2, 7)))
    with pytest.raises(USER_ERRORS, match=r"proj_size"):
        pyattn.nn.LSTM(5, 7, proj_size=7)


def test_raw_ops_check_arguments(gen):
    x, h0, c0, (w_ih, w_hh, b_ih, b_hh, w_hr), _ = _op_args(gen)
    seq = OPS.lstm_seq_fwd
    cases = [
        (lambda: seq(x[..., :3], h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, None, False), r"\bw_ih\b"),
        (lambda: seq(x, h0[:2], c0, w_ih, w_hh, b_ih, b_hh, w_hr, None, False), r"\bh0\b"),
        (lambda: seq(x, h0, c0[:, :2], w_ih, w_hh, b_ih, b_hh, w_hr, None, False), r"\bc0\b"),
        (lambda: seq(x, h0, c0, w_ih, w_hh, b_ih[:3], b_hh, w_hr, None, False), r"\bb_ih\b"),
        (lambda: seq(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr.t(), None, False), r"\bw_hr\b"),
        (lambda: seq(x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, None, False), r"\bw_hh\b"),
        (lambda: seq(x, h0.double(), c0, w_ih, w_hh, b_ih, b_hh, w_hr, None, False), r"\bh0\b"),
        (lambda: seq(x.int(), h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, None, False), r"\bx\b"),
        (lambda: seq(x[0], h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, None, False), r"\bx\b"),
        (lambda: seq(x.reshape(9, 4), h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, torch.tensor([3, 4, 2]), False),
         r"batch_sizes"),
        (lambda: seq(x.reshape(9, 4), h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, torch.tensor([3, 3, 2]), False),
         r"batch_sizes"),
        (lambda: OPS.lstm_cell_fwd(x[0], h0, c0, w_ih, w_hh, b_ih, b_hh), r"\bw_hh\b"),
        (lambda: OPS.lstm_cell_fwd(x[0], c0, c0[:2], w_ih, w_hh.new_zeros(24, 6), b_ih, b_hh), r"\bc\b"),
    ]
    for i, (call, pattern) in enumerate(cases):
        with pytest.raises(USER_ERRORS, match=pattern):
            call()
