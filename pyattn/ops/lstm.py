"""LSTM ops: one cell step (``torch.ops.pyattn.lstm_cell_fwd`` / ``_bwd``, with
``lstm_cell_pack`` for its fp32 CPU weights) and one layer-direction over all steps
(``lstm_seq_fwd`` / ``_bwd``); kernels in csrc/lstm.cpp. ``lstm_cell`` and ``lstm`` are
re-exported by :mod:`pyattn.functional` and back :mod:`pyattn.nn`'s LSTMCell and LSTM.

The derivatives are ``torch.autograd.Function`` classes in the ctx-first style
(forward(ctx, ...)) rather than register_autograd: for a per-step cell in a Python loop
the setup_context style's per-call argument binding cost more than the kernel (about
50 us per call with torch 2.13). torch.compile traces both."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from pyattn.ops.common import needs_grad

_ops = torch.ops.pyattn


# ----------------------------------------------------------------------- fake


# Shapes only; the checks are in csrc/lstm.cpp. H = w_ih.size(0) // 4, P = w_hh.size(1).
def _new(like, *shape):
    return like.new_empty(shape)


@torch.library.register_fake("pyattn::lstm_cell_fwd")
def _lstm_cell_fwd_fake(x, h, c, w_ih, w_hh, b_ih, b_hh, w_packed=None):
    n, hsz = x.shape[0], w_ih.shape[0] // 4
    return _new(x, n, hsz), _new(x, n, hsz), _new(x, n, 4 * hsz)


@torch.library.register_fake("pyattn::lstm_cell_pack")
def _lstm_cell_pack_fake(w_ih, w_hh):
    # kernels/cpu/packed_gemm.h: ceil(H / 32) blocks x 4 gates x K rows x 32 columns
    hsz, k = w_ih.shape[0] // 4, w_ih.shape[1] + w_hh.shape[1]
    return _new(w_ih, (hsz + 31) // 32 * 4 * k * 32)


@torch.library.register_fake("pyattn::lstm_cell_bwd")
def _lstm_cell_bwd_fake(dh, dc, x, h, c, w_ih, w_hh, act, c_new, has_bias):
    n, hsz = x.shape[0], w_ih.shape[0] // 4
    return (
        _new(x, *x.shape),
        _new(x, n, w_hh.shape[1]),
        _new(x, n, hsz),
        _new(x, *w_ih.shape),
        _new(x, *w_hh.shape),
        _new(x, 4 * hsz) if has_bias else _new(x, 0),
    )


@torch.library.register_fake("pyattn::lstm_seq_fwd")
def _lstm_seq_fwd_fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, need_backward=True):
    hsz, psz, n = w_ih.shape[0] // 4, w_hh.shape[1], h0.shape[0]
    rows = x.shape[0] if batch_sizes is not None else x.shape[0] * x.shape[1]
    saved = need_backward  # act, c_all, h_pre: empty without backward
    return (
        _new(x, *x.shape[:-1], psz),
        _new(x, n, psz),
        _new(x, n, hsz),
        _new(x, rows, 4 * hsz) if saved else _new(x, 0),
        _new(x, rows, hsz) if saved else _new(x, 0),
        _new(x, rows, hsz) if saved and w_hr is not None else _new(x, 0),
    )


@torch.library.register_fake("pyattn::lstm_seq_bwd")
def _lstm_seq_bwd_fake(dy, dh_n, dc_n, x, h0, c0, w_ih, w_hh, w_hr, y, act, c_all, h_pre, batch_sizes, reverse, has_bias):
    hsz = w_ih.shape[0] // 4
    return (
        _new(x, *x.shape),
        _new(x, *h0.shape),
        _new(x, *c0.shape),
        _new(x, *w_ih.shape),
        _new(x, *w_hh.shape),
        _new(x, 4 * hsz) if has_bias else _new(x, 0),
        _new(x, *w_hr.shape) if w_hr is not None else _new(x, 0),
    )


# ------------------------------------------------------------------- autograd


def _needed(ctx, *grads):
    """Each input's gradient, or None where autograd did not ask for it."""
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))


