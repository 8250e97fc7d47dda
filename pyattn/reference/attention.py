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

Dropout on the probabilities (``dropout_p > 0``, with a ``dropout_seed`` of two int64
words): ``out = (P * M) @ v`` with ``M = keep / (1 - p)`` (0 everywhere for ``p = 1``) and
``keep`` the counter-based mask of :func:`attention_dropout_mask`, a function of the seed
and of (b, h, i, j) only (b indexes the flattened leading dims). ``lse`` is that of the
un-dropped ``P``. This module computes the mask on its own, in vectorised NumPy, from the
definition in kernels/include/pyattn/dropout_math.h.
"""

from __future__ import annotations

import numpy as np

from .counter_rng import mix64
from .scaled_masked_softmax import _sum_to_shape, softmax_lse

__all__ = ["attention_keep", "attention_dropout_mask", "attention_fwd", "attention_bwd"]


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


_U64 = np.uint64
_U32 = np.uint32


def _drop_bits(lo, hi, j):
    """The keyed 32-bit permutation of key index j (uint32 arrays, broadcasting)."""
    x = j ^ lo
    x = x ^ (x >> _U32(16))
    x = x * _U32(0x21F0AAAD)
    x = x ^ (x >> _U32(15))
    x = x ^ hi
    x = x * _U32(0x735A2D97)
    return x ^ (x >> _U32(15))


def attention_dropout_mask(seed, dropout_p, lead, hq, lq, lk) -> np.ndarray:
    """float64 ``[*lead, hq, lq, lk]``: ``1 / (1 - p)`` where the probability is kept, else 0
    (all 0 for ``p = 1``).

    ``seed``: the two int64 words of the call's key. Element ``(b, h, i, j)`` (``b`` the
    flat index over ``lead``) is kept iff ``bits(row_key(b, h, i), j) >= floor(p * 2^32)``
    (at most ``2^32 - 1``), where ``row_key`` chains splitmix64's finaliser over
    ``(seed[0] ^ golden, seed[1], b, h, i)`` and ``bits`` is a keyed 32-bit permutation of
    ``j mod 2^32``.
    """
    p = float(dropout_p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout_p must be in [0, 1], got {dropout_p!r}")
    key = np.asarray(seed, dtype=np.int64).reshape(2).view(_U64)
    n = int(np.prod(lead)) if lead else 1
    with np.errstate(over="ignore"):
        x = mix64(np.full((1, 1), key[0] ^ _U64(0x9E3779B97F4A7C15), dtype=_U64))
        x = mix64(x ^ key[1])
        x = mix64(x ^ np.arange(n, dtype=_U64)[:, None])
        head = mix64(x ^ np.arange(hq, dtype=_U64)[None, :])  # [n, hq]
        row = mix64(head[:, :, None] ^ np.arange(lq, dtype=_U64)[None, None, :])  # [n, hq, lq]
        lo = (row & _U64(0xFFFFFFFF)).astype(_U32)[..., None]
        hi = (row >> _U64(32)).astype(_U32)[..., None]
        j = (np.arange(lk, dtype=np.int64) & 0xFFFFFFFF).astype(_U32)
        bits = _drop_bits(lo, hi, j)  # [n, hq, lq, lk]
    t = p * 2.0**32
    threshold = 0xFFFFFFFF if t >= 2.0**32 - 1 else int(t)
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    mult = np.where(bits >= _U32(threshold), scale, 0.0)
    return mult.reshape(tuple(lead) + (hq, lq, lk))


def _dropout_mult(q, lk, dropout_p, dropout_seed):
    """The multiplier array for q's shape, or None without dropout."""
    if not dropout_p:
        return None
    if dropout_seed is None:
        raise ValueError("dropout_p > 0 needs dropout_seed")
    return attention_dropout_mask(dropout_seed, dropout_p, q.shape[:-3], q.shape[-3], q.shape[-2], lk)


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


