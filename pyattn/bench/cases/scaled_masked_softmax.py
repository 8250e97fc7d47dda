"""scaled_masked_softmax against torch eager: softmax((x * scale).masked_fill(mask, -inf)).

Work is the minimum traffic in bytes: forward reads x and the mask once (at its own,
un-broadcast size) and writes y; backward reads y and dy and writes dx; fwd+bwd is the
sum. "fwd+bwd" rows time forward and autograd backward together, as training runs them
(so they include autograd's per-call host cost); "bwd" rows time the backward op alone
against torch's softmax backward, the kernel's own rate.
"into out=" rows give both sides preallocated outputs, as the copy ceiling has. A fresh
CPU output pays the OS zeroing each new page on first touch, so the forward into a
fresh output is judged against ``torch.empty_like(x).copy_(x)`` timed in the same run,
which pays the same cost (see bench/results for what that cost was on the 2-core VM).
On CUDA every row is judged against the copy bandwidth measured in the same run
(issue 16): 85% at the main size, 80% for short (128 keys) and long (16384 keys) rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from pyattn.functional import scaled_masked_softmax

from . import Case, Reference, Target

OP = "scaled_masked_softmax"
SCALE = 0.125
MAIN = (8, 12, 512, 512)
LONG = (2, 8, 128, 16384)  # 1.3x the elements of MAIN in 32x longer rows
SHORT = (8, 12, 2048, 128)  # MAIN's elements in rows of 128 keys


@dataclass
class _Inputs:
    x: torch.Tensor                  # requires grad on backward rows
    mask: Optional[torch.Tensor]     # bool, True = masked out; what ours gets (None if causal)
    peer_mask: torch.Tensor          # the bool mask the peer applies (the causal one if causal)
    dy: Optional[torch.Tensor]       # upstream gradient on backward rows
    y: Optional[torch.Tensor] = None        # "bwd" rows: the forward's output
    out: Optional[torch.Tensor] = None      # out= rows: ours writes here
    peer_out: Optional[torch.Tensor] = None  # out= rows: the peer's output buffer
    peer_tmp: Optional[torch.Tensor] = None  # out= rows: the peer's scaled, masked scores


def _make_inputs(device, dtype, shape, mask_kind, backward) -> _Inputs:
    b, h, sq, sk = shape
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(shape, generator=gen, device=device).to(dtype).requires_grad_(backward)
    if mask_kind == "causal":
        mask = None
        peer_mask = torch.ones(sq, sk, dtype=torch.bool, device=device).triu(1)
    elif mask_kind == "padding":
        # key padding: batch i attends to its first lengths[i] keys (at least half)
        lengths = torch.randint(sk // 2, sk + 1, (b, 1, 1, 1), generator=gen, device=device)
        mask = torch.arange(sk, device=device) >= lengths
        peer_mask = mask
    else:
        # shared by heads; key 0 is never masked so no row is fully masked (the peer would
        # give NaN there, ours 0 by design)
        mask = torch.rand((b, 1, sq, sk), generator=gen, device=device) < 0.25
        mask[..., 0] = False
        peer_mask = mask
    dy = torch.randn(shape, generator=gen, device=device).to(dtype) if backward else None
    return _Inputs(x, mask, peer_mask, dy)


def _ours(inp: _Inputs) -> torch.Tensor:
    return scaled_masked_softmax(inp.x, mask=inp.mask, scale=SCALE, causal=inp.mask is None)


def _peer(inp: _Inputs) -> torch.Tensor:
    return torch.softmax((inp.x * SCALE).masked_fill(inp.peer_mask, float("-inf")), -1)


def _ours_out(inp: _Inputs) -> torch.Tensor:
    return scaled_masked_softmax(inp.x, mask=inp.mask, scale=SCALE, causal=inp.mask is None, out=inp.out)


def _peer_out(inp: _Inputs) -> torch.Tensor:
    torch.mul(inp.x, SCALE, out=inp.peer_tmp).masked_fill_(inp.peer_mask, float("-inf"))
    return torch._softmax(inp.peer_tmp, -1, False, out=inp.peer_out)


def _with_out(make):
    """Inputs plus preallocated outputs: what a loop that reuses its buffers runs, and
    what the copy ceiling measures (a destination that already exists)."""
    def inputs():
        inp = make()
        inp.out, inp.peer_out, inp.peer_tmp = (torch.empty_like(inp.x) for _ in range(3))
        return inp
    return inputs


def _ours_bwd(inp: _Inputs) -> torch.Tensor:
    return torch.ops.pyattn.scaled_masked_softmax_bwd(inp.y, inp.dy, SCALE)


def _peer_bwd(inp: _Inputs) -> torch.Tensor:
    return torch._softmax_backward_data(inp.dy, inp.y, -1, inp.y.dtype).mul_(SCALE)


def _with_y(make):
    """Inputs plus the forward's output, for rows that time the backward alone."""
    def inputs():
        inp = make()
        with torch.no_grad():
            inp.y = _ours(inp)
        return inp
    return inputs


