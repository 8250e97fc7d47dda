"""pyattn's CUDA kernels (attention, scaled masked softmax, the LSTM step, negative
sampling) without a GPU, against the
float64 references.

tests/cuda_emulation/emulate.h lets the host compiler build kernels/cuda/*.cu and run
every CUDA thread of a block on a CPU thread (barriers for __syncthreads / __syncwarp, an
exchange buffer for shuffles; mma.sync, ldmatrix and cp.async lane by lane from the PTX
ISA's layouts, in ptx_emulated.h); bindings.cpp calls the
kernels' own entry points (attention_fwd_cuda, scaled_masked_softmax_fwd_cuda, ...), so the dispatch
between the tensor-core kernels (fp16 / bf16 on compute capability 8+) and version 1 is
exercised too. That checks the kernels' logic and fragment layouts; races under the
GPU's scheduling and speed need a GPU (the CUDA cases of the other test files,
scripts/gpu_check.sh).
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import numpy as np
import pytest
import torch

from conftest import TOLERANCES, Tol, assert_close, randn, to_np
from pyattn.reference import attention as ref
from pyattn.reference import lstm as lstmref
from pyattn.reference import negative_sampling as nsref
from pyattn.reference import scaled_masked_softmax as smref

ROOT = pathlib.Path(__file__).resolve().parents[1]
EMU = ROOT / "tests" / "cuda_emulation"
LOW = [torch.float16, torch.bfloat16]
# What the tensor-core attention kernels take: fp16 and bf16 on m16n8k16, fp32 as 3xTF32.
TC = [torch.float16, torch.bfloat16, torch.float32]
TC_IDS = ["fp16", "bf16", "fp32"]
# Their tolerances: fp32 as 3xTF32 keeps 21-22 of an operand's 24 bits, and errs 1.3-1.9x
# as much as exact fp32 products (RMS, test_tensor_core_fp32_error_near_torch), so twice
# fp32's tolerance; TF32 alone misses it ~40x.
TC_TOL = {**TOLERANCES, torch.float32: Tol(atol=4e-6, rtol=4e-5)}


def _cuda_include() -> pathlib.Path | None:
    from torch.utils import cpp_extension

    for home in (os.environ.get("CUDA_HOME"), cpp_extension.CUDA_HOME, "/usr/local/cuda"):
        if not home:
            continue
        for inc in (pathlib.Path(home) / "include", pathlib.Path(home) / "targets" / "x86_64-linux" / "include"):
            if (inc / "cuda_fp16.h").is_file() and (inc / "cuda_runtime.h").is_file():
                return inc
    return None


@pytest.fixture(scope="module")
def emu():
    inc = _cuda_include()
    if inc is None:
        pytest.skip("CUDA toolkit headers (cuda_fp16.h) not found: cannot compile the emulated kernels")
    from torch.utils import cpp_extension

    sources = ["bindings.cpp", "runtime_stubs.cpp", "emu_attention.cpp", "emu_attention_mma_fwd.cpp", "emu_attention_mma_bwd.cpp",
               "emu_scaled_masked_softmax.cpp", "emu_lstm.cpp", "emu_lstm_persistent.cpp", "emu_lstm_persistent_mma.cpp",
               "emu_negative_sampling.cpp"]
    # csrc/: the glue's params builders (<op>_params.h), which bindings.cpp calls, and
    # dispatch.cpp's fold_leading_dims behind the scaled_masked_softmax builders.
    includes = [str(EMU), str(ROOT / "csrc"), str(ROOT / "kernels" / "include"), str(ROOT / "kernels"), str(inc)]
    if (inc / "cccl").is_dir():  # CUDA 13 keeps libcu++ (<cuda/atomic>) there
        includes.append(str(inc / "cccl"))
    return cpp_extension.load(
        name="pyattn_cuda_emulated",
        sources=[str(EMU / f) for f in sources] + [str(ROOT / "csrc" / "dispatch.cpp")],
        extra_include_paths=includes,
        extra_cflags=["-std=c++20", "-O1", "-pthread", "-DPYATTN_CUDA_EMULATION", "-w"],
        extra_ldflags=["-pthread"],
        verbose=False,
    )


@pytest.fixture
def cc80(emu):
    emu.set_compute_capability(8, 0)
    return emu


@pytest.fixture
def cc75(emu):
    """A pre-Ampere device: fp16 / bf16 forwards take version 1."""
    emu.set_compute_capability(7, 5)
    yield emu
    emu.set_compute_capability(8, 0)


class Case:
    """One attention problem: inputs, the kernel's arguments and the reference's."""

    def __init__(self, gen, shape, dtype, *, mask=None, causal=None, window=None, key_lengths=None,
                 dropout_p=0.0, seed=None):
        b, hq, hkv, lq, lk, d, dv = shape
        self.q = torch.randn(b, hq, lq, d, generator=gen).to(dtype)
        self.k = torch.randn(b, hkv, lk, d, generator=gen).to(dtype)
        self.v = torch.randn(b, hkv, lk, dv, generator=gen).to(dtype)
        self.dtype = dtype
        self.scale = 1.0 / np.sqrt(d)
        self.ref_kw = dict(mask=None if mask is None else to_np(mask), scale=self.scale, causal=causal,
                           window=window, key_lengths=key_lengths, dropout_p=dropout_p,
                           dropout_seed=seed)
        off = lk - lq if causal == "bottom_right" else 0
        wl, wr = (-1, -1) if window is None else window
        if causal is not None:
            wr = 0 if wr < 0 else min(wr, 0)
        kmask = torch.empty(0)
        if mask is not None:
            kmask = (mask.to(torch.uint8) if mask.dtype == torch.bool else mask).expand(b, hq, lq, lk)
        kl = torch.empty(0, dtype=torch.int64) if key_lengths is None else torch.tensor(key_lengths)
        drop, dscale = [], 0.0
        if dropout_p > 0:
            words = np.array(seed, dtype=np.int64)
            t = dropout_p * 2.0**32
            drop = [int(words[0]), int(words[1]), 0xFFFFFFFF if t >= 2.0**32 - 1 else int(t)]
            dscale = 1.0 / (1.0 - dropout_p) if dropout_p < 1.0 else 0.0
        self.args = (kmask, self.scale, off, wl, wr, kl, drop, dscale)

    def fwd(self, emu):
        return emu.attention_fwd(self.q, self.k, self.v, *self.args)

    def ref_fwd(self):
        return ref.attention_fwd(to_np(self.q), to_np(self.k), to_np(self.v), **self.ref_kw)


def _check_fwd(emu, case, msg, tol=None):
    out, lse = case.fwd(emu)
    r_out, r_lse = case.ref_fwd()
    assert_close(out, r_out, case.dtype, tol=tol, msg=f"{msg}: out")
    assert_close(lse, r_lse, case.dtype if case.dtype != torch.float64 else torch.float64, tol=tol, msg=f"{msg}: lse")


# (batch, hq, hkv, lq, lk, d, dv)
SHAPES = {
    "self": (1, 2, 2, 70, 70, 64, 64),
    "cross": (2, 2, 1, 33, 130, 64, 64),
    "gqa_d128": (1, 4, 2, 40, 90, 128, 128),
    "d32": (1, 1, 1, 20, 50, 32, 32),
    "dv_ne_d": (1, 2, 1, 17, 65, 80, 48),
    "lq1": (2, 2, 2, 1, 100, 64, 64),
    # several query blocks (128 rows at d 64, 64 at d 128) and key tiles (64 keys): the
    # two cp.async stages take turns
    "blocks_tiles": (1, 1, 1, 150, 300, 64, 64),
    "blocks_tiles_d128": (1, 2, 1, 70, 200, 128, 128),
    # head dim 256 (32 keys a tile); fp32 runs version 1 there
    "d256": (1, 2, 1, 40, 70, 256, 200),
}


@pytest.mark.parametrize("dtype", TC, ids=TC_IDS)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_tensor_core_forward(cc80, gen, shape, dtype):
    for causal in (None, "top_left", "bottom_right"):
        _check_fwd(cc80, Case(gen, shape, dtype, causal=causal), f"causal={causal}", TC_TOL[dtype])


@pytest.mark.parametrize("dtype", TC, ids=TC_IDS)
def test_tensor_core_forward_unaligned_rows(cc80, gen, dtype):
    """Rows that do not start 16-byte aligned (q: views at element 3 of rows of 70; v:
    rows of 53) take plain loads instead of cp.async; k's aligned rows still take it."""
    case = Case(gen, (2, 2, 1, 37, 90, 64, 48), dtype, causal="bottom_right")
    case.q = torch.randn(2, 2, 37, 70, generator=gen).to(dtype)[..., 3:67]
    case.v = torch.randn(2, 1, 90, 53, generator=gen).to(dtype)[..., :48]
    _check_fwd(cc80, case, "unaligned q and v rows", TC_TOL[dtype])