def attention_fwd(q, k, v, mask=None, scale=None, causal=None, window=None, key_lengths=None, dropout_p=0.0,
                  dropout_seed=None):
    """Forward pass.

    Args:
        q: ``[..., hq, lq, d]``; k: ``[..., hkv, lk, d]``; v: ``[..., hkv, lk, dv]``.
        mask: ``None``, bool (True = attend) or additive, broadcastable to
            ``[..., hq, lq, lk]``.
        scale: multiplies ``q @ k^T``; default ``1 / sqrt(d)``.
        causal, window, key_lengths: see the module docstring.
        dropout_p, dropout_seed: dropout on the probabilities (module docstring).

    Returns:
        (out ``[..., hq, lq, dv]``, lse ``[..., hq, lq]``), float64.
    """
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    z = _scores(q, k, mask, scale, causal, window, key_lengths)
    p, lse = softmax_lse(z)
    mult = _dropout_mult(q, k.shape[-2], dropout_p, dropout_seed)
    out = (p if mult is None else p * mult) @ _expand_kv(v, q.shape[-3])
    return out, lse


def attention_weights(q, k, v, mask=None, scale=None, average_heads=True):
    """Attention with its weights (the attention_with_weights op, inference only).

    Returns:
        (out ``[..., hq, lq, dv]``, weights): the probabilities ``[..., hq, lq, lk]``, or
        their mean over the query heads ``[..., lq, lk]`` when ``average_heads``; float64.
    """
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    p, _ = softmax_lse(_scores(q, k, mask, scale, None, None, None))
    out = p @ _expand_kv(v, q.shape[-3])
    return out, (p.mean(axis=-3) if average_heads else p)


def _sum_heads(g, hkv):
    """[..., hq, l, x] -> [..., hkv, l, x], summing each group of query heads."""
    hq = g.shape[-3]
    return g.reshape(g.shape[:-3] + (hkv, hq // hkv) + g.shape[-2:]).sum(axis=-3)


def attention_bwd(dout, q, k, v, mask=None, scale=None, causal=None, window=None, key_lengths=None,
                  mask_shape=None, dropout_p=0.0, dropout_seed=None):
    """Gradients of ``sum(dout * out)``.

    Args:
        dout: ``[..., hq, lq, dv]``; the rest as :func:`attention_fwd`.
        mask_shape: for an additive mask, the shape its gradient is summed down to
            (default: the mask's own shape).
        dropout_p, dropout_seed: as the forward's.

    Returns:
        (dq, dk, dv, dmask): float64, shaped like q, k, v and the mask; ``dmask`` is
        None unless the mask is additive. With ``P = softmax(z)``, ``dP = dout @ v^T``
        and ``dz = P * (dP - rowsum(dout * out))``: ``dq = scale * dz @ k``,
        ``dk = scale * dz^T @ q``, ``dv = P^T @ dout``, ``dmask = dz`` summed over the
        mask's broadcast dims. With dropout (multipliers ``M``): ``out = (P * M) @ v``, the
        gradient reaching ``P`` is ``dP * M``, so ``dz = P * (dP * M - rowsum(dout * out))``
        and ``dv = (P * M)^T @ dout``.
    """
    q, k, v, dout = (np.asarray(t, dtype=np.float64) for t in (q, k, v, dout))
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    hq, hkv = q.shape[-3], k.shape[-3]
    z = _scores(q, k, mask, scale, causal, window, key_lengths)
    p, _ = softmax_lse(z)
    ve, ke = _expand_kv(v, hq), _expand_kv(k, hq)
    mult = _dropout_mult(q, k.shape[-2], dropout_p, dropout_seed)
    pd = p if mult is None else p * mult  # the probabilities the output used
    out = pd @ ve
    dp = dout @ np.swapaxes(ve, -1, -2)
    if mult is not None:
        dp = dp * mult
    dz = p * (dp - np.sum(dout * out, axis=-1, keepdims=True))
    dq = scale * dz @ ke
    dk = _sum_heads(scale * np.swapaxes(dz, -1, -2) @ q, hkv)
    dv = _sum_heads(np.swapaxes(pd, -1, -2) @ dout, hkv)
    dmask = None
    if mask is not None and np.asarray(mask).dtype != np.bool_:
        dmask = _sum_to_shape(dz, np.asarray(mask).shape if mask_shape is None else mask_shape)
    return dq, dk, dv, dmask