class LstmCell(torch.autograd.Function):
    """One step: (h', c') from (x, h, c, w_ih, w_hh, b_ih, b_hh, w_packed); the activated
    gates are saved for backward. w_packed (lstm_cell_pack of w_ih, w_hh, or None) only
    spares the forward the packing: gradients go to w_ih and w_hh as without it."""

    @staticmethod
    def forward(ctx, x, h, c, w_ih, w_hh, b_ih, b_hh, w_packed=None):
        h_new, c_new, act = _ops.lstm_cell_fwd(x, h, c, w_ih, w_hh, b_ih, b_hh, w_packed)
        ctx.save_for_backward(x, h, c, w_ih, w_hh, act, c_new)
        ctx.has_bias = b_ih is not None or b_hh is not None
        return h_new, c_new

    @staticmethod
    def backward(ctx, dh, dc):
        x, h, c, w_ih, w_hh, act, c_new = ctx.saved_tensors
        dx, dh0, dc0, dw_ih, dw_hh, db = _ops.lstm_cell_bwd(dh, dc, x, h, c, w_ih, w_hh, act, c_new, ctx.has_bias)
        return _needed(ctx, dx, dh0, dc0, dw_ih, dw_hh, db, db, None)  # db: for b_ih and b_hh alike


class LstmSeq(torch.autograd.Function):
    """One layer, one direction, all steps: (y, h_n, c_n) from (x, h0, c0, w_ih, w_hh,
    b_ih, b_hh, w_hr, batch_sizes, reverse, need_backward); see lstm_seq_fwd in
    csrc/bindings.cpp. need_backward=False (inference: grad disabled or nothing requires
    it; decided by the caller, as forward runs without grad) saves nothing, and the op
    keeps its activations in per-step scratch."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, need_backward=True):
        y, h_n, c_n, act, c_all, h_pre = _ops.lstm_seq_fwd(
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, need_backward
        )
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, w_hr, y, act, c_all, h_pre, batch_sizes)
        ctx.reverse = reverse
        ctx.has_bias = b_ih is not None or b_hh is not None
        return y, h_n, c_n

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        x, h0, c0, w_ih, w_hh, w_hr, y, act, c_all, h_pre, batch_sizes = ctx.saved_tensors
        dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr = _ops.lstm_seq_bwd(
            dy, dh_n, dc_n, x, h0, c0, w_ih, w_hh, w_hr, y, act, c_all, h_pre, batch_sizes, ctx.reverse, ctx.has_bias
        )
        return _needed(ctx, dx, dh0, dc0, dw_ih, dw_hh, db, db, dw_hr, None, None, None)


# -------------------------------------------------------------------- wrapper


def lstm_cell(
    input: torch.Tensor,
    hx: Optional[tuple[torch.Tensor, torch.Tensor]],
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor] = None,
    b_hh: Optional[torch.Tensor] = None,
    w_packed: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step, as ``nn.LSTMCell``: returns (h', c').

    gates = input @ w_ihᵀ + h @ w_hhᵀ + b_ih + b_hh in torch's order (i, f, g, o);
    c' = f*c + i*g; h' = o*tanh(c'). In fp32 on the CPU the gates are one product with
    [w_ih | w_hh] packed for pyattn's GEMM, fused with everything elementwise (biases,
    activations, state update); elsewhere the two GEMMs go through ATen and the
    elementwise part is one fused kernel. The backward is a fused kernel and ATen GEMMs.

    Args:
        input: ``[N, C]`` or unbatched ``[C]``; float32, float64 or bfloat16 (CPU).
        hx: ``(h, c)``, each ``[N, H]`` (``[H]`` unbatched), or None for zeros.
        w_ih: ``[4H, C]``; w_hh: ``[4H, H]``; b_ih, b_hh: ``[4H]`` or None.
        w_packed: fp32 CPU only: ``torch.ops.pyattn.lstm_cell_pack(w_ih, w_hh)``, made
            once for a loop of steps with unchanged weights (``pyattn.nn.LSTMCell`` keeps
            one); None packs on every call. It must match w_ih and w_hh, which still
            receive the gradients.
    """
    dim = input.dim()
    if dim == 2 and hx is not None:  # the loop's usual case first, with the least Python
        h_new, c_new = LstmCell.apply(input, hx[0], hx[1], w_ih, w_hh, b_ih, b_hh, w_packed)
        return h_new, c_new
    if dim not in (1, 2):
        raise ValueError(f"lstm_cell: input has {dim} dims, expected 1 (input_size) or 2 (batch, input_size)")
    x = input if dim == 2 else input.unsqueeze(0)
    if hx is None:
        hsz = w_ih.shape[0] // 4
        h, c = x.new_zeros(x.shape[0], hsz), x.new_zeros(x.shape[0], hsz)  # distinct: dynamo wants them so
    else:
        h, c = hx
        for name, t in (("hx[0] (h)", h), ("hx[1] (c)", c)):
            if t.dim() != 1:
                raise ValueError(f"lstm_cell: {name} has {t.dim()} dims, expected 1 like input (shape {tuple(input.shape)})")
        h, c = h.unsqueeze(0), c.unsqueeze(0)
    h_new, c_new = LstmCell.apply(x, h, c, w_ih, w_hh, b_ih, b_hh, w_packed)
    return (h_new, c_new) if dim == 2 else (h_new.squeeze(0), c_new.squeeze(0))


