"""torch.autograd.Function wrappers around the LSTM ops (``torch.ops.pyattn.lstm_*``).

Each Function returns the op's saved activations as extra, non-differentiable outputs
(so that torch.compile sees plain op calls); pyattn.functional drops them.
"""

from __future__ import annotations

import torch

_ops = torch.ops.pyattn


class LstmCell(torch.autograd.Function):
    """One step: (h', c', act) = lstm_cell_fwd(x, h, c, w_ih, w_hh, b_ih, b_hh)."""

    @staticmethod
    def forward(x, h, c, w_ih, w_hh, b_ih, b_hh):
        return _ops.lstm_cell_fwd(x, h, c, w_ih, w_hh, b_ih, b_hh)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, h, c, w_ih, w_hh, b_ih, b_hh = inputs
        _, c_new, act = output
        ctx.mark_non_differentiable(act)
        ctx.save_for_backward(x, h, c, w_ih, w_hh, act, c_new)
        ctx.has_bias = b_ih is not None or b_hh is not None

    @staticmethod
    def backward(ctx, dh, dc, _dact):
        x, h, c, w_ih, w_hh, act, c_new = ctx.saved_tensors
        dx, dh0, dc0, dw_ih, dw_hh, db = _ops.lstm_cell_bwd(dh, dc, x, h, c, w_ih, w_hh, act, c_new, ctx.has_bias)
        need = ctx.needs_input_grad
        return (
            dx if need[0] else None,
            dh0 if need[1] else None,
            dc0 if need[2] else None,
            dw_ih if need[3] else None,
            dw_hh if need[4] else None,
            db if need[5] else None,
            db if need[6] else None,
        )


class LstmSeq(torch.autograd.Function):
    """One layer, one direction, all steps:
    (y, h_n, c_n, act, c_all, h_pre) = lstm_seq_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh,
    w_hr, batch_sizes, reverse)."""

    @staticmethod
    def forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse):
        return _ops.lstm_seq_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = inputs
        y, _, _, act, c_all, h_pre = output
        ctx.mark_non_differentiable(act, c_all, h_pre)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, w_hr, y, act, c_all, h_pre, batch_sizes)
        ctx.reverse = reverse
        ctx.has_bias = b_ih is not None or b_hh is not None

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n, *_saved_grads):
        x, h0, c0, w_ih, w_hh, w_hr, y, act, c_all, h_pre, batch_sizes = ctx.saved_tensors
        dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr = _ops.lstm_seq_bwd(
            dy, dh_n, dc_n, x, h0, c0, w_ih, w_hh, w_hr, y, act, c_all, h_pre, batch_sizes, ctx.reverse, ctx.has_bias
        )
        need = ctx.needs_input_grad
        return (
            dx if need[0] else None,
            dh0 if need[1] else None,
            dc0 if need[2] else None,
            dw_ih if need[3] else None,
            dw_hh if need[4] else None,
            db if need[5] else None,
            db if need[6] else None,
            dw_hr if need[7] else None,
            None,
            None,
        )
