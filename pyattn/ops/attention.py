"""attention: softmax(scale * q @ k^T + mask) @ v, fused (``torch.ops.pyattn.attention_fwd``
/ ``_bwd``), the dropout mask it applies (``attention_dropout``) and the CPU inference
kernel that also returns the weights (``attention_with_weights``); kernels in
csrc/attention.cpp. The wrappers ``attention`` and ``scaled_dot_product_attention`` are
re-exported by :mod:`pyattn.functional`; :mod:`pyattn.nn` uses the helpers here."""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import torch

_ops = torch.ops.pyattn


# ----------------------------------------------------------------------- fake


def _lse_dtype(q):
    return torch.float64 if q.dtype == torch.float64 else torch.float32


@torch.library.register_fake("pyattn::attention_fwd")
def _attention_fwd_fake(q, k, v, mask, key_lengths, scale, causal, bottom_right, window_left, window_right,
                        dropout_p=0.0, dropout_seed=None):
    for t, what in ((q, "query"), (k, "key"), (v, "value")):
        torch._check(t.dim() == 4, lambda: f"attention: {what} has {t.dim()} dims, expected 4")
    out = q.new_empty((q.shape[0], q.shape[1], q.shape[2], v.shape[3]))
    lse = q.new_empty((q.shape[0], q.shape[1], q.shape[2]), dtype=_lse_dtype(q))
    return out, lse


@torch.library.register_fake("pyattn::attention_bwd")
def _attention_bwd_fake(dout, q, k, v, out, lse, dlse, mask, key_lengths, scale, causal, bottom_right, window_left,
                        window_right, mask_grad, dropout_p=0.0, dropout_seed=None):
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2]) if mask_grad else (0,)
    return dq, dk, dv, q.new_empty(shape)


@torch.library.register_fake("pyattn::attention_with_weights")
def _attention_with_weights_fake(q, k, v, mask, scale, average_heads):
    for t, what in ((q, "query"), (k, "key"), (v, "value")):
        torch._check(t.dim() == 4, lambda: f"attention_with_weights: {what} has {t.dim()} dims, expected 4")
    out = q.new_empty((q.shape[0], q.shape[1], q.shape[2], v.shape[3]))
    weights_shape = (q.shape[0], q.shape[2], k.shape[2]) if average_heads else (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    return out, q.new_empty(weights_shape)


@torch.library.register_fake("pyattn::attention_dropout")
def _attention_dropout_fake(x, dropout_seed, dropout_p):
    torch._check(x.dim() == 4, lambda: f"attention_dropout: x has {x.dim()} dims, expected 4")
    return torch.empty_like(x, memory_format=torch.contiguous_format)


# ------------------------------------------------------------------- autograd


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


# -------------------------------------------------------------------- wrapper


def _window_pair(window) -> tuple[int, int]:
    if window is None:
        return -1, -1
    if isinstance(window, numbers.Integral) and not isinstance(window, bool):
        left = right = int(window)
    elif isinstance(window, (tuple, list)) and len(window) == 2:
        left, right = (-1 if w is None else w for w in window)
        if not all(isinstance(w, numbers.Integral) and not isinstance(w, bool) for w in (left, right)):
            raise TypeError(f"attention: window must be an int or a (left, right) pair of ints/None, got {window!r}")
    else:
        raise TypeError(f"attention: window must be an int or a (left, right) pair of ints/None, got {window!r}")
    return max(int(left), -1), max(int(right), -1)


def check_tensor(t, what, op="attention"):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {what} must be a torch.Tensor, got {type(t).__name__}")


def check_dropout_p(dropout_p, op: str) -> float:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"{op}: dropout_p must be a real number in [0, 1], got {type(dropout_p).__name__}")
    p = float(dropout_p)
    if not 0.0 <= p <= 1.0:  # NaN fails too
        raise ValueError(f"{op}: dropout_p must be in [0, 1], got {dropout_p!r}")
    return p


