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


def _update_fake(w_in, w_out, centers, contexts, negatives, table, k, lr, seed, compute_loss=True):
    return torch.empty((), dtype=torch.float64, device=w_in.device)


torch.library.register_fake("pyattn::sgns_update_")(_update_fake)
torch.library.register_fake("pyattn::cbow_update_")(_update_fake)


@torch.library.register_fake("pyattn::sgns_loss_fwd")
def _sgns_loss_fwd_fake(w_in, w_out, centers, contexts, negatives):
    torch._check(centers.dim() == 1, lambda: f"sgns_loss: centers has {centers.dim()} dims, expected 1")
    return w_in.new_empty(centers.shape)


@torch.library.register_fake("pyattn::sgns_loss_bwd")
def _sgns_loss_bwd_fake(dloss, w_in, w_out, centers, contexts, negatives):
    b, k = negatives.shape
    return w_in.new_empty((b, w_in.shape[1])), w_in.new_empty((b, k + 1, w_in.shape[1]))
