"""attention against F.scaled_dot_product_attention (what a user runs today), and
pyattn.nn.MultiheadAttention against torch.nn.MultiheadAttention.

Work is FLOP: forward 4·B·H·Lq·Lk·D (half when causal), backward 2.5x the forward, so a
fwd+bwd row counts 3.5x. Backward rows time forward and backward together, as training
runs them, and return the output and the input gradients. MultiheadAttention rows
add the four E x E projections (8·B·L·E² FLOP) to the attention's FLOP.

On CUDA, issue 13's rows besides: bf16 / fp16 at head dims 64 and 128, L 1k-16k with
B·H·L = 4·16·4096 tokens, against SDPA's FlashAttention-2 backend (the targets: forward
1.0x, fwd+bwd 0.9x) and, without a target, its default (cuDNN on Hopper); where torch has
nothing fast, a learned additive bias (SDPA then runs its memory-efficient kernel;
flex_attention compiled, with the same bias in its score_mod) and key lengths (SDPA given
the equivalent bool mask), 2x; fp32 at head dims 64 and 128 against SDPA's fp32 (its
memory-efficient kernel, 3xTF32 on tensor cores like ours), 1.0x. Without a target: bf16
at head dim 256, causal, against FlashAttention-2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from pyattn.functional import scaled_dot_product_attention

from . import Case, Target

OP = "attention"
MAIN = (4, 8, 1024, 64)   # B, H, L, D: the target shape
LONG = (1, 8, 4096, 64)   # the long causal shape
QUICK = (2, 4, 512, 64)   # a few seconds for --quick
MHA = (8, 512, 512, 8)    # B, L, E, heads: the MultiheadAttention shape


@dataclass
class _Inputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    causal: bool
    dout: Optional[torch.Tensor]


def _make_inputs(device, dtype, shape, causal, backward) -> _Inputs:
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen, device=device).to(dtype).requires_grad_(backward) for _ in range(3))
    dout = torch.randn(shape, generator=gen, device=device).to(dtype) if backward else None
    return _Inputs(q, k, v, causal, dout)


def _ours(inp: _Inputs) -> torch.Tensor:
    return scaled_dot_product_attention(inp.q, inp.k, inp.v, is_causal=inp.causal)


def _peer(inp: _Inputs) -> torch.Tensor:
    return F.scaled_dot_product_attention(inp.q, inp.k, inp.v, is_causal=inp.causal)


def _with_backward(forward):
    def fwd_bwd(inp: _Inputs):
        out = forward(inp)
        grads = torch.autograd.grad(out, (inp.q, inp.k, inp.v), inp.dout)  # no .grad accumulation to time
        return (out.detach(),) + tuple(grads)
    return fwd_bwd


def _sdpa_backend(backend):
    """SDPA restricted to one backend (torch.nn.attention.SDPBackend); the backward runs the
    backend's own kernel, as autograd recorded it."""
    from torch.nn.attention import sdpa_kernel

    def peer(inp: _Inputs) -> torch.Tensor:
        with sdpa_kernel(backend):
            return _peer(inp)
    return peer


def _case(device, dtype, shape, causal=False, backward=False, quick=True, target=None, note=None,
          peer=_peer, peer_name="F.scaled_dot_product_attention") -> Case:
    b, h, l, d = shape
    fwd_flop = 4 * b * h * l * l * d / (2 if causal else 1)
    return Case(
        op=OP,
        name=f"{'fwd+bwd' if backward else 'fwd'} B{b} H{h} L{l} D{d}{' causal' if causal else ''}"
             + ("" if peer_name == "F.scaled_dot_product_attention" else f" vs {peer_name}"),
        device=device,
        dtype=dtype,
        inputs=lambda: _make_inputs(device, dtype, shape, causal, backward),
        ours=_with_backward(_ours) if backward else _ours,
        peer=_with_backward(peer) if backward else peer,
        peer_name=peer_name + (", autograd backward" if backward else ""),
        work=fwd_flop * (3.5 if backward else 1.0),
        unit="FLOP",
        quick=quick,
        target=target,
        note=note,
    )


@dataclass
class _MhaInputs:
    ours: torch.nn.Module
    peer: torch.nn.Module
    x: torch.Tensor
    need_weights: bool


