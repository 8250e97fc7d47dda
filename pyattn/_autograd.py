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
