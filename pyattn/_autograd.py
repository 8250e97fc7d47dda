"""torch.autograd.Function wrappers around the ``torch.ops.pyattn.*`` ops."""

from __future__ import annotations

import torch

_ops = torch.ops.pyattn


class ScaledMaskedSoftmax(torch.autograd.Function):
    """y = softmax(scale * x + mask); backward from the saved y.

    dx = scale * y * (dy - sum(dy * y)); an additive mask that requires grad gets
    y * (dy - sum(dy * y)) summed down to its own shape (learned biases).
    """

    @staticmethod
    def forward(x, mask, scale, causal):
        return _ops.scaled_masked_softmax_fwd(x, mask, scale, causal)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, mask, scale, _ = inputs
        ctx.save_for_backward(output)
        ctx.scale = scale
        ctx.mask_shape = mask.shape if mask is not None else None

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dy = dy.to(y.dtype)
        dx = dmask = None
        if ctx.needs_input_grad[1]:
            g = _ops.scaled_masked_softmax_bwd(y, dy, 1.0)  # gradient w.r.t. the scaled scores
            dmask = g.sum_to_size(ctx.mask_shape)
            if ctx.needs_input_grad[0]:
                dx = g * ctx.scale
        elif ctx.needs_input_grad[0]:
            dx = _ops.scaled_masked_softmax_bwd(y, dy, ctx.scale)
        return dx, dmask, None, None


class Attention(torch.autograd.Function):
    """(out, lse) = attention_fwd(q, k, v, ...) on 4-d tensors; backward recomputes the
    probabilities from the saved lse (nothing of size lq x lk is kept).

    An additive mask that requires grad gets dL/dscores summed down to its own shape.
    lse is returned for callers that want it and takes no gradient.
    """

    @staticmethod
    def forward(q, k, v, mask, key_lengths, scale, causal, bottom_right, window_left, window_right):
        return _ops.attention_fwd(q, k, v, mask, key_lengths, scale, causal, bottom_right, window_left, window_right)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, mask, key_lengths, *rules = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse, mask, key_lengths)
        ctx.rules = rules  # scale, causal, bottom_right, window_left, window_right
        ctx.mark_non_differentiable(lse)

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, mask, key_lengths = ctx.saved_tensors
        mask_grad = bool(ctx.needs_input_grad[3])
        dq, dk, dv, dmask = _ops.attention_bwd(
            dout.to(q.dtype), q, k, v, out, lse, mask, key_lengths, *ctx.rules, mask_grad
        )
        dmask = dmask.sum_to_size(mask.shape) if mask_grad else None
        return dq, dk, dv, dmask, None, None, None, None, None, None
