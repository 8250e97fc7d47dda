"""Fake (meta) implementations of the ``torch.ops.pyattn.*`` ops, so that shapes and
dtypes propagate under torch.compile and FakeTensor without running a kernel.
Schemas are in csrc/bindings.cpp; real implementations in csrc/<op>.cpp."""

from __future__ import annotations

import torch


@torch.library.register_fake("pyattn::scaled_masked_softmax_fwd")
def _scaled_masked_softmax_fwd_fake(x, mask, scale, causal):
    torch._check(x.dim() >= 2, lambda: f"scaled_masked_softmax: x has {x.dim()} dims, expected at least 2")
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("pyattn::scaled_masked_softmax_fwd_out")
def _scaled_masked_softmax_fwd_out_fake(x, mask, scale, causal, out):
    torch._check(x.dim() >= 2, lambda: f"scaled_masked_softmax: x has {x.dim()} dims, expected at least 2")
    torch._check(out.shape == x.shape, lambda: f"scaled_masked_softmax: out has shape {tuple(out.shape)}, "
                                               f"expected x's shape {tuple(x.shape)}")


@torch.library.register_fake("pyattn::scaled_masked_softmax_bwd")
def _scaled_masked_softmax_bwd_fake(y, dy, scale):
    return torch.empty_like(y, memory_format=torch.contiguous_format)


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
# ---------------------------------------------------------------------------- lstm
# Shapes only; the checks are in csrc/lstm.cpp. H = w_ih.size(0) // 4, P = w_hh.size(1).


def _new(like, *shape):
    return like.new_empty(shape)


@torch.library.register_fake("pyattn::lstm_cell_fwd")
def _lstm_cell_fwd_fake(x, h, c, w_ih, w_hh, b_ih, b_hh, w_packed=None):
    n, hsz = x.shape[0], w_ih.shape[0] // 4
    return _new(x, n, hsz), _new(x, n, hsz), _new(x, n, 4 * hsz)


@torch.library.register_fake("pyattn::lstm_cell_pack")
def _lstm_cell_pack_fake(w_ih, w_hh):
    # kernels/cpu/packed_gemm.h: ceil(H / 32) blocks x 4 gates x K rows x 32 columns
    hsz, k = w_ih.shape[0] // 4, w_ih.shape[1] + w_hh.shape[1]
    return _new(w_ih, (hsz + 31) // 32 * 4 * k * 32)


@torch.library.register_fake("pyattn::lstm_cell_bwd")
def _lstm_cell_bwd_fake(dh, dc, x, h, c, w_ih, w_hh, act, c_new, has_bias):
    n, hsz = x.shape[0], w_ih.shape[0] // 4
    return (
        _new(x, *x.shape),
        _new(x, n, w_hh.shape[1]),
        _new(x, n, hsz),
        _new(x, *w_ih.shape),
        _new(x, *w_hh.shape),
        _new(x, 4 * hsz) if has_bias else _new(x, 0),
    )


@torch.library.register_fake("pyattn::lstm_seq_fwd")
def _lstm_seq_fwd_fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, need_backward=True):
    hsz, psz, n = w_ih.shape[0] // 4, w_hh.shape[1], h0.shape[0]
    rows = x.shape[0] if batch_sizes is not None else x.shape[0] * x.shape[1]
    saved = need_backward  # act, c_all, h_pre: empty without backward
    return (
        _new(x, *x.shape[:-1], psz),
        _new(x, n, psz),
        _new(x, n, hsz),
        _new(x, rows, 4 * hsz) if saved else _new(x, 0),
        _new(x, rows, hsz) if saved else _new(x, 0),
        _new(x, rows, hsz) if saved and w_hr is not None else _new(x, 0),
    )


@torch.library.register_fake("pyattn::lstm_seq_bwd")
def _lstm_seq_bwd_fake(dy, dh_n, dc_n, x, h0, c0, w_ih, w_hh, w_hr, y, act, c_all, h_pre, batch_sizes, reverse, has_bias):
    hsz = w_ih.shape[0] // 4
    return (
        _new(x, *x.shape),
        _new(x, *h0.shape),
        _new(x, *c0.shape),
        _new(x, *w_ih.shape),
        _new(x, *w_hh.shape),
        _new(x, 4 * hsz) if has_bias else _new(x, 0),
        _new(x, *w_hr.shape) if w_hr is not None else _new(x, 0),
    )
def _update_fake(w_in, w_out, centers, contexts, negatives, table, k, lr, seed, compute_loss=True):
    return torch.empty((), dtype=torch.float64, device=w_in.device)


@torch.library.register_fake("pyattn::packed_gemm")
def _packed_gemm_fake(a, b, c):
    return a.new_empty((a.shape[0], b.shape[0]))


torch.library.register_fake("pyattn::sgns_update_")(_update_fake)
torch.library.register_fake("pyattn::cbow_update_")(_update_fake)


@torch.library.register_fake("pyattn::sgns_loss_fwd")
def _sgns_loss_fwd_fake(w_in, w_out, centers, contexts, negatives):
    torch._check(centers.dim() == 1, lambda: f"sgns_loss: centers has {centers.dim()} dims, expected 1")
    return w_in.new_empty(centers.shape)


@torch.library.register_fake("pyattn::sgns_loss_fwd_grad")
def _sgns_loss_fwd_grad_fake(w_in, w_out, centers, contexts, negatives, grad_scale):
    return (
        _sgns_loss_fwd_fake(w_in, w_out, centers, contexts, negatives),
        *_sgns_loss_bwd_fake(None, w_in, w_out, centers, contexts, negatives),
    )


@torch.library.register_fake("pyattn::sgns_loss_bwd")
def _sgns_loss_bwd_fake(dloss, w_in, w_out, centers, contexts, negatives):
    b, k = negatives.shape
    return w_in.new_empty((b, w_in.shape[1])), w_in.new_empty((b, k + 1, w_in.shape[1]))
