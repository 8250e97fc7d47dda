"""scaled_masked_softmax: softmax(scale * x + mask) over the last dim, fused in one pass,
forward and backward (``torch.ops.pyattn.scaled_masked_softmax_fwd`` / ``_fwd_out`` /
``_bwd``; kernels in csrc/scaled_masked_softmax.cpp)."""

from __future__ import annotations

import numbers
from typing import Optional

import torch

from pyattn.ops.common import needs_grad

_ops = torch.ops.pyattn


# ----------------------------------------------------------------------- fake


@torch.library.register_fake("pyattn::scaled_masked_softmax_fwd")
def _fwd_fake(x, mask, scale, causal):
    torch._check(x.dim() >= 2, lambda: f"scaled_masked_softmax: x has {x.dim()} dims, expected at least 2")
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("pyattn::scaled_masked_softmax_fwd_out")
def _fwd_out_fake(x, mask, scale, causal, out):
    torch._check(x.dim() >= 2, lambda: f"scaled_masked_softmax: x has {x.dim()} dims, expected at least 2")
    torch._check(out.shape == x.shape, lambda: f"scaled_masked_softmax: out has shape {tuple(out.shape)}, "
                                               f"expected x's shape {tuple(x.shape)}")


@torch.library.register_fake("pyattn::scaled_masked_softmax_bwd")
def _bwd_fake(y, dy, scale):
    return torch.empty_like(y, memory_format=torch.contiguous_format)


# ------------------------------------------------------------------- autograd


def _setup_context(ctx, inputs, output):
    _, mask, scale, _ = inputs
    ctx.save_for_backward(output)
    ctx.scale = scale
    ctx.mask_shape = mask.shape if mask is not None else None
    ctx.mask_dtype = mask.dtype if mask is not None else None


def _backward(ctx, dy):
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
    "pyattn::scaled_masked_softmax_fwd", _backward, setup_context=_setup_context
)


# -------------------------------------------------------------------- wrapper


def scaled_masked_softmax(
    x: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    scale: float = 1.0,
    causal: bool = False,
    *,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """softmax(scale * x + mask) over the last dim, fused in one pass (forward and backward).

    Args:
        x: scores ``[..., sq, sk]`` (any leading dims, any strides); float32, float64,
            float16 or bfloat16. Accumulates in float32 (float64 for float64).
        mask: optional, broadcastable to x. ``torch.bool``: True = masked out (the
            Megatron / nn.MultiheadAttention convention). Floating: added to the scaled
            scores (converted to x's dtype); it gets a gradient if it requires one.
        scale: multiplies x before the mask is applied.
        causal: also mask key j > query i (top-left aligned), without a mask tensor.
        out: optional, written and returned instead of a new tensor: x's shape and dtype,
            contiguous, not overlapping x. A loop that reuses it skips the allocation
            and, on the CPU, the OS zeroing freshly mapped pages on first touch. No
            autograd: as for torch's out= functions, x, mask and out must not require
            grad while grad is enabled.

    Returns:
        y (or out), contiguous, x's shape and dtype. A row with every key masked is all
        zeros (and passes zero gradient), never NaN.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"scaled_masked_softmax: x must be a torch.Tensor, got {type(x).__name__}")
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise TypeError(f"scaled_masked_softmax: mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise TypeError(f"scaled_masked_softmax: scale must be a real number, got {type(scale).__name__}")
    if out is None:
        return torch.ops.pyattn.scaled_masked_softmax_fwd(x, mask, float(scale), bool(causal))
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"scaled_masked_softmax: out must be a torch.Tensor or None, got {type(out).__name__}")
    if needs_grad(x, mask, out):
        raise RuntimeError("scaled_masked_softmax: out= does not support autograd (x, mask or out requires grad); "
                           "call it under torch.no_grad() or without out=")
    torch.ops.pyattn.scaled_masked_softmax_fwd_out(x, mask, float(scale), bool(causal), out)
    return out