def draw_dropout_seed(generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The key of one call's dropout mask: two int64 words drawn from ``generator``
    (torch's default CPU generator when None, so ``torch.manual_seed`` fixes it), as an
    int64 ``[2]`` CPU tensor that backward reuses to regenerate the mask."""
    if generator is None:
        return torch.randint(0, 2**63 - 1, (2,), dtype=torch.int64)
    seed = torch.randint(0, 2**63 - 1, (2,), dtype=torch.int64, generator=generator, device=generator.device)
    return seed.cpu()


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: Optional[torch.Tensor] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
    key_lengths: Optional[torch.Tensor] = None,
    causal: Union[None, bool, str] = None,
    window=None,
    scale: Optional[float] = None,
    return_lse: bool = False,
    dropout_p: float = 0.0,
    generator: Optional[torch.Generator] = None,
):
    """softmax(scale * q @ k^T + mask) @ v, fused: the [lq, lk] scores are never stored
    (forward keeps a running softmax over key blocks; backward recomputes from the lse).

    Args:
        q: ``[..., hq, lq, d]``; k: ``[..., hkv, lk, d]``; v: ``[..., hkv, lk, dv]``, with
            the same leading dims ``...`` (any number, possibly none; 2-d inputs are one
            head). ``hkv`` must divide ``hq`` (grouped-query attention: query head ``h``
            uses key/value head ``h // (hq // hkv)``). float32, float64, float16 or
            bfloat16, any strides. Accumulates in float32 (float64 for float64).
        mask: broadcastable to ``[..., hq, lq, lk]``. ``torch.bool``: True = attend (the
            SDPA convention). Floating: added to the scaled scores (converted to q's
            dtype; it gets a gradient if it requires one).
        key_padding_mask: bool ``[..., lk]`` (the leading dims of q): True = ignore that
            key (the ``nn.MultiheadAttention`` convention).
        key_lengths: integer tensor of the leading dims' shape (``[batch]`` for 4-d
            inputs): keys at positions ``>= key_lengths`` are ignored. Costs nothing: key
            blocks past the length are skipped.
        causal: None/False; True or ``"top_left"`` (key j visible from query i when
            ``j <= i``, torch's ``is_causal``); ``"bottom_right"`` (``j <= i + lk - lq``).
            Blocks above the diagonal are skipped.
        window: sliding window. An int ``w`` means ``(w, w)``; ``(left, right)`` allows keys
            ``i' - left <= j <= i' + right`` with ``i' = i`` (``i + lk - lq`` when causal is
            ``"bottom_right"``); None on a side means unbounded. With causal, right is 0.
        scale: default ``1 / sqrt(d)``.
        return_lse: also return the natural-log log-sum-exp of each query's scores,
            ``[..., hq, lq]``, float32 (float64 for float64 inputs).
        dropout_p: dropout on the attention probabilities, as torch's SDPA: each is zeroed
            with probability ``dropout_p`` and the kept ones are scaled by
            ``1 / (1 - dropout_p)`` (1 gives zeros). The mask is a counter-based hash of a
            key drawn once per call and of (batch, head, query, key) indices, so nothing is
            stored and backward regenerates it (kernels/include/pyattn/dropout_math.h).
            The lse is that of the probabilities before dropout. 0 runs the plain kernel.
        generator: where the dropout key is drawn from (two int64 words per call);
            default torch's default CPU generator, also for CUDA inputs, so
            ``torch.manual_seed`` (and activation checkpointing's RNG restore) reproduces
            the mask.

    Returns:
        out ``[..., hq, lq, dv]`` contiguous in q's dtype (and lse if asked). A query that
        can see no key gets 0 (and lse -inf), and passes zero gradient.

    Envelope: CPU, any sizes. CUDA: head dims ``d, dv <= 256``, batch and heads at most
    65535; fp16 and bf16 on compute capability 8.0+ run the tensor-core kernels
    (kernels/cuda/attention_mma_fwd.cu with head dims up to 256, attention_mma_bwd.cu up to
    128), everything else a CUDA-core kernel (kernels/cuda/attention.cu).
    """
    dropout_p = check_dropout_p(dropout_p, "attention")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"attention: generator must be a torch.Generator or None, got {type(generator).__name__}")
    seed = draw_dropout_seed(generator) if dropout_p > 0.0 else None
    return attention_with_dropout_seed(q, k, v, mask=mask, key_padding_mask=key_padding_mask, key_lengths=key_lengths, causal=causal,
                      window=window, scale=scale, return_lse=return_lse, dropout_p=dropout_p, dropout_seed=seed)


def attention_with_dropout_seed(q, k, v, *, mask, key_padding_mask, key_lengths, causal, window, scale, return_lse, dropout_p,
               dropout_seed):
    """attention() once the dropout key is drawn (dropout_seed: int64 [2] CPU, or None for
    dropout_p = 0); nn.MultiheadAttention reuses its key for the weights it returns."""
    for t, what in ((q, "q"), (k, "k"), (v, "v")):
        check_tensor(t, what)
    if q.dim() < 2:
        raise ValueError(f"attention: q has {q.dim()} dims, expected at least 2 (..., lq, d)")
    if k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(
            f"attention: q, k and v must have the same number of dims, got {q.dim()}, {k.dim()} and {v.dim()}"
        )
    if q.dim() == 2:
        q, k, v = q[None], k[None], v[None]
        if mask is not None and mask.dim() > 2:
            raise ValueError(f"attention: mask of shape {tuple(mask.shape)} has more dims than q")
    lead = tuple(q.shape[:-3])
    if tuple(k.shape[:-3]) != lead or tuple(v.shape[:-3]) != lead:
        raise ValueError(
            f"attention: q, k, v must share their leading dims, got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    hq, lq, d = q.shape[-3:]
    lk = k.shape[-2]
    batch = math.prod(lead)

    if causal is False:
        causal = None
    if causal is True:
        causal = "top_left"
    if causal not in (None, "top_left", "bottom_right"):
        raise ValueError(f"attention: causal must be None, True, 'top_left' or 'bottom_right', got {causal!r}")
    window_left, window_right = _window_pair(window)
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise TypeError(f"attention: scale must be a real number or None, got {type(scale).__name__}")

    if mask is not None:
        check_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            if not mask.is_floating_point():
                raise TypeError(f"attention: mask has dtype {mask.dtype}, expected bool or a floating dtype")
            mask = mask.to(q.dtype)
    if key_padding_mask is not None:
        check_tensor(key_padding_mask, "key_padding_mask")
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"attention: key_padding_mask has dtype {key_padding_mask.dtype}, expected bool")
        if tuple(key_padding_mask.shape) != lead + (lk,):
            raise ValueError(
                f"attention: key_padding_mask has shape {tuple(key_padding_mask.shape)}, expected {lead + (lk,)}"
            )
        keep = (~key_padding_mask).reshape(lead + (1, 1, lk))
        if mask is None:
            mask = keep
        elif mask.dtype == torch.bool:
            mask = mask & keep
        else:
            mask = mask.masked_fill(~keep, float("-inf"))
    if mask is not None:
        if mask.dim() > q.dim():
            raise ValueError(f"attention: mask of shape {tuple(mask.shape)} has more dims than q {tuple(q.shape)}")
        if len(lead) != 1:  # fold the leading dims into one batch dim
            m = mask.reshape((1,) * (q.dim() - mask.dim()) + tuple(mask.shape))
            try:
                m = m.expand(lead + tuple(m.shape[-3:]))
            except RuntimeError:
                raise ValueError(
                    f"attention: mask of shape {tuple(mask.shape)} does not broadcast to {lead + (hq, lq, lk)}"
                ) from None
            mask = m.reshape((batch,) + tuple(m.shape[-3:]))
    if key_lengths is not None:
        check_tensor(key_lengths, "key_lengths")
        if tuple(key_lengths.shape) != lead and not (len(lead) == 0 and key_lengths.numel() == 1):
            raise ValueError(f"attention: key_lengths has shape {tuple(key_lengths.shape)}, expected {lead}")
        key_lengths = key_lengths.reshape(batch)

    q4 = q.reshape(batch, hq, lq, d)
    k4 = k.reshape((batch,) + tuple(k.shape[-3:]))
    v4 = v.reshape((batch,) + tuple(v.shape[-3:]))
    out, lse = _ops.attention_fwd(
        q4, k4, v4, mask, key_lengths, float(scale), causal is not None, causal == "bottom_right",
        window_left, window_right, dropout_p, dropout_seed,
    )
    out = out.reshape(lead + (hq, lq, v.shape[-1]))
    if return_lse:
        return out, lse.reshape(lead + (hq, lq))
    return out


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.scaled_dot_product_attention``, fused.

    Same arguments and semantics: query ``(N..., Hq, L, E)``, key ``(N..., H, S, E)``,
    value ``(N..., H, S, Ev)`` with broadcastable leading dims; ``attn_mask`` broadcastable
    to ``(N..., Hq, L, S)``, bool True = attend or additive float; ``is_causal`` is
    top-left aligned and excludes ``attn_mask``; ``scale`` defaults to ``1/sqrt(E)``;
    ``enable_gqa`` lets ``H`` divide ``Hq``. A query whose keys are all masked gives 0, as
    torch's math backend does.

    ``dropout_p`` drops attention probabilities as torch does (always, there is no
    training flag here; kept ones scaled by ``1 / (1 - dropout_p)``), with a mask drawn
    from torch's default CPU generator: see :func:`attention`. The mask is pyattn's own,
    so it differs from torch's for the same seed.
    """
    for t, what in ((query, "query"), (key, "key"), (value, "value")):
        check_tensor(t, what, "scaled_dot_product_attention")
    dropout_p = check_dropout_p(dropout_p, "scaled_dot_product_attention")
    if is_causal and attn_mask is not None:
        raise RuntimeError("scaled_dot_product_attention: an explicit attn_mask must not be set when is_causal=True")
    if min(query.dim(), key.dim(), value.dim()) < 2:
        raise ValueError("scaled_dot_product_attention: query, key and value need at least 2 dims (..., L, E)")
    nd = max(query.dim(), key.dim(), value.dim(), 3)
    q, k, v = (t.reshape((1,) * (nd - t.dim()) + tuple(t.shape)) for t in (query, key, value))
    if k.shape[-3] != v.shape[-3]:
        raise ValueError(f"scaled_dot_product_attention: key has {k.shape[-3]} heads but value has {v.shape[-3]}")
    try:
        batch = tuple(torch.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3]))
        if enable_gqa:
            hq, hkv = q.shape[-3], k.shape[-3]
            if hq % hkv:
                raise ValueError(
                    f"scaled_dot_product_attention: with enable_gqa, key/value heads {hkv} must divide query heads {hq}"
                )
        else:
            hq = hkv = torch.broadcast_shapes(q.shape[-3:-2], k.shape[-3:-2])[0]
    except RuntimeError:
        raise ValueError(
            f"scaled_dot_product_attention: shapes {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)} "
            "do not broadcast"
        ) from None
    q = q.expand(batch + (hq,) + tuple(q.shape[-2:]))
    k = k.expand(batch + (hkv,) + tuple(k.shape[-2:]))
    v = v.expand(batch + (hkv,) + tuple(v.shape[-2:]))
    if attn_mask is not None:
        check_tensor(attn_mask, "attn_mask", "scaled_dot_product_attention")
    out = attention(q, k, v, mask=attn_mask, causal="top_left" if is_causal else None, scale=scale,
                    dropout_p=dropout_p)
    # torch returns the broadcast leading dims; drop the ones added above for 2-d inputs
    return out.reshape(tuple(out.shape[nd - max(query.dim(), key.dim(), value.dim()):]))