def _mask_cases(gen, shape, dtype):
    b, hq, _, lq, lk, _, _ = shape
    keep = torch.rand(b, 1, lq, lk, generator=gen) > 0.3
    keep[0, 0, 3] = False  # a row with no key: out 0, lse -inf
    add = (torch.randn(1, hq, lq, lk, generator=gen) * 2).to(dtype)
    return {
        "bool mask": dict(mask=keep),
        "additive mask": dict(mask=add),
        "key lengths, one item empty": dict(key_lengths=[0, lk - 23]),
        "window": dict(window=(20, 5)),
        "combined": dict(causal="bottom_right", window=(30, -1), mask=keep),
    }


@pytest.mark.parametrize("dtype", TC, ids=TC_IDS)
def test_tensor_core_forward_masks(cc80, gen, dtype):
    shape = (2, 2, 1, 50, 140, 64, 64)
    for name, kw in _mask_cases(gen, shape, dtype).items():
        _check_fwd(cc80, Case(gen, shape, dtype, **kw), name, TC_TOL[dtype])


@pytest.mark.parametrize("dtype", TC, ids=TC_IDS)
def test_tensor_core_forward_dropout(cc80, gen, seed, dtype):
    words = [seed & 0x7FFFFFFFFFFFFFFF, (seed * 7919) & 0x7FFFFFFFFFFFFFFF]
    _check_fwd(cc80, Case(gen, (1, 2, 2, 40, 100, 64, 64), dtype, causal="top_left", dropout_p=0.3, seed=words),
               "dropout 0.3", TC_TOL[dtype])
    out, _ = Case(gen, (1, 1, 1, 20, 40, 64, 64), dtype, dropout_p=1.0, seed=words).fwd(cc80)
    assert not out.float().abs().max().item(), "dropout p = 1 must give a zero output"


def test_tensor_core_forward_large_logits(cc80, gen):
    case = Case(gen, (1, 1, 1, 20, 64, 64, 64), torch.float16)
    case.q, case.k = case.q * 8, case.k * 8  # scores of several hundred: 2^(z - max) must not overflow
    out, _ = case.fwd(cc80)
    assert torch.isfinite(out.float()).all()
    _check_fwd(cc80, case, "large logits")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["fp32", "fp64", "fp16", "bf16"])
def test_version1_forward(cc75, gen, dtype):
    """fp64 always, and every dtype on a pre-Ampere device, take version 1."""
    for shape in ((1, 2, 1, 37, 70, 64, 64), (1, 1, 1, 5, 40, 200, 130)):
        for causal in (None, "bottom_right"):
            _check_fwd(cc75, Case(gen, shape, dtype, causal=causal), f"{shape} causal={causal}")
    shape = (2, 2, 1, 30, 70, 64, 64)
    for name, kw in _mask_cases(gen, shape, dtype).items():
        _check_fwd(cc75, Case(gen, shape, dtype, **kw), name)


