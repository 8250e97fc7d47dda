"""Functional forms of pyattn's kernels; each accepts what its torch counterpart does."""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import torch

from pyattn._autograd_lstm import LstmCell, LstmSeq

__all__ = ["scaled_masked_softmax", "attention", "scaled_dot_product_attention", "lstm_cell", "lstm", "sgns_loss"]


def _needs_grad(*tensors) -> bool:
    """Whether autograd would record a call on these tensors (None entries ignored)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
            and, on the CPU, the OS zeroing freshly mapped pages on first touch (on a
            2-core VM the forward took twice as long into a fresh 100 MB output). No
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
    if _needs_grad(x, mask, out):
        raise RuntimeError("scaled_masked_softmax: out= does not support autograd (x, mask or out requires grad); "
                           "call it under torch.no_grad() or without out=")
    torch.ops.pyattn.scaled_masked_softmax_fwd_out(x, mask, float(scale), bool(causal), out)
    return out


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


def _check_tensor(t, what, op="attention"):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {what} must be a torch.Tensor, got {type(t).__name__}")


def _check_dropout_p(dropout_p, op: str) -> float:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"{op}: dropout_p must be a real number in [0, 1], got {type(dropout_p).__name__}")
    p = float(dropout_p)
    if not 0.0 <= p <= 1.0:  # NaN fails too
        raise ValueError(f"{op}: dropout_p must be in [0, 1], got {dropout_p!r}")
    return p


def _draw_dropout_seed(generator: Optional[torch.Generator] = None) -> torch.Tensor:
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

    Envelope: CPU, any sizes. CUDA (a plain version-1 kernel, not yet run on a GPU by its
    author): head dims ``d, dv <= 256``, batch and heads at most 65535.
    """
    dropout_p = _check_dropout_p(dropout_p, "attention")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"attention: generator must be a torch.Generator or None, got {type(generator).__name__}")
    seed = _draw_dropout_seed(generator) if dropout_p > 0.0 else None
    return _attention(q, k, v, mask=mask, key_padding_mask=key_padding_mask, key_lengths=key_lengths, causal=causal,
                      window=window, scale=scale, return_lse=return_lse, dropout_p=dropout_p, dropout_seed=seed)


