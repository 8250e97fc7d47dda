"""torch.autograd.Function wrappers around the LSTM ops (``torch.ops.pyattn.lstm_*``).

Written in the ctx-first style (forward(ctx, ...)): for a small per-step op like an
LSTM cell in a Python loop, the setup_context style's per-call argument binding costs
more than the kernel (about 50 us per call with torch 2.13). torch.compile traces both.
"""

from __future__ import annotations

import torch

_ops = torch.ops.pyattn


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
