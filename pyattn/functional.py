"""Functional forms of pyattn's kernels; each accepts what its torch counterpart does."""

from __future__ import annotations

import numbers
from typing import Optional, Union

import torch


__all__ = ["scaled_masked_softmax", "sgns_loss"]


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


class _SgnsLossSparse(torch.autograd.Function):
    """sgns_loss with sparse COO gradients for the tables (nn.Embedding(sparse=True) style):
    only the rows a batch touches are stored, so optimizers such as SparseAdam or SGD
    update B*(k+2) rows instead of whole tables."""

    @staticmethod
    def forward(ctx, w_in, w_out, centers, contexts, negatives):
        ctx.save_for_backward(w_in, w_out, centers, contexts, negatives)
        return torch.ops.pyattn.sgns_loss_fwd(w_in, w_out, centers, contexts, negatives)

    @staticmethod
    def backward(ctx, dloss):
        w_in, w_out, centers, contexts, negatives = ctx.saved_tensors
        d_h, d_u = torch.ops.pyattn.sgns_loss_bwd(dloss.contiguous(), w_in, w_out, centers, contexts, negatives)
        d_in = d_out = None
        if ctx.needs_input_grad[0]:
            d_in = torch.sparse_coo_tensor(centers.long().unsqueeze(0), d_h, w_in.shape, check_invariants=False)
        if ctx.needs_input_grad[1]:
            rows = torch.cat([contexts.long().unsqueeze(1), negatives.long()], dim=1).reshape(1, -1)
            d_out = torch.sparse_coo_tensor(rows, d_u.reshape(-1, d_u.shape[-1]), w_out.shape, check_invariants=False)
        return d_in, d_out, None, None, None


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
    ``sparse=True`` (or an nn.Embedding(sparse=True) is passed). CPU only so far.
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
        loss = _SgnsLossSparse.apply(w_in, w_out, centers, contexts, negatives)
    else:
        loss = torch.ops.pyattn.sgns_loss_fwd(w_in, w_out, centers, contexts, negatives)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
