"""LSTM against torch: pyattn.nn.LSTM vs torch.nn.LSTM (oneDNN on the CPU, cuDNN on
CUDA), and pyattn.nn.LSTMCell vs torch.nn.LSTMCell stepped in a Python loop.

Both modules hold the same weights (a state_dict copied across). Work is FLOP: forward
2·T·N·(C+H)·4H (the two GEMMs; the pointwise part is negligible), fwd+bwd 3x that
(backward is about twice the forward: the data and the weight gradients). Backward rows
time forward and backward together, as training runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

import pyattn

from . import Case, Reference, Target

OP = "lstm"


@dataclass
class _Inputs:
    ours: torch.nn.Module
    peer: torch.nn.Module
    x: torch.Tensor                 # [T, N, C]; requires grad on backward rows
    dy: Optional[torch.Tensor]      # upstream gradient of the output, backward rows
    # LSTMCell rows: one step's gate product alone, [N, C+H] @ [C+H, 4H] into [N, 4H]
    step_a: Optional[torch.Tensor] = None
    step_b: Optional[torch.Tensor] = None
    step_out: Optional[torch.Tensor] = None


def _make(device, dtype, T, N, C, H, backward, cell) -> _Inputs:
    torch.manual_seed(0)
    if cell:
        peer = torch.nn.LSTMCell(C, H, device=device, dtype=dtype)
        ours = pyattn.nn.LSTMCell(C, H, device=device, dtype=dtype)
    else:
        peer = torch.nn.LSTM(C, H, device=device, dtype=dtype)
        ours = pyattn.nn.LSTM(C, H, device=device, dtype=dtype)
    ours.load_state_dict(peer.state_dict())
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(T, N, C, generator=gen, device=device).to(dtype).requires_grad_(backward)
    dy = torch.randn(T, N, H, generator=gen, device=device).to(dtype) if backward else None
    inp = _Inputs(ours, peer, x, dy)
    if cell:
        inp.step_a = torch.randn(N, C + H, generator=gen, device=device).to(dtype)
        inp.step_b = torch.randn(C + H, 4 * H, generator=gen, device=device).to(dtype)
        inp.step_out = torch.empty(N, 4 * H, device=device, dtype=dtype)
    return inp


def _step_gemms(inp: _Inputs) -> None:
    """T bare gate products, what the steps cannot do without (the bound for LSTMCell)."""
    for _ in range(inp.x.shape[0]):
        torch.mm(inp.step_a, inp.step_b, out=inp.step_out)


STEP_GEMMS = Reference("T x torch.mm(out=) of one step's [N, C+H] @ [C+H, 4H]", _step_gemms, 1.1)


def _run(which: str, backward: bool, cell: bool):
    def f(inp: _Inputs):
        m = getattr(inp, which)
        with torch.set_grad_enabled(backward):
            if cell:
                h = c = None
                ys = []
                for t in range(inp.x.shape[0]):
                    h, c = m(inp.x[t], None if h is None else (h, c))
                    ys.append(h)
                y = torch.stack(ys)
            else:
                y, (h, c) = m(inp.x)
            if not backward:
                return y, h, c
            params = list(m.parameters())
            grads = torch.autograd.grad(y, [inp.x] + params, inp.dy)
            return (y.detach(),) + grads
    return f


def _case(device, dtype, T, N, C, H, backward=False, cell=False, quick=True, target=None) -> Case:
    flop = 2.0 * T * N * (C + H) * 4 * H * (3 if backward else 1)
    kind = "LSTMCell loop" if cell else "LSTM"
    peer_name = ("torch.nn.LSTMCell in a Python loop" if cell else "torch.nn.LSTM") + (
        ", autograd backward" if backward else "")
    return Case(
        op=OP,
        name=f"{kind} {'fwd+bwd' if backward else 'fwd'} T{T} N{N} C{C} H{H}",
        device=device,
        dtype=dtype,
        inputs=lambda: _make(device, dtype, T, N, C, H, backward, cell),
        ours=_run("ours", backward, cell),
        peer=_run("peer", backward, cell),
        peer_name=peer_name,
        work=flop,
        unit="FLOP",
        quick=quick,
        target=target,
    )


def cases(device: str) -> list[Case]:
    cpu = torch.device(device).type == "cpu"
    f32, bf16 = torch.float32, torch.bfloat16
    seq_target = Target(1.0) if cpu else None
    return [
        # small: runs in a moment, for --quick
        _case(device, f32, 20, 16, 64, 64),
        _case(device, f32, 20, 16, 64, 64, backward=True),
        # the shapes
        _case(device, f32, 100, 64, 256, 256, target=seq_target),
        _case(device, f32, 100, 64, 256, 256, backward=True, target=seq_target, quick=False),
        _case(device, f32, 50, 32, 512, 512, target=seq_target, quick=False),
        _case(device, f32, 50, 32, 512, 512, backward=True, target=seq_target, quick=False),
        _case(device, f32, 100, 1, 256, 256, target=seq_target),
        _case(device, f32, 100, 1, 256, 256, backward=True, target=seq_target, quick=False),
        # issue 12: 1.3x torch's cell, and within 1.1x of the steps' bare GEMMs
        _case(device, f32, 100, 64, 256, 256, cell=True, target=Target(1.3, reference=STEP_GEMMS) if cpu else None),
        _case(device, f32, 100, 64, 256, 256, backward=True, cell=True, quick=False),
        _case(device, bf16, 100, 64, 256, 256, quick=False),
    ] + ([] if cpu else [
        # CUDA: cuDNN's shapes of the issue, and a small batch for the persistent kernel
        # (kernels/cuda/lstm_persistent.cu), where the issue aims at 1.5x
        _case(device, f32, 100, 64, 512, 512, backward=True, target=Target(1.0)),
        _case(device, bf16, 100, 64, 512, 512, backward=True, target=Target(1.0)),
        _case(device, f32, 100, 8, 512, 512, target=Target(1.5)),
        _case(device, f32, 100, 8, 512, 512, backward=True, target=Target(1.5)),
        _case(device, bf16, 100, 8, 512, 512, backward=True, target=Target(1.5)),
    ])
