"""Reference for the fused scaled masked softmax, in NumPy float64.

    y = softmax(scale * x + mask) over the last dimension.

Shapes: ``x`` is ``[..., sq, sk]`` (at least 2 dims); ``i`` indexes rows within ``sq``
and ``j`` columns within ``sk``. ``mask`` is ``None`` or broadcastable to ``x`` (NumPy
broadcasting, so it may have fewer dims, e.g. ``[sk]`` or ``[b, 1, sq, sk]``).

Decisions pinned here (the kernels must agree):

* A boolean mask marks entries to drop: True = masked out (the Megatron and
  ``nn.MultiheadAttention`` convention). A masked entry's logit is -inf whatever ``x``
  holds there, so a NaN in a masked-out position does not reach the output (as
  ``masked_fill`` in torch).
* Any other mask dtype is an additive mask, added to ``scale * x``; it may hold -inf.
* ``causal=True`` also drops every ``j > i`` (top-left aligned, for any ``sq`` and
  ``sk``: row 0 sees column 0 only; with ``sq > sk`` the rows ``i >= sk - 1`` see every
  column).
* A row with no finite logit left (all masked, or all -inf) gives y = 0 in that row,
  not NaN, and a zero gradient.
* A NaN in an unmasked ``x`` makes its row NaN, as ``torch.softmax`` does.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "scaled_masked_softmax_fwd",
    "scaled_masked_softmax_bwd",
    "scaled_masked_softmax_mask_grad",
]


def _causal_keep(sq: int, sk: int) -> np.ndarray:
    """[sq, sk] bool, True where column j may be seen from row i (j <= i)."""
    return np.arange(sk)[None, :] <= np.arange(sq)[:, None]


def softmax_lse(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over the last dim of float64 scores ``z [..., n]`` (-inf = masked) and its
    natural-log log-sum-exp ``[...]``. A row that is all -inf gives zeros and lse -inf:
    its max is replaced by 0 as the shift, so no -inf - -inf = NaN appears and the exps
    are all exactly 0 (the attention reference uses this too)."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(z, axis=-1, keepdims=True)
        dead = np.isneginf(m)
        m = np.where(dead, 0.0, m)
        e = np.exp(z - m)
        s = np.sum(e, axis=-1, keepdims=True)
        p = np.where(dead, 0.0, e / np.where(dead, 1.0, s))
        lse = np.where(dead, -np.inf, m + np.log(np.where(dead, 1.0, s)))[..., 0]
    return p, lse


def scaled_masked_softmax_fwd(x, mask=None, scale: float = 1.0, causal: bool = False) -> np.ndarray:
    """Forward pass.

    Args:
        x: ``[..., sq, sk]`` array of any real dtype (computed in float64).
        mask: ``None``; a bool array broadcastable to ``x`` (True = masked out); or a
            numeric array broadcastable to ``x``, added to ``scale * x``.
        scale: multiplies ``x`` before the mask is applied.
        causal: also mask ``j > i`` (top-left aligned).

    Returns:
        y: float64 ``[..., sq, sk]``, each row summing to 1, or all 0 where the row is
        fully masked.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dims [..., sq, sk], got shape {x.shape}")
    sq, sk = x.shape[-2:]
    z = scale * x
    keep = np.ones(x.shape, dtype=bool)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            keep &= ~np.broadcast_to(mask, x.shape)
        else:
            z = z + np.broadcast_to(mask.astype(np.float64), x.shape)
    if causal:
        keep &= _causal_keep(sq, sk)
    y, _ = softmax_lse(np.where(keep, z, -np.inf))
    return y


def _row_term(y, dy) -> np.ndarray:
    """y * (dy - sum_k dy[k] * y[k]): the softmax backward before scaling, float64."""
    y = np.asarray(y, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    if y.shape != dy.shape:
        raise ValueError(f"dy has shape {dy.shape}, expected y's shape {y.shape}")
    return y * (dy - np.sum(dy * y, axis=-1, keepdims=True))


def scaled_masked_softmax_bwd(y, dy, scale: float = 1.0) -> np.ndarray:
    """Gradient with respect to ``x``, from the forward output.

    Args:
        y: ``[..., sq, sk]`` forward output (fully masked rows are 0).
        dy: ``[..., sq, sk]`` gradient of the loss with respect to ``y``.
        scale: the forward's scale.

    Returns:
        dx: float64 ``[..., sq, sk]``, ``scale * y * (dy - sum(dy * y, -1))``; 0 on fully
        masked rows and on masked entries, since ``y`` is 0 there.
    """
    return scale * _row_term(y, dy)


def _sum_to_shape(g: np.ndarray, shape) -> np.ndarray:
    """Reduce ``g`` down to ``shape``, undoing NumPy broadcasting of ``shape`` to g.shape."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"mask shape {shape} has more dims than the gradient {g.shape}")
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(d for d, n in enumerate(shape) if n == 1 and g.shape[d] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if g.shape != shape:
        raise ValueError(f"mask shape {shape} does not broadcast to {g.shape}")
    return g


def scaled_masked_softmax_mask_grad(y, dy, mask_shape) -> np.ndarray:
    """Gradient with respect to an additive float mask.

    The mask enters as ``z = scale * x + mask``, so its gradient is the softmax backward
    without the scale, summed over every dim along which the mask was broadcast.

    Args:
        y: ``[..., sq, sk]`` forward output.
        dy: ``[..., sq, sk]`` gradient with respect to ``y``.
        mask_shape: the additive mask's shape (broadcastable to ``y``'s).

    Returns:
        dmask: float64 array of shape ``mask_shape``.
    """
    return _sum_to_shape(_row_term(y, dy), mask_shape)