def _check_bwd(emu, gen, seed, dtype, shape, tol=None):
    words = [seed & 0x7FFFFFFFFFFFFFFF, (seed * 7919) & 0x7FFFFFFFFFFFFFFF]
    b, hq, _, lq, lk, _, dv = shape
    add = (torch.randn(b, hq, lq, lk, generator=gen) * 2).to(dtype)
    for name, kw in {"plain": {}, "causal": dict(causal="top_left"), "additive mask": dict(mask=add),
                     "key lengths": dict(key_lengths=[0, lk - 20][-b:]), "dropout": dict(dropout_p=0.25, seed=words)}.items():
        case = Case(gen, shape, dtype, **kw)
        out, lse = case.fwd(emu)
        dout = torch.randn(b, hq, lq, dv, generator=gen).to(dtype)
        want_dmask = "mask" in kw
        dq, dk, dv_, dmask = emu.attention_bwd(case.q, case.k, case.v, out, dout, lse, *case.args, want_dmask)
        r = ref.attention_bwd(to_np(dout), to_np(case.q), to_np(case.k), to_np(case.v), **case.ref_kw)
        tol = tol or TOLERANCES[dtype]
        for got, want, what in ((dq, r[0], "dq"), (dk, r[1], "dk"), (dv_, r[2], "dv")):
            assert_close(got, want, dtype, tol=tol, msg=f"{name}: {what}")
        if want_dmask:
            assert_close(dmask, r[3], dtype, tol=tol, msg=f"{name}: dmask")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=["fp64", "fp32", "fp16", "bf16"])
def test_version1_backward(cc75, gen, seed, dtype):
    """fp64 always, and every dtype on a pre-Ampere device, take version 1."""
    _check_bwd(cc75, gen, seed, dtype, (2, 2, 1, 30, 70, 64, 48))


@pytest.mark.parametrize("dtype", TC, ids=TC_IDS)
@pytest.mark.parametrize("shape", [(1, 2, 1, 20, 40, 200, 160), (1, 1, 1, 40, 100, 256, 256)], ids=["d200", "d256"])
def test_backward_head_dims_above_128(cc80, gen, seed, dtype, shape):
    """Head dims 129-256: fp16 / bf16 on tensor cores, where two blocks share a key block's
    dk and dv columns (d200 / dv160: the second half partial; d256: 2 key blocks, 2 query
    tiles), fp32 in version 1 (its tensor-core kernels stop at 128)."""
    _check_bwd(cc80, gen, seed, dtype, shape)


@pytest.mark.parametrize("dtype", TC, ids=TC_IDS)
@pytest.mark.parametrize("shape", [(2, 2, 1, 30, 70, 64, 48), (1, 4, 2, 70, 33, 100, 128), (1, 2, 1, 100, 150, 64, 64)],
                         ids=["gqa_d64", "d128", "blocks_tiles"])
def test_tensor_core_backward(cc80, gen, seed, dtype, shape):
    """gqa_d64 and d128: partial tiles, dv != d; blocks_tiles: several key blocks (64 keys)
    and query tiles (32 queries) in dk/dv, several key tiles in dq, so the cp.async stages
    take turns; all with causal, masks, key lengths and dropout."""
    _check_bwd(cc80, gen, seed, dtype, shape, TC_TOL[dtype])


@pytest.mark.parametrize("shape", [(2, 2, 2, 64, 96, 64, 64), (1, 2, 2, 48, 80, 128, 128)], ids=["d64", "d128"])
def test_tensor_core_fp32_error_near_torch(cc80, gen, shape):
    """fp32 as 3xTF32 keeps fp32's accuracy. Against the fp64 truth, the RMS error of out,
    dq, dk and dv is compared with torch's own fp32 attention on the same inputs (CPU SDPA
    here, exact fp32 products): over 48 draws the ratio was 1.3-1.9, since 3xTF32 keeps
    21-22 of an operand's 24 bits; TF32 alone errs ~1000x more. On a GPU, torch's fp32
    SDPA (the memory-efficient kernel) is itself 3xTF32. The RMS, not the max, because
    the max of one draw scatters (0.5-4.4x over the same draws)."""
    b, hq, _, lq, lk, _, dv = shape
    case = Case(gen, shape, torch.float32, causal="bottom_right")
    out, lse = case.fwd(cc80)
    dout = torch.randn(b, hq, lq, dv, generator=gen)
    dq, dk, dv_, _ = cc80.attention_bwd(case.q, case.k, case.v, out, dout, lse, *case.args, False)
    truth_out, _ = case.ref_fwd()
    truth = ref.attention_bwd(to_np(dout), to_np(case.q), to_np(case.k), to_np(case.v), **case.ref_kw)

    q, k, v = (x.clone().requires_grad_() for x in (case.q, case.k, case.v))
    causal = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    torch_out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=causal, scale=case.scale)
    torch_out.backward(dout)
    rms = lambda x, want: float(np.sqrt(np.mean((to_np(x) - want) ** 2)))
    for name, ours, theirs, want in (("out", out, torch_out, truth_out), ("dq", dq, q.grad, truth[0]),
                                     ("dk", dk, k.grad, truth[1]), ("dv", dv_, v.grad, truth[2])):
        err_ours, err_torch = rms(ours, want), rms(theirs.detach(), want)
        assert err_ours <= 2.5 * err_torch, f"{name}: RMS error {err_ours:.3g} > 2.5 x torch's fp32 {err_torch:.3g}"


ALL = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", ALL, ids=["fp32", "fp64", "fp16", "bf16"])
def test_softmax(emu, gen, dtype):
    """Every kernel shape: a warp group per row up to 1024 keys (several rows a group
    for short rows, row counts that leave a group's last rows dead), and a block per row
    above, with the row in registers (3000, 3001), cached in shared memory (9001 fwd) or
    read twice (20000 bwd, 40000); scalar and 16-byte loads, every mask."""
    for b, h, sq, sk in ((2, 3, 5, 1), (1, 2, 7, 33), (1, 3, 3, 128), (2, 1, 4, 256), (1, 1, 3, 1000),
                         (1, 1, 2, 3000), (1, 1, 1, 3001), (1, 1, 1, 9001), (1, 1, 2, 20000), (1, 1, 1, 40000)):
        x = (torch.randn(b, h, sq, sk, generator=gen) * 3).to(dtype)
        masks = {"none": None, "bool": torch.rand(b, 1, sq, sk, generator=gen) > 0.7,
                 "additive": (torch.randn(1, h, sq, sk, generator=gen)).to(dtype)}
        masks["bool"][..., 0, :] = True  # a fully masked row gives zeros
        for name, mask in masks.items():
            for causal in (False, True):
                kmask = torch.empty(0) if mask is None else mask
                y = emu.softmax_fwd(x, kmask, 0.7, causal)
                want = smref.scaled_masked_softmax_fwd(to_np(x), None if mask is None else to_np(mask), 0.7, causal)
                assert_close(y, want, dtype, msg=f"fwd {tuple(x.shape)} mask={name} causal={causal}")
                dy = torch.randn(b, h, sq, sk, generator=gen).to(dtype)
                dx = emu.softmax_bwd(y, dy, 0.7)
                want_dx = smref.scaled_masked_softmax_bwd(to_np(y), to_np(dy), 0.7)
                # the size of a softmax gradient, as in test_scaled_masked_softmax.py
                mag = 0.7 * float(to_np(y).max(initial=0.0)) * float(np.abs(to_np(dy)).max(initial=0.0))
                assert_close(dx, want_dx, dtype, magnitude=mag, msg=f"bwd {tuple(x.shape)} mask={name} causal={causal}")
    # strided x (every other row), which takes the scalar loads
    x = torch.randn(1, 2, 8, 64, generator=gen).to(dtype)[:, :, ::2]
    assert_close(emu.softmax_fwd(x, torch.empty(0), 1.0, False), smref.scaled_masked_softmax_fwd(to_np(x)),
                 dtype, msg="strided x")


