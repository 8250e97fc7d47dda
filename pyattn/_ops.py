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
