"""Reference for fused attention, in NumPy float64.

    out = softmax(scale * q @ k^T + mask) @ v        (softmax over keys)

Shapes: ``q`` is ``[..., hq, lq, d]``, ``k`` is ``[..., hkv, lk, d]``, ``v`` is
``[..., hkv, lk, dv]``, with the same leading dims; ``hkv`` divides ``hq`` and query
head ``h`` reads key/value head ``h // (hq // hkv)`` (grouped-query attention). ``i``
indexes queries, ``j`` keys.

Masks, all combinable (a key is attended only if every one of them allows it):

* ``mask``: broadcastable to ``[..., hq, lq, lk]``. ``bool``: True = attend (the
  ``F.scaled_dot_product_attention`` convention). Any other dtype: added to the scaled
  scores (may hold -inf).
* ``causal``: ``None``, ``"top_left"`` (key ``j`` allowed when ``j <= i``, torch's
  ``is_causal``) or ``"bottom_right"`` (``j <= i + lk - lq``: the last query sees every
  key, as in decoding with a cache).
* ``window``: ``(left, right)``; key ``j`` allowed when ``i' - left <= j <= i' + right``
  where ``i' = i`` (or ``i + lk - lq`` when ``causal == "bottom_right"``); ``None`` or a
  negative side means unbounded on that side.
* ``key_lengths``: ``[batch]`` ints over the flattened leading dims (all but the head
  dim); key ``j >= key_lengths[b]`` is not attended.

Decisions pinned here (the kernels must agree):

* A query row with no key left (every score -inf) gives output 0, lse -inf, and passes
  zero gradient to q, k, v and the mask (``torch`` >= 2.5's math SDPA agrees).
* The log-sum-exp is natural-log: ``lse[i] = log sum_j exp(z[i, j])`` over the masked
  scaled scores ``z``; ``out = exp(z - lse) @ v``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["attention_keep", "attention_fwd", "attention_bwd"]


def _window_bounds(window):
    if window is None:
        return -1, -1
    left, right = window
    left = -1 if left is None or left < 0 else int(left)
    right = -1 if right is None or right < 0 else int(right)
    return left, right


def attention_keep(lead, hq, lq, lk, causal=None, window=None, key_lengths=None) -> np.ndarray:
    """bool ``[*lead, hq, lq, lk]``: True where the structural masks (causal, window, key
    lengths) allow query ``i`` to see key ``j``."""
    if causal not in (None, "top_left", "bottom_right"):
        raise ValueError(f"causal must be None, 'top_left' or 'bottom_right', got {causal!r}")
    off = lk - lq if causal == "bottom_right" else 0
    i = np.arange(lq)[:, None] + off
    j = np.arange(lk)[None, :]
    keep = np.ones((lq, lk), dtype=bool)
    left, right = _window_bounds(window)
    if causal is not None:
        right = 0 if right < 0 else min(right, 0)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    keep = np.broadcast_to(keep, tuple(lead) + (hq, lq, lk))
    if key_lengths is not None:
        n = int(np.prod(lead)) if lead else 1
        lengths = np.asarray(key_lengths).reshape(n)
        kl = (np.arange(lk)[None, :] < lengths[:, None]).reshape(tuple(lead) + (1, 1, lk))
        keep = keep & kl
    return np.array(keep)


def _expand_kv(x, hq):
    hkv = x.shape[-3]
    if hq % hkv:
        raise ValueError(f"key/value heads {hkv} do not divide query heads {hq}")
    return np.repeat(x, hq // hkv, axis=-3)


def _scores(q, k, mask, scale, causal, window, key_lengths):
    """z [..., hq, lq, lk] float64 with -inf where masked."""
    lead, hq, lq = q.shape[:-3], q.shape[-3], q.shape[-2]
    lk = k.shape[-2]
    z = scale * np.einsum("...id,...jd->...ij", q, _expand_kv(k, hq))
    keep = attention_keep(lead, hq, lq, lk, causal, window, key_lengths)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            keep = keep & np.broadcast_to(mask, z.shape)
        else:
            z = z + np.broadcast_to(mask.astype(np.float64), z.shape)
    return np.where(keep, z, -np.inf)


def _softmax_lse(z):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(z, axis=-1, keepdims=True)
        dead = np.isneginf(m)
        m = np.where(dead, 0.0, m)
        e = np.exp(z - m)
        s = np.sum(e, axis=-1, keepdims=True)
        p = np.where(dead, 0.0, e / np.where(dead, 1.0, s))
        lse = np.where(dead, -np.inf, m + np.log(np.where(dead, 1.0, s)))[..., 0]
    return p, lse


def attention_fwd(q, k, v, mask=None, scale=None, causal=None, window=None, key_lengths=None):
    """Forward pass.

    Args:
        q: ``[..., hq, lq, d]``; k: ``[..., hkv, lk, d]``; v: ``[..., hkv, lk, dv]``.
        mask: ``None``, bool (True = attend) or additive, broadcastable to
            ``[..., hq, lq, lk]``.
        scale: multiplies ``q @ k^T``; default ``1 / sqrt(d)``.
        causal, window, key_lengths: see the module docstring.

    Returns:
        (out ``[..., hq, lq, dv]``, lse ``[..., hq, lq]``), float64.
    """
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    z = _scores(q, k, mask, scale, causal, window, key_lengths)
    p, lse = _softmax_lse(z)
    out = p @ _expand_kv(v, q.shape[-3])
    return out, lse


def _sum_heads(g, hkv):
    """[..., hq, l, x] -> [..., hkv, l, x], summing each group of query heads."""
    hq = g.shape[-3]
    return g.reshape(g.shape[:-3] + (hkv, hq // hkv) + g.shape[-2:]).sum(axis=-3)


def attention_bwd(dout, q, k, v, mask=None, scale=None, causal=None, window=None, key_lengths=None,
                  mask_shape=None):
    """Gradients of ``sum(dout * out)``.

    Args:
        dout: ``[..., hq, lq, dv]``; the rest as :func:`attention_fwd`.
        mask_shape: for an additive mask, the shape its gradient is summed down to
            (default: the mask's own shape).

    Returns:
        (dq, dk, dv, dmask): float64, shaped like q, k, v and the mask; ``dmask`` is
        None unless the mask is additive. With ``P = softmax(z)``, ``dP = dout @ v^T``
        and ``dz = P * (dP - rowsum(dout * out))``: ``dq = scale * dz @ k``,
        ``dk = scale * dz^T @ q``, ``dv = P^T @ dout``, ``dmask = dz`` summed over the
        mask's broadcast dims.
    """
    q, k, v, dout = (np.asarray(t, dtype=np.float64) for t in (q, k, v, dout))
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    hq, hkv = q.shape[-3], k.shape[-3]
    z = _scores(q, k, mask, scale, causal, window, key_lengths)
    p, _ = _softmax_lse(z)
    ve, ke = _expand_kv(v, hq), _expand_kv(k, hq)
    out = p @ ve
    dp = dout @ np.swapaxes(ve, -1, -2)
    dz = p * (dp - np.sum(dout * out, axis=-1, keepdims=True))
    dq = scale * dz @ ke
    dk = _sum_heads(scale * np.swapaxes(dz, -1, -2) @ q, hkv)
    dv = _sum_heads(np.swapaxes(p, -1, -2) @ dout, hkv)
    dmask = None
    if mask is not None and np.asarray(mask).dtype != np.bool_:
        from .scaled_masked_softmax import _sum_to_shape

        dmask = _sum_to_shape(dz, np.asarray(mask).shape if mask_shape is None else mask_shape)
    return dq, dk, dv, dmask