def _mha_case(device, shape, need_weights, quick=False, target=None) -> Case:
    from pyattn.nn import MultiheadAttention

    b, l, e, h = shape

    def inputs():
        torch.manual_seed(0)
        peer = torch.nn.MultiheadAttention(e, h, batch_first=True, device=device).eval()
        ours = MultiheadAttention(e, h, batch_first=True, device=device).eval()
        ours.load_state_dict(peer.state_dict())
        return _MhaInputs(ours, peer, torch.randn(b, l, e, device=device), need_weights)

    def run(module_of):
        def call(inp: _MhaInputs):
            with torch.no_grad():
                out, weights = module_of(inp)(inp.x, inp.x, inp.x, need_weights=inp.need_weights)
            return out if weights is None else (out, weights)
        return call

    return Case(
        op=OP,
        name=f"MultiheadAttention fwd B{b} L{l} E{e} H{h} need_weights={need_weights}",
        device=device,
        dtype=torch.float32,
        inputs=inputs,
        ours=run(lambda inp: inp.ours),
        peer=run(lambda inp: inp.peer),
        peer_name="torch.nn.MultiheadAttention, same state_dict",
        work=4.0 * b * l * l * e + 8.0 * b * l * e * e,
        unit="FLOP",
        quick=quick,
        target=target,
    )


@dataclass
class _BiasInputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    bias: torch.Tensor          # [1, H, L, L], requires grad: a learned additive bias
    dout: torch.Tensor
    score_mod: Callable         # flex_attention's view of the same bias


def _bias_case(device, dtype, shape, peer_kind: str, target=None) -> Case:
    """fwd+bwd with a learned bias [1, H, L, L]: out and the gradients of q, k, v and the bias.
    peer_kind "sdpa" (its memory-efficient kernel takes float masks) or "flex"
    (torch.compile'd flex_attention, the bias read in its score_mod)."""
    b, h, l, d = shape

    def inputs() -> _BiasInputs:
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(shape, generator=gen, device=device).to(dtype).requires_grad_() for _ in range(3))
        bias = (torch.randn(1, h, l, l, generator=gen, device=device) * 0.5).to(dtype).requires_grad_()
        dout = torch.randn(shape, generator=gen, device=device).to(dtype)
        return _BiasInputs(q, k, v, bias, dout, lambda score, b_, h_, qi, ki: score + bias[0, h_, qi, ki])

    def grads(out: torch.Tensor, inp: _BiasInputs):
        return (out.detach(),) + torch.autograd.grad(out, (inp.q, inp.k, inp.v, inp.bias), inp.dout)

    def ours(inp: _BiasInputs):
        return grads(scaled_dot_product_attention(inp.q, inp.k, inp.v, attn_mask=inp.bias), inp)

    if peer_kind == "sdpa":
        def peer(inp: _BiasInputs):
            return grads(F.scaled_dot_product_attention(inp.q, inp.k, inp.v, attn_mask=inp.bias), inp)
        peer_name = "F.scaled_dot_product_attention (memory-efficient kernel), autograd backward"
    else:
        from torch.nn.attention.flex_attention import flex_attention
        flex = torch.compile(flex_attention)

        def peer(inp: _BiasInputs):
            return grads(flex(inp.q, inp.k, inp.v, score_mod=inp.score_mod), inp)
        peer_name = "torch.compile(flex_attention), bias in score_mod, autograd backward"
    return Case(op=OP, name=f"fwd+bwd B{b} H{h} L{l} D{d} learned bias [1,H,L,L] vs {peer_kind}", device=device,
                dtype=dtype, inputs=inputs, ours=ours, peer=peer, peer_name=peer_name,
                work=4.0 * b * h * l * l * d * 3.5, unit="FLOP", quick=False, target=target)


@dataclass
class _LengthsInputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    lengths: torch.Tensor       # [B] int64: keys each batch item has
    keep: torch.Tensor          # [B, 1, 1, L] bool, the same as a mask
    dout: Optional[torch.Tensor]