# Over a sequence, low precision rounds h and c at every step: more room than one step.
SEQ_TOL = {torch.float64: Tol(1e-11, 1e-9), torch.float32: Tol(2e-5, 1e-4), torch.float16: Tol(1e-2, 1e-2),
           torch.bfloat16: Tol(6e-2, 6e-2)}


def _steps(batch_sizes, reverse):
    """int64 [nsteps, 2] (offset, rows) in processing order, as csrc/lstm.cpp's make_steps."""
    offs = np.concatenate([[0], np.cumsum(batch_sizes)[:-1]])
    steps = [(int(o), int(n)) for o, n in zip(offs, batch_sizes)]
    return torch.tensor(steps[::-1] if reverse else steps, dtype=torch.int64).reshape(-1, 2)


# (batch_sizes, hidden): the emulated device has 4 SMs, so H 13 gives 4 blocks of 4, 4, 4
# and 1 units, H 37 blocks of 10 (the last 7), H 17 of 5 (the last 2: more K-split
# tasks than a full block), H 3 three blocks of one unit. Shrinking batch sizes are a
# PackedSequence (growing, when run in reverse) and go to the kernel as a steps array;
# equal ones as a dense sequence (no array).
PERSISTENT_SHAPES = [([1, 1, 1], 3), ([3, 3, 3, 3], 13), ([8, 6, 6, 2, 1], 37), ([4, 4, 3], 17), ([5], 9),
                     ([2, 2], 1)]


