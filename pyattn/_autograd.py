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


def _attention_setup_context(ctx, inputs, output):
    q, k, v, mask, key_lengths, *rules, dropout_p, dropout_seed = inputs  # defaults filled in by torch
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, mask, key_lengths, dropout_seed)
    ctx.rules = rules  # scale, causal, bottom_right, window_left, window_right
    ctx.dropout_p = dropout_p
    ctx.mask_shape = mask.shape if mask is not None else None


def _attention_backward(ctx, dout, dlse):
    """Probabilities recomputed from the saved lse (nothing of size lq x lk is kept), and
    the dropout mask from the saved seed. dlse (when lse was used) adds dlse_i * P_ij to
    the score gradient. An additive mask that requires grad gets dL/dscores summed down
    to its own shape."""
    q, k, v, out, lse, mask, key_lengths, dropout_seed = ctx.saved_tensors
    dout = torch.zeros_like(out) if dout is None else dout.to(q.dtype)
    mask_grad = bool(ctx.needs_input_grad[3])
    dq, dk, dv, dmask = _ops.attention_bwd(
        dout, q, k, v, out, lse, dlse, mask, key_lengths, *ctx.rules, mask_grad, ctx.dropout_p, dropout_seed
    )
    dmask = dmask.sum_to_size(ctx.mask_shape) if mask_grad else None
    return dq, dk, dv, dmask, None, None, None, None, None, None, None, None


torch.library.register_autograd("pyattn::attention_fwd", _attention_backward, setup_context=_attention_setup_context)


def _attention_dropout_setup_context(ctx, inputs, output):
    _, seed, p = inputs
    ctx.save_for_backward(seed)
    ctx.p = p


def _attention_dropout_backward(ctx, dy):
    """y = x * M with a fixed diagonal M: dx = dy * M, the same op."""
    (seed,) = ctx.saved_tensors
    return _ops.attention_dropout(dy, seed, ctx.p), None, None


torch.library.register_autograd(
    "pyattn::attention_dropout", _attention_dropout_backward, setup_context=_attention_dropout_setup_context
)


def _attention_with_weights_backward(ctx, dout, dweights):
    raise RuntimeError(
        "attention_with_weights is inference only (no backward); for gradients, compute the weights with "
        "scaled_masked_softmax, as pyattn.nn.MultiheadAttention does when grad is enabled"
    )


torch.library.register_autograd(
    "pyattn::attention_with_weights", _attention_with_weights_backward, setup_context=lambda ctx, inputs, output: None
)


def _sgns_loss_setup_context(ctx, inputs, output):
    w_in, w_out, centers, contexts, negatives = inputs
    ctx.save_for_backward(w_in, w_out, centers, contexts, negatives)


def _sgns_loss_backward(ctx, dloss):
    """Row gradients from the kernel, scatter-added into dense table gradients."""
    w_in, w_out, centers, contexts, negatives = ctx.saved_tensors
    d_h, d_u = _ops.sgns_loss_bwd(dloss.contiguous(), w_in, w_out, centers, contexts, negatives)
    d_in = d_out = None
    if ctx.needs_input_grad[0]:
        d_in = torch.zeros_like(w_in).index_add_(0, centers.long(), d_h)
    if ctx.needs_input_grad[1]:
        rows = torch.cat([contexts.long().unsqueeze(1), negatives.long()], dim=1).reshape(-1)
        d_out = torch.zeros_like(w_out).index_add_(0, rows, d_u.reshape(-1, d_u.shape[-1]))
    return d_in, d_out, None, None, None


torch.library.register_autograd(
    "pyattn::sgns_loss_fwd", _sgns_loss_backward, setup_context=_sgns_loss_setup_context
)
