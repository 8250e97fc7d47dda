"""Autograd for the ``torch.ops.pyattn.*`` ops, registered on the ops themselves
(torch.library.register_autograd), so the raw ops, the functional API, torch.compile
and opcheck all see the same derivative."""

from __future__ import annotations

import torch

_ops = torch.ops.pyattn


def _softmax_setup_context(ctx, inputs, output):
    _, mask, scale, _ = inputs
    ctx.save_for_backward(output)
    ctx.scale = scale
    ctx.mask_shape = mask.shape if mask is not None else None
    ctx.mask_dtype = mask.dtype if mask is not None else None


def _softmax_backward(ctx, dy):
    """dx = scale * y * (dy - sum(dy * y)); an additive mask that requires grad gets
    y * (dy - sum(dy * y)) summed down to its own shape (learned biases)."""
    (y,) = ctx.saved_tensors
    dy = dy.to(y.dtype)
    dx = dmask = None
    if ctx.needs_input_grad[1]:
        g = _ops.scaled_masked_softmax_bwd(y, dy, 1.0)  # gradient w.r.t. the scaled, masked scores
        dmask = g.sum_to_size(ctx.mask_shape).to(ctx.mask_dtype)
        if ctx.needs_input_grad[0]:
            dx = g * ctx.scale
    elif ctx.needs_input_grad[0]:
        dx = _ops.scaled_masked_softmax_bwd(y, dy, ctx.scale)
    return dx, dmask, None, None


torch.library.register_autograd(
    "pyattn::scaled_masked_softmax_fwd", _softmax_backward, setup_context=_softmax_setup_context
)