@pytest.mark.parametrize("dtype", ALL, ids=["fp32", "fp64", "fp16", "bf16"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_lstm_seq_persistent(emu, gen, dtype, reverse):
    """The persistent sequence kernels against lstm_seq_fwd / _bwd; with W_ih the identity
    the reference's x is the kernel's input product and its dx is dgates."""
    tol = SEQ_TOL[dtype]
    for batch_sizes, hidden in PERSISTENT_SHAPES:
        n0, total, g4 = batch_sizes[0], sum(batch_sizes), 4 * hidden
        steps = _steps(batch_sizes, reverse)
        dense = len(set(batch_sizes)) == 1
        kernel_steps = (torch.empty(0, dtype=torch.int64) if dense else steps, len(batch_sizes), reverse)
        bias = bool(torch.randint(0, 2, (), generator=gen))
        std = hidden ** -0.5
        act_in, w_hh = randn((total, g4), dtype, gen=gen), randn((g4, hidden), dtype, gen=gen, std=std)
        b_ih, b_hh = ((randn((g4,), dtype, gen=gen) if bias else torch.empty(0, dtype=dtype)) for _ in range(2))
        h0, c0, dh_n, dc_n = (randn((n0, hidden), dtype, gen=gen) for _ in range(4))
        dy = randn((total, hidden), dtype, gen=gen)
        what = f"batch_sizes {batch_sizes} H{hidden} bias={bias} dense={dense}"

        out = emu.lstm_seq_persistent_fwd(act_in, w_hh, b_ih, b_hh, h0, c0, *kernel_steps, False)
        assert out, f"{what}: the kernel declined"
        y, c_all, act, h_n, c_n = out
        eye = np.eye(g4)
        b = (to_np(b_ih), to_np(b_hh)) if bias else (None, None)
        r_y, r_hn, r_cn, caches = lstmref.lstm_seq_fwd(to_np(act_in), to_np(h0), to_np(c0), eye, to_np(w_hh), *b,
                                                       batch_sizes=batch_sizes, reverse=reverse)
        for got, want, name in ((y, r_y, "y"), (h_n, r_hn, "h_n"), (c_n, r_cn, "c_n")):
            assert_close(got, want, dtype, tol=tol, msg=f"{what} {name}")
        order = steps[:, 0].tolist()  # the reference's caches are in processing order too
        r_c = np.empty((total, hidden))
        r_act = np.empty((total, g4))
        for off, cache in zip(order, caches):
            r_c[off:off + cache.c_new.shape[0]] = cache.c_new
            r_act[off:off + cache.act.shape[0]] = cache.act
        assert_close(c_all, r_c, dtype, tol=tol, msg=f"{what} c_all")
        assert_close(act, r_act, dtype, tol=tol, msg=f"{what} act")

        # Backward from the kernel's own saved act / c_all, against the reference's caches.
        grads = emu.lstm_seq_persistent_bwd(dy, dh_n, dc_n, act, c_all, c0, w_hh, *kernel_steps, False)
        assert grads, f"{what}: the backward kernel declined"
        dgates, db, dh0, dc0 = grads
        r = lstmref.lstm_seq_bwd(to_np(dy), to_np(dh_n), to_np(dc_n), to_np(act_in), caches, eye, to_np(w_hh),
                                 batch_sizes=batch_sizes, reverse=reverse)
        # dh0 = W_hh^T dgates sums 4H terms that can cancel (H = 1 once gave |dh0| ~ 0.01 from
        # terms ~ 0.1, and bf16 failed against dh0's own size): judge it by its terms' size.
        dh0_terms = float(np.abs(r["dx"]).max() * np.abs(to_np(w_hh)).sum(0).max())
        # db sums the rows of dgates as stored (rounded to the dtype), and can cancel the same
        # way (bf16, H 1, 2 rows once gave |db| ~ 0.01 off by 0.003): judge it by |dgates| summed.
        db_terms = float(np.abs(r["dx"]).sum(0).max())
        for got, want, name, mag in ((dgates, r["dx"], "dgates", None), (db, r["db"], "db", db_terms),
                                     (dh0, r["dh0"], "dh0", dh0_terms), (dc0, r["dc0"], "dc0", None)):
            assert_close(got, want, dtype, magnitude=mag, tol=tol, msg=f"{what} {name}")


def test_lstm_seq_persistent_declines(emu, gen):
    """Shapes no persistent forward takes: nothing runs, and the caller's per-step loop
    takes over. fp64 past 8 rows, more than 256 rows, a W_hh slice beyond shared memory,
    rows of H·sizeof(dtype) not a multiple of 16 bytes (cp.async)."""
    f32, bf16, f64 = torch.float32, torch.bfloat16, torch.float64
    for n0, hidden, dtype, tf32 in ((9, 8, f64, True), (257, 8, bf16, False),
                                    (2, 2000, f32, False), (9, 12, bf16, False), (9, 6, f32, True)):
        steps = _steps([n0], False)
        args = (randn((n0, 4 * hidden), dtype, gen=gen), randn((4 * hidden, hidden), dtype, gen=gen),
                torch.empty(0, dtype=dtype), torch.empty(0, dtype=dtype), randn((n0, hidden), dtype, gen=gen),
                randn((n0, hidden), dtype, gen=gen), steps, 1, False, tf32)
        assert emu.lstm_seq_persistent_fwd(*args) == [], f"n0 {n0} H{hidden} {dtype} tf32={tf32}"


# The tensor-core kernels (batches of 9 to 256): (batch_sizes, hidden, emulated SMs).
# Each block owns U = ceil(H / SMs) units: forward 4U gate rows padded to 16, 32 or 64
# columns, backward U columns padded to 8 or 16. Batch rows pad to 16-row tiles, and with
# fewer tiles than 8 warps the K steps split among warps. X (forward h_prev [n, H],
# backward dgates [n, 4H]) streams in 128-byte chunks per row (64 bf16 / 32 fp32
# columns) through a ring of 4 buffers, or 2 where 4 do not fit.
# The last two cost most of the test's time and matter for fp32's ring (16-bit rows are
# half as many chunks and fit 4 buffers), so only fp32 runs them: the tiles, fragments
# and ring are the same code for every dtype.
MMA_SHAPES = [([9, 9, 9], 8, 4),            # one tile (K split 8 ways), 16 / 8 columns, one chunk forward
              ([40, 40], 24, 4),            # 3 tiles (K split 2), U 6: 24 gate rows in 32 columns
              ([33, 20, 12, 9], 64, 4),     # packed: rows end as steps shrink (grow in reverse); 64 / 16 columns
              ([17, 17], 256, 16),          # 16 SMs: fp32 forward rows are 8 chunks, so the ring wraps
              ([256, 200], 128, 8)]         # 16 tiles, 2 per warp; fp32 only fits the 2-buffer ring
MMA_FP32_ONLY = 3  # MMA_SHAPES[3:] run for fp32 as TF32 only
# (dtype, tf32) per precision: fp32 as TF32 when torch allows it, else as 3xTF32.
MMA_MODES = {"tf32": (torch.float32, True), "fp32": (torch.float32, False), "fp16": (torch.float16, True),
             "bf16": (torch.bfloat16, True)}
MMA_TOL = {"tf32": Tol(2e-3, 2e-3), "fp32": SEQ_TOL[torch.float32], "fp16": SEQ_TOL[torch.float16],
           "bf16": SEQ_TOL[torch.bfloat16]}


@pytest.fixture
def emu_sms(emu):
    """Sets the emulated SM count for one test, then restores 4."""
    yield emu.set_sm_count
    emu.set_sm_count(4)


@pytest.mark.parametrize("mode", list(MMA_MODES))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_lstm_seq_persistent_mma(emu, emu_sms, gen, mode, reverse):
    """The tensor-core persistent kernels against lstm_seq_fwd / _bwd (W_ih the identity,
    so the reference's x is the kernel's input product and its dx is dgates). fp32 runs as
    TF32 (10-bit mantissas, rounded to nearest, hence its looser tolerance) when torch
    allows TF32, else as 3xTF32, held to fp32's tolerance (TF32 misses it)."""
    dtype, tf32 = MMA_MODES[mode]
    tol = MMA_TOL[mode]
    for batch_sizes, hidden, sms in MMA_SHAPES if mode == "tf32" else MMA_SHAPES[:MMA_FP32_ONLY]:
        emu_sms(sms)
        n0, total, g4 = batch_sizes[0], sum(batch_sizes), 4 * hidden
        steps = _steps(batch_sizes, reverse)
        dense = len(set(batch_sizes)) == 1
        kernel_steps = (torch.empty(0, dtype=torch.int64) if dense else steps, len(batch_sizes), reverse)
        bias = bool(torch.randint(0, 2, (), generator=gen))
        act_in, w_hh = randn((total, g4), dtype, gen=gen), randn((g4, hidden), dtype, gen=gen, std=hidden ** -0.5)
        b_ih, b_hh = ((randn((g4,), dtype, gen=gen) if bias else torch.empty(0, dtype=dtype)) for _ in range(2))
        h0, c0, dh_n, dc_n = (randn((n0, hidden), dtype, gen=gen) for _ in range(4))
        dy = randn((total, hidden), dtype, gen=gen)
        what = f"batch_sizes {batch_sizes} H{hidden} SMs {sms} bias={bias} dense={dense}"

        out = emu.lstm_seq_persistent_fwd(act_in, w_hh, b_ih, b_hh, h0, c0, *kernel_steps, tf32)
        assert out, f"{what}: the kernel declined"
        y, c_all, act, h_n, c_n = out
        b = (to_np(b_ih), to_np(b_hh)) if bias else (None, None)
        r_y, r_hn, r_cn, caches = lstmref.lstm_seq_fwd(to_np(act_in), to_np(h0), to_np(c0), np.eye(g4), to_np(w_hh),
                                                       *b, batch_sizes=batch_sizes, reverse=reverse)
        for got, want, name in ((y, r_y, "y"), (h_n, r_hn, "h_n"), (c_n, r_cn, "c_n")):
            assert_close(got, want, dtype, tol=tol, msg=f"{what} {name}")
        r_c, r_act = np.empty((total, hidden)), np.empty((total, g4))
        for off, cache in zip(steps[:, 0].tolist(), caches):
            r_c[off:off + cache.c_new.shape[0]] = cache.c_new
            r_act[off:off + cache.act.shape[0]] = cache.act
        assert_close(c_all, r_c, dtype, tol=tol, msg=f"{what} c_all")
        assert_close(act, r_act, dtype, tol=tol, msg=f"{what} act")

        grads = emu.lstm_seq_persistent_bwd(dy, dh_n, dc_n, act, c_all, c0, w_hh, *kernel_steps, tf32)
        assert grads, f"{what}: the backward kernel declined"
        dgates, db, dh0, dc0 = grads
        r = lstmref.lstm_seq_bwd(to_np(dy), to_np(dh_n), to_np(dc_n), to_np(act_in), caches, np.eye(g4), to_np(w_hh),
                                 batch_sizes=batch_sizes, reverse=reverse)
        # dh0 and db judged by the size of their terms, as in test_lstm_seq_persistent
        dh0_terms = float(np.abs(r["dx"]).max() * np.abs(to_np(w_hh)).sum(0).max())
        db_terms = float(np.abs(r["dx"]).sum(0).max())
        for got, want, name, mag in ((dgates, r["dx"], "dgates", None), (db, r["db"], "db", db_terms),
                                     (dh0, r["dh0"], "dh0", dh0_terms), (dc0, r["dc0"], "dc0", None)):
            assert_close(got, want, dtype, magnitude=mag, tol=tol, msg=f"{what} {name}")


@pytest.mark.parametrize("dtype", ALL, ids=["fp32", "fp64", "fp16", "bf16"])
def test_lstm_pointwise(emu, gen, dtype):
    for n, hidden in ((1, 1), (3, 37), (5, 130)):
        gates = (torch.randn(n, 4 * hidden, generator=gen) * 3).to(dtype)
        c = torch.randn(n, hidden, generator=gen).to(dtype)
        b_ih, b_hh = (torch.randn(4 * hidden, generator=gen).to(dtype) for _ in range(2))
        h, c_new, act = emu.lstm_fwd(gates, c, b_ih, b_hh)
        z = to_np(gates) + to_np(b_ih) + to_np(b_hh)
        r_h, r_c, r_act = lstmref.lstm_pointwise_fwd(z, to_np(c))
        for got, want, what in ((h, r_h, "h"), (c_new, r_c, "c'"), (act, r_act, "act")):
            assert_close(got, want, dtype, msg=f"n{n} H{hidden} {what}")
        dh, dc = (torch.randn(n, hidden, generator=gen).to(dtype) for _ in range(2))
        for dc_in in (dc, torch.empty(0, dtype=dtype)):
            dgates, dc_prev = emu.lstm_bwd(dh, dc_in, act, c, c_new)
            r_dz, r_dc = lstmref.lstm_pointwise_bwd(to_np(dh), to_np(dc) if dc_in.numel() else np.zeros(dh.shape),
                                                     to_np(act), to_np(c), to_np(c_new))
            assert_close(dgates, r_dz, dtype, msg=f"n{n} H{hidden} dgates")
            assert_close(dc_prev, r_dc, dtype, msg=f"n{n} H{hidden} dc")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("cbow", [False, True], ids=["skipgram", "cbow"])
def test_negative_sampling_update(emu, gen, dtype, cbow):
    """Every id appears once in the batch, so the lock-free (Hogwild) updates of
    concurrent examples never meet and the result is the sequential reference's."""
    n, slots, k, dim = 6, 1 if not cbow else 3, 4, 70
    per_example = (slots + 1 + (k if cbow else slots * k))
    ids = torch.randperm(n * per_example + 5, generator=gen)
    vocab = int(ids.max()) + 1
    w_in = (torch.randn(vocab, dim, generator=gen) * 0.3).to(dtype)
    w_out = (torch.randn(vocab, dim, generator=gen) * 0.3).to(dtype)
    take = iter(ids[: n * per_example].reshape(n, per_example))
    rows = [next(take) for _ in range(n)]
    centers = torch.stack([r[0] for r in rows])
    contexts = torch.stack([r[1:1 + slots] for r in rows])
    negs = torch.stack([r[1 + slots:] for r in rows]).reshape((n, k) if cbow else (n, slots, k))
    contexts[0, -1] = -1  # an empty window slot
    update = nsref.cbow_update if cbow else nsref.sgns_update
    r_in, r_out, r_loss = update(to_np(w_in), to_np(w_out), centers.numpy(), contexts.numpy(), negs.numpy(), 0.05)
    loss, bad = emu.negsamp_update(w_in, w_out, centers, contexts.contiguous(), negs.contiguous(), torch.empty(0), k,
                                   0.05, 0, cbow, 0, False)
    assert bad == -1
    assert_close(w_in, r_in, dtype, msg="w_in")
    assert_close(w_out, r_out, dtype, msg="w_out")
    assert_close(torch.tensor(loss, dtype=torch.float64), np.float64(r_loss), dtype, msg="loss")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("kind", ["skipgram", "cbow", "window-batch"])
@pytest.mark.parametrize("streams, k", [(1, 2), (3, 2), (2, 10)])
def test_negative_sampling_update_streams_run_in_order(emu, gen, dtype, kind, streams, k):
    """Each stream walks a contiguous run of the centers in order. Ids repeat within a run
    (every update meets earlier ones; targets repeat within one example, whose logits the
    kernel sums together, 8 at a time; a window batch's inputs and targets repeat) but
    each run draws from its own part of the vocabulary, so runs never meet and the result
    is the sequential reference's. Vectors of std 0.9 at dim 40 give logits of std ~5:
    some pass |x| >= 6 and get no update."""
    cbow, batch = kind == "cbow", kind == "window-batch"
    run, slots, dim, words = 4, 3, 40, 6
    n = run * streams
    part = torch.arange(n)[:, None] // run * words                    # [n, 1]: run r uses ids r*words ..
    draw = lambda *shape: part.view(n, *[1] * (len(shape) - 1)) + torch.randint(0, words, shape, generator=gen)
    centers = draw(n)
    contexts = draw(n, slots)
    contexts[1, 0] = -1  # an empty window slot
    negs = draw(n, k) if cbow or batch else draw(n, slots, k)
    vocab = words * streams
    update = nsref.cbow_update if cbow else nsref.sgns_window_update if batch else nsref.sgns_update
    # fp32 redraws tables that put a logit within 1e-4 of the cutoff |x| = 6, where the
    # fp32 rounding (~1e-6) would decide whether that target updates (~1e-5 of draws).
    for _ in range(10):
        w_in = (torch.randn(vocab, dim, generator=gen) * 0.9).to(dtype)
        w_out = (torch.randn(vocab, dim, generator=gen) * 0.9).to(dtype)
        margins = []
        r_in, r_out, r_loss = update(to_np(w_in), to_np(w_out), centers.numpy(), contexts.numpy(), negs.numpy(), 0.05,
                                     margins)
        if dtype == torch.float64 or min(margins) > 1e-4:
            break
    loss, bad = emu.negsamp_update(w_in, w_out, centers, contexts, negs.contiguous(), torch.empty(0), k, 0.05, 0,
                                   cbow, streams, batch)
    assert bad == -1
    assert_close(w_in, r_in, dtype, msg="w_in")
    assert_close(w_out, r_out, dtype, msg="w_out")
    assert_close(torch.tensor(loss, dtype=torch.float64), np.float64(r_loss), dtype, msg="loss")


@pytest.mark.parametrize("kind", ["skipgram", "cbow", "window-batch"])
@pytest.mark.parametrize("streams", [1, 3])
def test_negative_sampling_stream_update_equals_the_contexts_form(emu, gen, kind, streams):
    """The stream form reads the windows of the reference's stream_contexts (sentence
    edges, radii 0 to window, the stream's ends) and draws the same negatives, so it
    updates exactly as the contexts form. With several streams, each stream's run of
    centers has its own words, sentences and explicit negatives, so runs never meet."""
    cbow, batch = kind == "cbow", kind == "window-batch"
    words, dim, window, k, start, stop = 10, 40, 3, 4, 2, 86
    run = (stop - start) // streams
    part = ((torch.arange(90) - start) // run).clamp(0, streams - 1)  # [N] the run each token belongs to
    tokens = part * words + torch.randint(0, words, (90,), generator=gen)
    sentence = part * 1000 + torch.repeat_interleave(torch.arange(90), torch.randint(1, 9, (90,), generator=gen))[:90]
    radius = torch.randint(0, window + 1, (90,), generator=gen)
    contexts = torch.from_numpy(nsref.stream_contexts(tokens.numpy(), sentence.numpy(), radius.numpy(), start, stop,
                                                      window))
    centers_part = part[start:stop].view(-1, 1) if cbow or batch else part[start:stop].view(-1, 1, 1)
    negs = torch.empty(0, dtype=torch.long)
    table = torch.randint(0, words * streams, (64,), generator=gen)
    if streams > 1:  # explicit negatives from each run's own words
        shape = (stop - start, k) if cbow or batch else (stop - start, 2 * window + 1, k)
        negs, table = centers_part * words + torch.randint(0, words, shape, generator=gen), torch.empty(0)
    w_in = torch.randn(words * streams, dim, generator=gen) * 0.3
    w_out = torch.randn(words * streams, dim, generator=gen) * 0.3
    a_in, a_out, b_in, b_out = w_in.clone(), w_out.clone(), w_in.clone(), w_out.clone()
    a = emu.negsamp_update(a_in, a_out, tokens[start:stop].contiguous(), contexts, negs, table, k, 0.05, 9, cbow,
                           streams, batch)
    b = emu.negsamp_stream_update(b_in, b_out, tokens, sentence, radius, start, stop, window, negs, table, k, 0.05, 9,
                                  cbow, streams, batch)
    assert a == b and a[1] == -1
    assert torch.equal(a_in, b_in) and torch.equal(a_out, b_out)
    assert not torch.equal(b_out, w_out)


@pytest.mark.parametrize("sg, window_batch", [(1, False), (1, True), (0, False)], ids=["sg", "sg-window-batch", "cbow"])
def test_word2vec_planted_structure_emulated(emu, sg, window_batch):
    """The Word2Vec trainer with the CUDA update kernel (emulated, with the streams the
    trainer picks on CUDA) finds the planted groups of tests/test_word2vec.py, on a
    shorter corpus. The emulator runs blocks one after another, so this checks the
    kernel's logic, not what hundreds of concurrent warps do on a GPU (for that, see
    bench/word2vec_concurrency.py)."""
    from pyattn.word2vec import Word2Vec
    from pyattn.word2vec.model import cuda_streams
    from test_word2vec import GROUPS, planted_corpus

    class EmulatedCuda(Word2Vec):
        def _update(self, w_in, w_out, ids, sentence, radius, start, stop, table, lr, seed, want_loss):
            streams = cuda_streams(self.corpus.counts, self.sample, self.negative, self.ns_exponent, self.window,
                                   not self.sg or self.window_batch)
            loss, bad = emu.negsamp_stream_update(w_in, w_out, ids, sentence, radius, start, stop, self.window,
                                                  torch.empty(0), table, self.negative, lr, seed, not self.sg, streams,
                                                  bool(self.sg) and self.window_batch)
            assert bad == -1
            return torch.tensor(loss, dtype=torch.float64)

    # 200 sentences (2000 tokens an epoch): the emulated window batch took 270 s for 400 (13 ms a center:
    # a std::thread per lane, a barrier per warp step); at 200 the groups still separate by 0.65-0.67
    model = EmulatedCuda(planted_corpus(sentences=200), vector_size=32, window=3, min_count=1, sg=sg, negative=5,
                         epochs=5, workers=1, seed=3, sample=0, alpha=0.025 if sg else 0.05, progress=False,
                         window_batch=window_batch)
    wv = model.wv
    same = [wv.similarity(f"g{g}w{i}", f"g{g}w{j}") for g in range(GROUPS) for i in range(4) for j in range(4, 8)]
    cross = [wv.similarity(f"g{g}w{i}", f"g{(g + 1) % GROUPS}w{i}") for g in range(GROUPS) for i in range(8)]
    assert np.mean(same) > np.mean(cross) + 0.3, (np.mean(same), np.mean(cross))
    assert np.isfinite(model.running_loss)


@pytest.mark.parametrize("kind", ["skipgram", "cbow", "window-batch"])
def test_negative_sampling_update_reports_an_id_past_the_vocabulary(emu, gen, kind):
    """An id >= vocab is reported even when later ids of the same stream are negative:
    absent ids, skipped without a record, which must not overwrite the error."""
    cbow, batch = kind == "cbow", kind == "window-batch"
    vocab, dim, slots, k = 12, 8, 2, 2
    centers = torch.tensor([vocab + 3, -1, 2, 3])
    contexts = torch.randint(0, vocab, (4, slots), generator=gen)
    negs = torch.randint(0, vocab, (4, k) if cbow or batch else (4, slots, k), generator=gen)
    negs[3] = -1
    w_in, w_out = (torch.randn(vocab, dim, generator=gen) for _ in range(2))
    _, bad = emu.negsamp_update(w_in, w_out, centers, contexts, negs, torch.empty(0), k, 0.05, 0, cbow, 1, batch)
    assert bad == vocab + 3


def test_negative_sampling_kernels_race_free_under_thread_sanitizer(tmp_path):
    """tests/cuda_emulation/tsan_negative_sampling.cpp: every update mode and sgns_loss on
    the emulated device, built with ThreadSanitizer, where a missing __syncwarp between
    lanes is a reported race on every run. With each of the updates' five barriers removed
    in turn it failed: four reported races, one crashed on unwritten shared memory. The
    planted race shows that TSan is awake."""
    inc = _cuda_include()
    if inc is None:
        pytest.skip("CUDA toolkit headers (cuda_fp16.h) not found: cannot compile the emulated kernels")
    probe = tmp_path / "probe.cpp"
    probe.write_text("int main() { return 0; }\n")
    if subprocess.run(["g++", "-fsanitize=thread", str(probe), "-o", str(tmp_path / "probe")],
                      capture_output=True).returncode != 0:
        pytest.skip("g++ cannot build with -fsanitize=thread here (libtsan missing)")
    exe = tmp_path / "tsan_negative_sampling"
    includes = [EMU, ROOT / "kernels" / "include", ROOT / "kernels", inc]
    if (inc / "cccl").is_dir():  # CUDA 13 keeps libcu++ (<cuda/atomic>) there
        includes.append(inc / "cccl")
    build = subprocess.run(["g++", "-std=c++20", "-O1", "-g", "-fsanitize=thread", "-pthread", "-DPYATTN_CUDA_EMULATION",
                            "-w", *[f"-I{i}" for i in includes], str(EMU / "tsan_negative_sampling.cpp"),
                            str(EMU / "runtime_stubs.cpp"), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66")
    planted = subprocess.run([str(exe), "--planted"], capture_output=True, text=True, env=env, timeout=300)
    assert planted.returncode == 66 and "data race" in planted.stderr, (planted.returncode, planted.stderr[-2000:])
    clean = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=600)
    assert clean.returncode == 0 and "all kernels ran" in clean.stdout, clean.stderr[-3000:]


@pytest.mark.parametrize("bad_id", [-1, 23])
def test_sgns_loss_reports_an_id_out_of_range(emu, gen, bad_id):
    """sgns_loss takes no absent ids: a negative id is reported as an id past the vocabulary is."""
    b, k, vocab, dim = 9, 3, 20, 8
    centers, contexts = (torch.randint(0, vocab, (b,), generator=gen) for _ in range(2))
    negs = torch.randint(0, vocab, (b, k), generator=gen)
    negs[6, 1] = bad_id
    with pytest.raises(RuntimeError, match=f"bad index {bad_id}$"):
        emu.sgns_loss(torch.randn(vocab, dim), torch.randn(vocab, dim), centers, contexts, negs, torch.randn(b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_sgns_loss(emu, gen, dtype):
    b, k, vocab, dim = 9, 5, 40, 33
    w_in = (torch.randn(vocab, dim, generator=gen) * 0.5).to(dtype)
    w_out = (torch.randn(vocab, dim, generator=gen) * 0.5).to(dtype)
    centers, contexts = (torch.randint(0, vocab, (b,), generator=gen) for _ in range(2))
    negs = torch.randint(0, vocab, (b, k), generator=gen)
    dloss = torch.randn(b, generator=gen).to(dtype)
    loss, d_h, d_u = emu.sgns_loss(w_in, w_out, centers, contexts, negs, dloss)
    assert_close(loss, nsref.sgns_loss(to_np(w_in), to_np(w_out), centers.numpy(), contexts.numpy(), negs.numpy()),
                 dtype, msg="loss")
    # per-example gradients: d loss / d xp = -sigmoid(-xp), d loss / d xn = sigmoid(xn)
    h, u = to_np(w_in)[centers.numpy()], to_np(w_out)
    up, un = u[contexts.numpy()], u[negs.numpy()]
    xp, xn = np.einsum("bd,bd->b", up, h), np.einsum("bkd,bd->bk", un, h)
    gp = -1.0 / (1.0 + np.exp(xp)) * to_np(dloss)
    gn = 1.0 / (1.0 + np.exp(-xn)) * to_np(dloss)[:, None]
    assert_close(d_h, gp[:, None] * up + np.einsum("bk,bkd->bd", gn, un), dtype, msg="d_h")
    want_du = np.concatenate([(gp[:, None] * h)[:, None], gn[:, :, None] * h[:, None, :]], axis=1)
    assert_close(d_u, want_du, dtype, msg="d_u")