def _with_backward(forward):
    def fwd_bwd(inp: _Inputs):
        y = forward(inp)
        (dx,) = torch.autograd.grad(y, inp.x, inp.dy)  # no .grad accumulation to time
        return y.detach(), dx
    return fwd_bwd


def _case(device, dtype, shape, mask_kind="mask", backward=False, quick=True, target=None, out=False,
          bwd_only=False) -> Case:
    assert not (out and (backward or bwd_only)), "out= has no autograd"
    n = math.prod(shape)
    esize = torch.empty((), dtype=dtype).element_size()
    b, _, sq, sk = shape
    mask_bytes = {"mask": b * sq * sk, "padding": b * sk, "causal": 0}[mask_kind]
    fwd_work, bwd_work = 2 * n * esize + mask_bytes, 3 * n * esize
    work = bwd_work if bwd_only else fwd_work + (bwd_work if backward else 0)
    dims = "x".join(map(str, shape))
    what = {"mask": f"bool mask {b}x1x{sq}x{sk}", "padding": f"padding mask {b}x1x1x{sk}",
            "causal": "causal"}[mask_kind]
    peer_name = "torch.softmax((x*scale).masked_fill(mask, -inf), -1)" + (
        " with a cached triu mask" if mask_kind == "causal" else "") + (
        ", autograd backward" if backward else "")
    if out:
        peer_name = "torch.mul(x, scale, out=t).masked_fill_(mask, -inf); torch._softmax(t, -1, False, out=y)"
    make = lambda: _make_inputs(device, dtype, shape, mask_kind, backward or bwd_only)  # noqa: E731
    if bwd_only:
        name, inputs, ours, peer = f"bwd {dims}", _with_y(make), _ours_bwd, _peer_bwd
        peer_name = "torch._softmax_backward_data(dy, y, -1, dtype).mul_(scale)"
    elif backward:
        name, inputs, ours, peer = f"fwd+bwd {dims} {what}", make, _with_backward(_ours), _with_backward(_peer)
    elif out:
        name, inputs, ours, peer = f"fwd {dims} {what} into out=", _with_out(make), _ours_out, _peer_out
    else:
        name, inputs, ours, peer = f"fwd {dims} {what}", make, _ours, _peer
    return Case(op=OP, name=name, device=device, dtype=dtype, inputs=inputs, ours=ours, peer=peer,
                peer_name=peer_name, work=work, unit="B", quick=quick, target=target)


# A fresh output of x's size, written once: the least a forward into a new tensor pays.
FRESH_COPY = Reference("torch.empty_like(x).copy_(x)", lambda inp: torch.empty_like(inp.x).copy_(inp.x), 1.0)


def cases(device: str) -> list[Case]:
    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    if torch.device(device).type == "cpu":
        # CPU targets (issue 12): into a fresh output, at least the speed of a copy into a
        # fresh tensor; into a reused output (out=), 85% of the copy bandwidth.
        return [
            _case(device, f32, MAIN, target=Target(reference=FRESH_COPY)),
            _case(device, f32, MAIN, out=True, target=Target(ceiling_frac=0.85)),
            _case(device, f32, MAIN, backward=True, target=Target(4.0)),
            _case(device, bf16, MAIN),
            _case(device, bf16, MAIN, backward=True, quick=False),
            _case(device, f32, MAIN, "causal"),
            _case(device, f32, MAIN, "causal", backward=True, quick=False),
            _case(device, f32, LONG, "padding"),
        ]
    # CUDA targets (issue 16): every dtype and mask kind, forward and backward, at 85% of
    # the copy bandwidth; 80% for short and long rows. --quick keeps one row of each kind.
    main, edge = Target(ceiling_frac=0.85), Target(ceiling_frac=0.80)
    rows = []
    for dtype in (f32, f16, bf16):
        quick = dtype != f16
        rows += [
            _case(device, dtype, MAIN, target=main, quick=quick),
            _case(device, dtype, MAIN, out=True, target=main, quick=False),
            _case(device, dtype, MAIN, bwd_only=True, target=main, quick=quick),
            _case(device, dtype, MAIN, backward=True, target=main, quick=dtype == f32),
        ]
    return rows + [
        _case(device, f32, MAIN, "causal", target=main, quick=False),
        _case(device, bf16, MAIN, "causal", backward=True, target=main, quick=False),
        _case(device, f16, MAIN, "padding", target=main, quick=False),
        _case(device, f16, SHORT, target=edge),
        _case(device, f16, SHORT, bwd_only=True, target=edge, quick=False),
        _case(device, f32, SHORT, "causal", target=edge, quick=False),
        _case(device, f32, LONG, "padding", target=edge),
        _case(device, bf16, LONG, "padding", target=edge, quick=False),
        _case(device, f32, LONG, bwd_only=True, target=edge),
        _case(device, bf16, LONG, "padding", backward=True, target=edge, quick=False),
    ]
