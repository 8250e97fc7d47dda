"""Fake (meta) implementations of the ``torch.ops.pyattn.*`` ops, so that shapes and
dtypes propagate under torch.compile and FakeTensor without running a kernel.
Schemas are in csrc/bindings.cpp; real implementations in csrc/<op>.cpp."""

from __future__ import annotations

import torch


@torch.library.register_fake("pyattn::scaled_masked_softmax_fwd")
def _scaled_masked_softmax_fwd_fake(x, mask, scale, causal):
    torch._check(x.dim() >= 2, lambda: f"scaled_masked_softmax: x has {x.dim()} dims, expected at least 2")
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("pyattn::scaled_masked_softmax_bwd")
def _scaled_masked_softmax_bwd_fake(y, dy, scale):
    return torch.empty_like(y, memory_format=torch.contiguous_format)


def _lse_dtype(q):
    return torch.float64 if q.dtype == torch.float64 else torch.float32


@torch.library.register_fake("pyattn::attention_fwd")
def _attention_fwd_fake(q, k, v, mask, key_lengths, scale, causal, bottom_right, window_left, window_right):
    for t, what in ((q, "query"), (k, "key"), (v, "value")):
        torch._check(t.dim() == 4, lambda: f"attention: {what} has {t.dim()} dims, expected 4")
    out = q.new_empty((q.shape[0], q.shape[1], q.shape[2], v.shape[3]))
    lse = q.new_empty((q.shape[0], q.shape[1], q.shape[2]), dtype=_lse_dtype(q))
    return out, lse


@torch.library.register_fake("pyattn::attention_bwd")
def _attention_bwd_fake(dout, q, k, v, out, lse, dlse, mask, key_lengths, scale, causal, bottom_right, window_left,
                        window_right, mask_grad):
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2]) if mask_grad else (0,)
    return dq, dk, dv, q.new_empty(shape)
