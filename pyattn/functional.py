"""Functional forms of pyattn's kernels; each accepts what its torch counterpart does."""

from __future__ import annotations

import numbers
from typing import Optional

import torch


__all__ = ["scaled_masked_softmax"]


def scaled_masked_softmax(
    x: torch.Tensor, mask: Optional[torch.Tensor] = None, scale: float = 1.0, causal: bool = False
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

    Returns:
        y, contiguous, x's shape and dtype. A row with every key masked is all zeros (and
        passes zero gradient), never NaN.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"scaled_masked_softmax: x must be a torch.Tensor, got {type(x).__name__}")
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise TypeError(f"scaled_masked_softmax: mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise TypeError(f"scaled_masked_softmax: scale must be a real number, got {type(scale).__name__}")
    return torch.ops.pyattn.scaled_masked_softmax_fwd(x, mask, float(scale), bool(causal))