LstmWeights = Sequence[tuple]  # per (layer, direction): (w_ih, w_hh, b_ih, b_hh, w_hr), None where absent


def lstm(
    input: torch.Tensor,
    hx: Optional[tuple[torch.Tensor, torch.Tensor]],
    weights: LstmWeights,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    batch_sizes: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A stacked (optionally bidirectional, optionally projected) LSTM over a sequence.

    Each layer and direction runs every time step in one C++ call (no Python loop over
    time): the input GEMM of all steps at once (ATen), then per step the recurrent GEMM
    and the fused pointwise kernel (fp32 CPU without projection: pyattn's GEMM on W_hh
    packed once, fused with the pointwise part; else ATen); backward through time
    likewise, with the weight gradients as GEMMs over all steps.

    Args:
        input: time-major ``[T, N, C]``; or packed ``[sum(batch_sizes), C]`` with
            ``batch_sizes`` (``PackedSequence.data`` / ``.batch_sizes``, sorted).
        hx: ``(h_0 [L*D, N, P], c_0 [L*D, N, H])`` or None for zeros (P = proj_size or H).
        weights: ``weights[layer * D + direction] = (w_ih, w_hh, b_ih, b_hh, w_hr)`` with
            None for a missing bias or projection; direction 1 runs backwards in time.
        dropout: applied (when ``training``) to the output of every layer but the last.

    Returns:
        ``(output, (h_n, c_n))``: output ``[T, N, D*P]`` (packed: ``[sum, D*P]``), h_n
        ``[L*D, N, P]``, c_n ``[L*D, N, H]``.
    """
    ndir = 2 if bidirectional else 1
    if len(weights) != num_layers * ndir:
        raise ValueError(f"lstm: got {len(weights)} weight tuples, expected num_layers * directions = {num_layers * ndir}")
    packed = batch_sizes is not None
    want_dim = 2 if packed else 3
    if input.dim() != want_dim:
        raise ValueError(
            f"lstm: input has {input.dim()} dims, expected {want_dim} "
            + ("(sum(batch_sizes), input_size)" if packed else "(seq_len, batch, input_size)")
        )
    n = int(batch_sizes[0]) if packed and batch_sizes.numel() else (0 if packed else input.shape[1])
    w_ih0, w_hh0 = weights[0][0], weights[0][1]
    hsz, psz = w_ih0.shape[0] // 4, w_hh0.shape[1]
    if hx is None:
        h0 = input.new_zeros(num_layers * ndir, n, psz)
        c0 = input.new_zeros(num_layers * ndir, n, hsz)
    else:
        h0, c0 = hx
    hs, cs, x = [], [], input
    for layer in range(num_layers):
        outs = []
        for d in range(ndir):
            k = layer * ndir + d
            w_ih, w_hh, b_ih, b_hh, w_hr = weights[k]
            args = (x, h0[k], c0[k], w_ih, w_hh, b_ih, b_hh, w_hr)
            y, h_n, c_n = LstmSeq.apply(*args, batch_sizes, d == 1, needs_grad(*args))
            outs.append(y)
            hs.append(h_n)
            cs.append(c_n)
        x = outs[0] if ndir == 1 else torch.cat(outs, dim=-1)
        if dropout > 0 and training and layer + 1 < num_layers:
            x = torch.nn.functional.dropout(x, dropout, training=True)
    return x, (torch.stack(hs), torch.stack(cs))
