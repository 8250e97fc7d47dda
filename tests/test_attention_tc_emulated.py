"""The tensor-core attention forward (kernels/cuda/attention_tc.cu) without a GPU.

The kernel is compiled by the host compiler against tests/cuda_emulation/emulate.h, which
runs each CUDA thread of a block on its own CPU thread (barriers for __syncthreads and
__syncwarp, an exchange buffer for shuffles) and emulates the WMMA calls with whole
16x16 tiles in every lane. That checks the kernel's own logic (tiling, staging, masks,
online softmax, dropout, lse, the fragment-wise rescale) against the float64
reference; it cannot check WMMA's real fragment layouts, speed or races on the GPU,
which tests/test_attention.py does on CUDA when a GPU is present.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch

from conftest import TOLERANCES, assert_close, to_np
from pyattn.reference import attention as ref

ROOT = pathlib.Path(__file__).resolve().parents[1]
EMU = ROOT / "tests" / "cuda_emulation"


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
def emulated():
    inc = _cuda_include()
    if inc is None:
        pytest.skip("CUDA toolkit headers (cuda_fp16.h) not found: cannot compile the emulated kernel")
    from torch.utils import cpp_extension

    return cpp_extension.load(
        name="pyattn_attention_tc_emulated",
        sources=[str(EMU / "attention_tc_emulated.cpp")],
        extra_include_paths=[str(EMU), str(ROOT / "kernels" / "include"), str(ROOT / "kernels"), str(inc)],
        extra_cflags=["-std=c++20", "-O1", "-pthread", "-DPYATTN_CUDA_EMULATION", "-w"],
        extra_ldflags=["-pthread"],
        verbose=False,
    )


# (batch, hq, hkv, lq, lk, d, dv)
SHAPES = {
    "self": (1, 2, 2, 70, 70, 64, 64),
    "cross": (2, 2, 1, 33, 130, 64, 64),
    "gqa_d128": (1, 4, 2, 40, 90, 128, 128),
    "d32_pad": (1, 1, 1, 20, 50, 32, 32),
    "dv_ne_d": (1, 2, 1, 17, 65, 80, 48),
    "lq1": (2, 2, 2, 1, 100, 64, 64),
}


def _dropout_args(seed, p):
    words = np.array(seed, dtype=np.int64)
    t = p * 2.0**32
    threshold = 0xFFFFFFFF if t >= 2.0**32 - 1 else int(t)
    return int(words[0]), int(words[1]), threshold, (1.0 / (1.0 - p) if p < 1.0 else 0.0)


def _run(emulated, q, k, v, *, mask=None, causal=None, window=None, key_lengths=None, dropout_p=0.0, seed=None):
    lq, lk = q.shape[2], k.shape[2]
    off = lk - lq if causal == "bottom_right" else 0
    wl, wr = (-1, -1) if window is None else window
    if causal is not None:
        wr = 0 if wr < 0 else min(wr, 0)
    kmask = torch.Tensor()
    if mask is not None:
        kmask = mask.to(torch.uint8) if mask.dtype == torch.bool else mask
        kmask = kmask.expand(q.shape[0], q.shape[1], lq, lk)
    kl = torch.Tensor() if key_lengths is None else torch.as_tensor(key_lengths, dtype=torch.int64)
    drop = dropout_p > 0
    k0, k1, thr, dscale = _dropout_args(seed, dropout_p) if drop else (0, 0, 0, 0.0)
    scale = 1.0 / np.sqrt(q.shape[-1])
    out, lse = emulated.fwd(q, k, v, kmask, scale, off, wl, wr, kl, drop, k0, k1, thr, dscale)
    r_out, r_lse = ref.attention_fwd(
        to_np(q), to_np(k), to_np(v), mask=None if mask is None else to_np(mask), scale=scale, causal=causal,
        window=window, key_lengths=key_lengths, dropout_p=dropout_p, dropout_seed=seed)
    return out, lse, r_out, r_lse


def _inputs(gen, shape, dtype):
    b, hq, hkv, lq, lk, d, dv = shape
    q = torch.randn(b, hq, lq, d, generator=gen).to(dtype)
    k = torch.randn(b, hkv, lk, d, generator=gen).to(dtype)
    v = torch.randn(b, hkv, lk, dv, generator=gen).to(dtype)
    return q, k, v


def _check(out, lse, r_out, r_lse, dtype, msg):
    assert_close(out, r_out, dtype, msg=f"{msg} out")
    assert_close(lse, r_lse, dtype, msg=f"{msg} lse")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_tc_forward_matches_reference(emulated, gen, shape, dtype):
    q, k, v = _inputs(gen, shape, dtype)
    _check(*_run(emulated, q, k, v), dtype, "no mask")
    _check(*_run(emulated, q, k, v, causal="top_left"), dtype, "causal top-left")
    _check(*_run(emulated, q, k, v, causal="bottom_right"), dtype, "causal bottom-right")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_tc_forward_masks(emulated, gen, dtype):
    shape = (2, 2, 1, 50, 140, 64, 64)
    q, k, v = _inputs(gen, shape, dtype)
    b, hq, _, lq, lk, _, _ = shape
    keep = torch.rand(b, 1, lq, lk, generator=gen) > 0.3
    keep[0, 0, 3] = False  # a row with no key: out 0, lse -inf
    _check(*_run(emulated, q, k, v, mask=keep), dtype, "bool mask")
    add = (torch.randn(1, hq, lq, lk, generator=gen) * 2).to(dtype)
    _check(*_run(emulated, q, k, v, mask=add), dtype, "additive mask")
    _check(*_run(emulated, q, k, v, key_lengths=[0, 77]), dtype, "key lengths (one batch item empty)")
    _check(*_run(emulated, q, k, v, window=(20, 5)), dtype, "window")
    _check(*_run(emulated, q, k, v, causal="bottom_right", window=(30, -1), mask=keep), dtype, "combined")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_tc_forward_dropout(emulated, gen, seed, dtype):
    q, k, v = _inputs(gen, (1, 2, 2, 40, 100, 64, 64), dtype)
    words = [seed & 0x7FFFFFFFFFFFFFFF, (seed * 7919) & 0x7FFFFFFFFFFFFFFF]
    out, lse, r_out, r_lse = _run(emulated, q, k, v, dropout_p=0.3, seed=words, causal="top_left")
    _check(out, lse, r_out, r_lse, dtype, "dropout 0.3")
    out, lse, r_out, r_lse = _run(emulated, q, k, v, dropout_p=1.0, seed=words)
    assert not out.float().abs().max().item(), "dropout p = 1 must give a zero output"


def test_tc_forward_large_logits_no_overflow(emulated, gen):
    q, k, v = _inputs(gen, (1, 1, 1, 20, 64, 64, 64), torch.float16)
    q, k = q * 8, k * 8  # scores of several hundred: 2^(z - max) must not overflow fp16
    out, lse, r_out, r_lse = _run(emulated, q, k, v)
    assert torch.isfinite(out.float()).all()
    _check(out, lse, r_out, r_lse, torch.float16, "large logits")
