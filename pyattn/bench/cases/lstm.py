"""LSTM against torch: pyattn.nn.LSTM vs torch.nn.LSTM (oneDNN on the CPU, cuDNN on
CUDA), and pyattn.nn.LSTMCell vs torch.nn.LSTMCell stepped in a Python loop.

Both modules hold the same weights (a state_dict copied across). Work is FLOP: forward
2·T·N·(C+H)·4H per layer and direction (the two GEMMs; the pointwise part is
negligible), fwd+bwd 3x that (backward is about twice the forward: the data and the
weight gradients). Backward rows time forward and backward together, as training runs
them.

fp32 on CUDA runs in one precision mode per row, set for both sides around every call:
"TF32" (torch.backends.cudnn.allow_tf32 True, torch's default: cuDNN and pyattn may use
TF32 tensor cores) or "strict" (False: both compute in fp32). A TF32 row's agreement
check uses TF32_TOLERANCE, a strict row fp32's.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Optional

import torch

import pyattn

from . import TF32_TOLERANCE, Case, Reference, Target, outputs_agree

OP = "lstm"


@dataclass
class _Inputs:
    ours: torch.nn.Module
    peer: torch.nn.Module
    x: torch.Tensor                 # [T, N, C]; requires grad on backward rows
    dy: Optional[torch.Tensor]      # upstream gradient of the output (its .data if packed), backward rows
    # packed rows: the sequences' lengths; each call packs x (the leaf) with them, both
    # sides alike, so that backward reaches x through a fresh graph
    lengths: Optional[torch.Tensor] = None
    # LSTMCell rows: one step's gate product alone, [N, C+H] @ [C+H, 4H] into [N, 4H]
    step_a: Optional[torch.Tensor] = None
    step_b: Optional[torch.Tensor] = None
    step_out: Optional[torch.Tensor] = None


def _lengths(T: int, N: int) -> torch.Tensor:
    """N sequence lengths, evenly spread from T down to T // 4 (a PackedSequence's batch
    shrinks step by step)."""
    return torch.linspace(T, max(1, T // 4), N).round().long()


def _make(device, dtype, T, N, C, H, backward, cell, layers=1, bidirectional=False, packed=False) -> _Inputs:
    torch.manual_seed(0)
    if cell:
        peer = torch.nn.LSTMCell(C, H, device=device, dtype=dtype)
        ours = pyattn.nn.LSTMCell(C, H, device=device, dtype=dtype)
    else:
        kw = dict(num_layers=layers, bidirectional=bidirectional, device=device, dtype=dtype)
        peer = torch.nn.LSTM(C, H, **kw)
        ours = pyattn.nn.LSTM(C, H, **kw)
    ours.load_state_dict(peer.state_dict())
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(T, N, C, generator=gen, device=device).to(dtype).requires_grad_(backward)
    out_rows = int(_lengths(T, N).sum()) if packed else T * N
    dy = (torch.randn(out_rows, H * (2 if bidirectional else 1), generator=gen, device=device).to(dtype)
          if backward else None)
    if dy is not None and not packed:
        dy = dy.view(T, N, -1)
    inp = _Inputs(ours, peer, x, dy)
    if packed:
        inp.lengths = _lengths(T, N)
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


@contextlib.contextmanager
def _tf32(allow: Optional[bool]):
    """torch.backends.cudnn.allow_tf32 = allow for the block (None: left as it is)."""
    if allow is None:
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def _run(which: str, backward: bool, cell: bool, tf32: Optional[bool] = None):
    def f(inp: _Inputs):
        m = getattr(inp, which)
        with torch.set_grad_enabled(backward), _tf32(tf32):
            if cell:
                h = c = None
                ys = []
                for t in range(inp.x.shape[0]):
                    h, c = m(inp.x[t], None if h is None else (h, c))
                    ys.append(h)
                y = torch.stack(ys)
            else:
                if inp.lengths is None:
                    y, (h, c) = m(inp.x)
                else:
                    y, (h, c) = m(torch.nn.utils.rnn.pack_padded_sequence(inp.x, inp.lengths))
                    y = y.data
            if not backward:
                return y, h, c
            params = list(m.parameters())
            grads = torch.autograd.grad(y, [inp.x] + params, inp.dy)
            return (y.detach(),) + grads
    return f


def _case(device, dtype, T, N, C, H, backward=False, cell=False, quick=True, target=None, tf32=None, layers=1,
          bidirectional=False, packed=False) -> Case:
    """tf32: None leaves torch's setting alone (CPU rows, 16-bit rows), else the row's
    fp32 mode (see the module docstring). packed: a PackedSequence of lengths T .. T/4."""
    dirs = 2 if bidirectional else 1
    rows = int(_lengths(T, N).sum()) if packed else T * N
    flop = 0.0
    for layer in range(layers):  # layers above the first take both directions' outputs
        flop += dirs * 2.0 * rows * ((C if layer == 0 else dirs * H) + H) * 4 * H
    flop *= 3 if backward else 1
    kind = "LSTMCell loop" if cell else "LSTM"
    shape = (f"T{T} N{N} C{C} H{H}" + (f" L{layers}" if layers > 1 else "") + (" bidir" if bidirectional else "")
             + (" packed" if packed else ""))
    mode = "" if tf32 is None else (" TF32" if tf32 else " strict")
    peer_name = ("torch.nn.LSTMCell in a Python loop" if cell else "torch.nn.LSTM") + (
        ", autograd backward" if backward else "")
    return Case(
        op=OP,
        name=f"{kind} {'fwd+bwd' if backward else 'fwd'} {shape}{mode}",
        device=device,
        dtype=dtype,
        inputs=lambda: _make(device, dtype, T, N, C, H, backward, cell, layers, bidirectional, packed),
        ours=_run("ours", backward, cell, tf32),
        peer=_run("peer", backward, cell, tf32),
        peer_name=peer_name,
        work=flop,
        unit="FLOP",
        quick=quick,
        target=target,
        check=functools.partial(outputs_agree, tol=TF32_TOLERANCE) if tf32 else None,
    )


def cases(device: str) -> list[Case]:
    cpu = torch.device(device).type == "cpu"
    f32, bf16 = torch.float32, torch.bfloat16
    seq_target = Target(1.0) if cpu else None
    tf32 = None if cpu else True  # CUDA fp32 rows shared with the CPU: torch's default mode
    return [
        # small: runs in a moment, for --quick
        _case(device, f32, 20, 16, 64, 64, tf32=tf32),
        _case(device, f32, 20, 16, 64, 64, backward=True, tf32=tf32),
        # the shapes
        _case(device, f32, 100, 64, 256, 256, target=seq_target, tf32=tf32),
        _case(device, f32, 100, 64, 256, 256, backward=True, target=seq_target, quick=False, tf32=tf32),
        _case(device, f32, 50, 32, 512, 512, target=seq_target, quick=False, tf32=tf32),
        _case(device, f32, 50, 32, 512, 512, backward=True, target=seq_target, quick=False, tf32=tf32),
        _case(device, f32, 100, 1, 256, 256, target=seq_target, tf32=tf32),
        _case(device, f32, 100, 1, 256, 256, backward=True, target=seq_target, quick=False, tf32=tf32),
        # issue 12: 1.3x torch's cell, and within 1.1x of the steps' bare GEMMs
        _case(device, f32, 100, 64, 256, 256, cell=True, target=Target(1.3, reference=STEP_GEMMS) if cpu else None,
              tf32=tf32),
        _case(device, f32, 100, 64, 256, 256, backward=True, cell=True, quick=False, tf32=tf32),
        _case(device, bf16, 100, 64, 256, 256, quick=False),
    ] + ([] if cpu else _cuda_cases(device))


def _cuda_cases(device: str) -> list[Case]:
    """Issue 14's rows against cuDNN: fp32 in both modes and bf16."""
    f32, bf16 = torch.float32, torch.bfloat16
    rows = []
    for dtype, mode in ((f32, True), (f32, False), (bf16, None)):
        quick = mode is not False  # --quick (gpu_check's 60 s bench step): TF32 and bf16 at batch 64 and 8
        rows += [
            # batch 64: the tensor-core persistent kernels (kernels/cuda/lstm_persistent_mma.cu)
            _case(device, dtype, 100, 64, 512, 512, target=Target(1.3), tf32=mode, quick=False),
            _case(device, dtype, 100, 64, 512, 512, backward=True, target=Target(1.5), tf32=mode, quick=quick),
            # small batches: the CUDA-core persistent kernels (lstm_persistent.cu)
            _case(device, dtype, 100, 8, 512, 512, target=Target(1.5), tf32=mode, quick=quick),
            _case(device, dtype, 100, 8, 512, 512, backward=True, tf32=mode, quick=False),
            _case(device, dtype, 100, 1, 512, 512, target=Target(1.5), tf32=mode, quick=False),
        ]
    rows += [
        _case(device, f32, 100, 256, 1024, 1024, backward=True, target=Target(1.2), tf32=True, quick=False),
        _case(device, bf16, 100, 256, 1024, 1024, backward=True, target=Target(1.2), quick=False),
        # reported, no target
        _case(device, f32, 100, 64, 512, 512, backward=True, tf32=True, layers=2, bidirectional=True, quick=False),
        # cuDNN is slow on uneven lengths at long T (pytorch issue 149194)
        _case(device, f32, 1000, 64, 256, 256, target=Target(3.0), tf32=True, packed=True, quick=False),
        _case(device, f32, 1000, 64, 256, 256, backward=True, target=Target(3.0), tf32=True, packed=True, quick=False),
    ]
    return rows