def _attention(q, k, v, *, mask, key_padding_mask, key_lengths, causal, window, scale, return_lse, dropout_p,
               dropout_seed):
    """attention() once the dropout key is drawn (dropout_seed: int64 [2] CPU, or None for
    dropout_p = 0); nn.MultiheadAttention reuses its key for the weights it returns."""
    for t, what in ((q, "q"), (k, "k"), (v, "v")):
        _check_tensor(t, what)
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
        _check_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            if not mask.is_floating_point():
                raise TypeError(f"attention: mask has dtype {mask.dtype}, expected bool or a floating dtype")
            mask = mask.to(q.dtype)
    if key_padding_mask is not None:
        _check_tensor(key_padding_mask, "key_padding_mask")
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
        _check_tensor(key_lengths, "key_lengths")
        if tuple(key_lengths.shape) != lead and not (len(lead) == 0 and key_lengths.numel() == 1):
            raise ValueError(f"attention: key_lengths has shape {tuple(key_lengths.shape)}, expected {lead}")
        key_lengths = key_lengths.reshape(batch)

    q4 = q.reshape(batch, hq, lq, d)
    k4 = k.reshape((batch,) + tuple(k.shape[-3:]))
    v4 = v.reshape((batch,) + tuple(v.shape[-3:]))
    out, lse = torch.ops.pyattn.attention_fwd(
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
        _check_tensor(t, what, "scaled_dot_product_attention")
    dropout_p = _check_dropout_p(dropout_p, "scaled_dot_product_attention")
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
        _check_tensor(attn_mask, "attn_mask", "scaled_dot_product_attention")
    out = attention(q, k, v, mask=attn_mask, causal="top_left" if is_causal else None, scale=scale,
                    dropout_p=dropout_p)
    # torch returns the broadcast leading dims; drop the ones added above for 2-d inputs
    return out.reshape(tuple(out.shape[nd - max(query.dim(), key.dim(), value.dim()):]))


def lstm_cell(
    input: torch.Tensor,
    hx: Optional[tuple[torch.Tensor, torch.Tensor]],
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor] = None,
    b_hh: Optional[torch.Tensor] = None,
    w_packed: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step, as ``nn.LSTMCell``: returns (h', c').

    gates = input @ w_ihᵀ + h @ w_hhᵀ + b_ih + b_hh in torch's order (i, f, g, o);
    c' = f*c + i*g; h' = o*tanh(c'). In fp32 on the CPU the gates are one product with
    [w_ih | w_hh] packed for pyattn's GEMM, fused with everything elementwise (biases,
    activations, state update); elsewhere the two GEMMs go through ATen and the
    elementwise part is one fused kernel. The backward is a fused kernel and ATen GEMMs.

    Args:
        input: ``[N, C]`` or unbatched ``[C]``; float32, float64 or bfloat16 (CPU).
        hx: ``(h, c)``, each ``[N, H]`` (``[H]`` unbatched), or None for zeros.
        w_ih: ``[4H, C]``; w_hh: ``[4H, H]``; b_ih, b_hh: ``[4H]`` or None.
        w_packed: fp32 CPU only: ``torch.ops.pyattn.lstm_cell_pack(w_ih, w_hh)``, made
            once for a loop of steps with unchanged weights (``pyattn.nn.LSTMCell`` keeps
            one); None packs on every call. It must match w_ih and w_hh, which still
            receive the gradients.
    """
    dim = input.dim()
    if dim == 2 and hx is not None:  # the loop's usual case first, with the least Python
        h_new, c_new = LstmCell.apply(input, hx[0], hx[1], w_ih, w_hh, b_ih, b_hh, w_packed)
        return h_new, c_new
    if dim not in (1, 2):
        raise ValueError(f"lstm_cell: input has {dim} dims, expected 1 (input_size) or 2 (batch, input_size)")
    x = input if dim == 2 else input.unsqueeze(0)
    if hx is None:
        hsz = w_ih.shape[0] // 4
        h, c = x.new_zeros(x.shape[0], hsz), x.new_zeros(x.shape[0], hsz)  # distinct: dynamo wants them so
    else:
        h, c = hx
        for name, t in (("hx[0] (h)", h), ("hx[1] (c)", c)):
            if t.dim() != 1:
                raise ValueError(f"lstm_cell: {name} has {t.dim()} dims, expected 1 like input (shape {tuple(input.shape)})")
        h, c = h.unsqueeze(0), c.unsqueeze(0)
    h_new, c_new = LstmCell.apply(x, h, c, w_ih, w_hh, b_ih, b_hh, w_packed)
    return (h_new, c_new) if dim == 2 else (h_new.squeeze(0), c_new.squeeze(0))


LstmWeights = Sequence[tuple]  # per (layer, direction): (w_ih, w_hh, b_ih, b_hh, w_hr), None where absent


def lstm(
    input: torch.Tensor,
    hx: Optional[tuple[torch.Tensor, torch.Tensor]],
    weights: LstmWeights,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    batch_sizes: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A stacked (optionally bidirectional, optionally projected) LSTM over a sequence.

    Each layer and direction runs every time step in one C++ call (no Python loop over
    time): the input GEMM of all steps at once (ATen), then per step the recurrent GEMM
    and the fused pointwise kernel (fp32 CPU without projection: pyattn's GEMM on W_hh
    packed once, fused with the pointwise part; else ATen); backward through time
    likewise, with the weight gradients as GEMMs over all steps.

    Args:
        input: time-major ``[T, N, C]``; or packed ``[sum(batch_sizes), C]`` with
            ``batch_sizes`` (``PackedSequence.data`` / ``.batch_sizes``, sorted).
        hx: ``(h_0 [L*D, N, P], c_0 [L*D, N, H])`` or None for zeros (P = proj_size or H).
        weights: ``weights[layer * D + direction] = (w_ih, w_hh, b_ih, b_hh, w_hr)`` with
            None for a missing bias or projection; direction 1 runs backwards in time.
        dropout: applied (when ``training``) to the output of every layer but the last.

    Returns:
        ``(output, (h_n, c_n))``: output ``[T, N, D*P]`` (packed: ``[sum, D*P]``), h_n
        ``[L*D, N, P]``, c_n ``[L*D, N, H]``.
    """
    ndir = 2 if bidirectional else 1
    if len(weights) != num_layers * ndir:
        raise ValueError(f"lstm: got {len(weights)} weight tuples, expected num_layers * directions = {num_layers * ndir}")
    packed = batch_sizes is not None
    want_dim = 2 if packed else 3
    if input.dim() != want_dim:
        raise ValueError(
            f"lstm: input has {input.dim()} dims, expected {want_dim} "
            + ("(sum(batch_sizes), input_size)" if packed else "(seq_len, batch, input_size)")
        )
    n = int(batch_sizes[0]) if packed and batch_sizes.numel() else (0 if packed else input.shape[1])
    w_ih0, w_hh0 = weights[0][0], weights[0][1]
    hsz, psz = w_ih0.shape[0] // 4, w_hh0.shape[1]
    if hx is None:
        h0 = input.new_zeros(num_layers * ndir, n, psz)
        c0 = input.new_zeros(num_layers * ndir, n, hsz)
    else:
        h0, c0 = hx
    hs, cs, x = [], [], input
    for layer in range(num_layers):
        outs = []
        for d in range(ndir):
            k = layer * ndir + d
            w_ih, w_hh, b_ih, b_hh, w_hr = weights[k]
            args = (x, h0[k], c0[k], w_ih, w_hh, b_ih, b_hh, w_hr)
            y, h_n, c_n = LstmSeq.apply(*args, batch_sizes, d == 1, _needs_grad(*args))
            outs.append(y)
            hs.append(h_n)
            cs.append(c_n)
        x = outs[0] if ndir == 1 else torch.cat(outs, dim=-1)
        if dropout > 0 and training and layer + 1 < num_layers:
            x = torch.nn.functional.dropout(x, dropout, training=True)
    return x, (torch.stack(hs), torch.stack(cs))
def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class _SgnsLossSparse(torch.autograd.Function):
    """sgns_loss with sparse COO gradients for the tables (nn.Embedding(sparse=True) style):
    only the rows a batch touches are stored, so optimizers such as SparseAdam or SGD
    update B*(k+2) rows instead of whole tables.

    Reading the random table rows is most of a training step's time, so when gradients
    are needed the forward computes them in the same pass as the loss
    (sgns_loss_fwd_grad), for the upstream gradient that loss.backward() sends: 1 on the
    reduced loss, i.e. 1/B per example for 'mean'. backward then only wraps them as
    sparse tensors, or rescales them for any other upstream gradient. The reduction is
    done here so that backward receives that one scalar."""

    @staticmethod
    def forward(ctx, w_in, w_out, centers, contexts, negatives, reduction):
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return _reduce(torch.ops.pyattn.sgns_loss_fwd(w_in, w_out, centers, contexts, negatives), reduction)
        scale = 1.0 / max(centers.shape[0], 1) if reduction == "mean" else 1.0
        loss, d_h, d_u = torch.ops.pyattn.sgns_loss_fwd_grad(w_in, w_out, centers, contexts, negatives, scale)
        ctx.save_for_backward(centers, contexts, negatives)
        ctx.grads = (d_h, d_u)  # row gradients of scale * loss.sum(): [B, dim], [B, 1 + k, dim]
        ctx.reduction = reduction
        ctx.handed_out = False
        ctx.shapes = (w_in.shape, w_out.shape)
        return _reduce(loss, reduction)

    @staticmethod
    def backward(ctx, dloss):
        centers, contexts, negatives = ctx.saved_tensors
        d_h, d_u = ctx.grads
        if ctx.reduction == "none":
            f = dloss.to(d_h.dtype)  # [B]; the forward assumed 1 for every example
            d_h, d_u = d_h * f[:, None], d_u * f[:, None, None]
        else:
            f = float(dloss)
            # A second backward (retain_graph) gets fresh tensors: the first one's may be a
            # .grad by now, which optimizers and clipping may change in place.
            if f != 1.0 or ctx.handed_out:
                d_h, d_u = d_h * f, d_u * f
        ctx.handed_out = True
        d_in = d_out = None
        w_in_shape, w_out_shape = ctx.shapes
        if ctx.needs_input_grad[0]:
            d_in = torch.sparse_coo_tensor(centers.long().unsqueeze(0), d_h, w_in_shape, check_invariants=False)
        if ctx.needs_input_grad[1]:
            rows = torch.cat([contexts.long().unsqueeze(1), negatives.long()], dim=1).reshape(1, -1)
            d_out = torch.sparse_coo_tensor(rows, d_u.reshape(-1, d_u.shape[-1]), w_out_shape, check_invariants=False)
        return d_in, d_out, None, None, None, None


def _table(t, what: str) -> tuple[torch.Tensor, bool]:
    if isinstance(t, torch.nn.Embedding):
        return t.weight, bool(t.sparse)
    if isinstance(t, torch.Tensor):
        return t, False
    raise TypeError(f"sgns_loss: {what} must be a torch.Tensor [vocab, dim] or an nn.Embedding, got {type(t).__name__}")


def sgns_loss(
    input_vectors: Union[torch.Tensor, torch.nn.Embedding],
    output_vectors: Union[torch.Tensor, torch.nn.Embedding],
    centers: torch.Tensor,
    contexts: torch.Tensor,
    negatives: torch.Tensor,
    reduction: str = "mean",
    sparse: Optional[bool] = None,
) -> torch.Tensor:
    """Skip-gram negative-sampling loss, fused (no gathered [B, k, dim] copies):

        loss[b] = -log sigmoid(u[contexts[b]] . v[centers[b]])
                  - sum_k log sigmoid(-u[negatives[b, k]] . v[centers[b]])

    with v = input_vectors and u = output_vectors, [vocab, dim] fp32/fp64 tables (or
    ``nn.Embedding`` modules, whose ``sparse`` flag is then honoured). centers and
    contexts are [B] token ids, negatives [B, k]. ``reduction``: 'mean' (over B), 'sum'
    or 'none' ([B]). Gradients flow to both tables: dense by default, sparse COO when
    ``sparse=True`` (or an nn.Embedding(sparse=True) is passed). On the sparse path a
    forward that needs gradients computes them already (one pass over the rows) and keeps
    them, B * (k + 2) * dim values, until backward. CPU only so far.
    """
    w_in, sparse_in = _table(input_vectors, "input_vectors")
    w_out, sparse_out = _table(output_vectors, "output_vectors")
    if sparse is None:
        sparse = sparse_in or sparse_out
    for name, t in (("centers", centers), ("contexts", contexts), ("negatives", negatives)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"sgns_loss: {name} must be a torch.Tensor of token ids, got {type(t).__name__}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"sgns_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if sparse:
        return _SgnsLossSparse.apply(w_in, w_out, centers, contexts, negatives, reduction)
    return _reduce(torch.ops.pyattn.sgns_loss_fwd(w_in, w_out, centers, contexts, negatives), reduction)