def _lengths_case(device, dtype, shape, backward: bool, target=None) -> Case:
    """Keys padded at the end (lengths drawn in [L/2, L]): ours with key_lengths, SDPA with
    the equivalent bool mask."""
    from pyattn.functional import attention

    b, h, l, d = shape

    def inputs() -> _LengthsInputs:
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(shape, generator=gen, device=device).to(dtype).requires_grad_(backward) for _ in range(3))
        lengths = torch.randint(l // 2, l + 1, (b,), generator=gen, device=device)
        keep = (torch.arange(l, device=device) < lengths[:, None])[:, None, None, :]
        dout = torch.randn(shape, generator=gen, device=device).to(dtype) if backward else None
        return _LengthsInputs(q, k, v, lengths, keep, dout)

    def finish(out: torch.Tensor, inp: _LengthsInputs):
        if not backward:
            return out
        return (out.detach(),) + torch.autograd.grad(out, (inp.q, inp.k, inp.v), inp.dout)

    def ours(inp: _LengthsInputs):
        return finish(attention(inp.q, inp.k, inp.v, key_lengths=inp.lengths), inp)

    def peer(inp: _LengthsInputs):
        return finish(F.scaled_dot_product_attention(inp.q, inp.k, inp.v, attn_mask=inp.keep), inp)

    return Case(op=OP, name=f"{'fwd+bwd' if backward else 'fwd'} B{b} H{h} L{l} D{d} key_lengths", device=device,
                dtype=dtype, inputs=inputs, ours=ours, peer=peer,
                peer_name="F.scaled_dot_product_attention, bool mask [B,1,1,L]" + (", autograd backward" if backward else ""),
                work=4.0 * b * h * l * l * d * (3.5 if backward else 1.0), unit="FLOP", quick=False, target=target)


def _cuda_cases(device: str) -> list[Case]:
    """Issue 13's rows (see the module's docstring)."""
    from torch.nn.attention import SDPBackend

    flash, flash_name = _sdpa_backend(SDPBackend.FLASH_ATTENTION), "SDPA FlashAttention-2"
    rows = []
    for dtype in (torch.bfloat16, torch.float16):
        for d in (64, 128):
            for causal in (False, True):
                for l in (1024, 4096, 16384):
                    shape = (max(1, 16384 // l), 16, l, d)
                    quick = dtype == torch.bfloat16 and d == 128 and l == 4096
                    rows.append(_case(device, dtype, shape, causal=causal, quick=quick, target=Target(1.0),
                                      peer=flash, peer_name=flash_name))
                    rows.append(_case(device, dtype, shape, causal=causal, backward=True, quick=quick,
                                      target=Target(0.9), peer=flash, peer_name=flash_name))
    # Head dim 256 (both passes on tensor cores, dk/dv in two column halves), causal.
    for backward in (False, True):
        rows.append(_case(device, torch.bfloat16, (4, 16, 4096, 256), causal=True, backward=backward, quick=False,
                          peer=flash, peer_name=flash_name))
    default = "SDPA default (cuDNN on Hopper)"
    for d in (64, 128):
        for causal in (False, True):
            for backward in (False, True):
                rows.append(_case(device, torch.bfloat16, (4, 16, 4096, d), causal=causal, backward=backward,
                                  quick=False, peer=_peer, peer_name=default))
    bias_shape = (4, 16, 2048, 64)
    rows.append(_bias_case(device, torch.bfloat16, bias_shape, "sdpa", target=Target(2.0)))
    rows.append(_bias_case(device, torch.bfloat16, bias_shape, "flex", target=Target(1.0)))
    for backward in (False, True):
        rows.append(_lengths_case(device, torch.bfloat16, (4, 16, 4096, 64), backward, target=Target(2.0)))
    # fp32: ours 3xTF32 on tensor cores, SDPA's memory-efficient kernel the same arithmetic.
    for d in (64, 128):
        for backward in (False, True):
            rows.append(_case(device, torch.float32, (4, 16, 2048, d), backward=backward, quick=False,
                              target=Target(1.0)))
    return rows


def _cpu_native_bf16() -> Optional[str]:
    """The CPU's native bf16 matrix instructions ("AMX" or "AVX512-BF16"), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


def cases(device: str) -> list[Case]:
    f32, bf16 = torch.float32, torch.bfloat16
    # CPU targets (issue 12): fp32 at least SDPA's speed on every case and 1.3x on causal
    # ones (the row's % of the fp32 GEMM ceiling is reported beside it); bf16 2x SDPA
    # where the CPU multiplies bf16 natively, else none. The CUDA targets are issue 13's.
    cpu = torch.device(device).type == "cpu"
    even, causal_goal = (Target(1.0), Target(1.3)) if cpu else (None, None)
    bf16_unit = _cpu_native_bf16() if cpu else None
    bf16_note = None
    if cpu:
        bf16_note = (f"target 2x: this CPU has {bf16_unit}" if bf16_unit else
                     "no target: this CPU has neither AVX512-BF16 nor AMX, so no native bf16 products")
    extra = _cuda_cases(device) if torch.device(device).type == "cuda" else []
    return extra + [
        _case(device, f32, QUICK),
        _case(device, f32, QUICK, backward=True),
        _case(device, f32, QUICK, causal=True, backward=True),
        _case(device, f32, MAIN, quick=False, target=even),
        _case(device, f32, MAIN, causal=True, quick=False, target=causal_goal),
        _case(device, f32, MAIN, backward=True, quick=False, target=even),
        _case(device, f32, MAIN, causal=True, backward=True, quick=False, target=causal_goal),
        _case(device, f32, LONG, causal=True, quick=False, target=causal_goal),
        _case(device, f32, LONG, causal=True, backward=True, quick=False, target=causal_goal),
        _case(device, bf16, MAIN, quick=False, target=Target(2.0) if bf16_unit else None, note=bf16_note),
        _mha_case(device, MHA, need_weights=False, target=even),
        _mha_case(device, MHA, need_weights=True, target=even),
    ]
