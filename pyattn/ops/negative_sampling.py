"""Negative sampling: the in-place word2vec SGD updates (``torch.ops.pyattn.sgns_update_``
/ ``cbow_update_`` on a contexts matrix, ``sgns_stream_update_`` / ``cbow_stream_update_``
on a token stream, used by :mod:`pyattn.word2vec`) and the differentiable skip-gram loss
(``sgns_loss_fwd`` / ``_fwd_grad`` / ``_bwd``); kernels in csrc/negative_sampling.cpp.
``sgns_loss`` is re-exported by :mod:`pyattn.functional`."""

from __future__ import annotations

from typing import Optional, Union

import torch

_ops = torch.ops.pyattn


# ----------------------------------------------------------------------- fake


def _update_fake(w_in, w_out, centers, contexts, negatives, table, k, lr, seed, compute_loss=True, max_streams=0,
                 window_batch=False):
    return torch.empty((), dtype=torch.float64, device=w_in.device)


torch.library.register_fake("pyattn::sgns_update_")(_update_fake)
torch.library.register_fake("pyattn::cbow_update_")(_update_fake)


def _stream_update_fake(w_in, w_out, tokens, sentence, radius, start, stop, window, negatives, table, k, lr, seed,
                        compute_loss=True, max_streams=0, window_batch=False):
    return torch.empty((), dtype=torch.float64, device=w_in.device)


torch.library.register_fake("pyattn::sgns_stream_update_")(_stream_update_fake)
torch.library.register_fake("pyattn::cbow_stream_update_")(_stream_update_fake)


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


# ------------------------------------------------------------------- autograd


def _sgns_loss_setup_context(ctx, inputs, output):
    w_in, w_out, centers, contexts, negatives = inputs
    ctx.save_for_backward(w_in, w_out, centers, contexts, negatives)


def _sgns_loss_backward(ctx, dloss):
    """Row gradients from the kernel, scatter-added into dense table gradients."""
    w_in, w_out, centers, contexts, negatives = ctx.saved_tensors
    d_h, d_u = _ops.sgns_loss_bwd(dloss.contiguous(), w_in, w_out, centers, contexts, negatives)
    d_in = d_out = None
    if ctx.needs_input_grad[0]:
        d_in = torch.zeros_like(w_in).index_add_(0, centers.long(), d_h)
    if ctx.needs_input_grad[1]:
        rows = torch.cat([contexts.long().unsqueeze(1), negatives.long()], dim=1).reshape(-1)
        d_out = torch.zeros_like(w_out).index_add_(0, rows, d_u.reshape(-1, d_u.shape[-1]))
    return d_in, d_out, None, None, None


torch.library.register_autograd(
    "pyattn::sgns_loss_fwd", _sgns_loss_backward, setup_context=_sgns_loss_setup_context
)


# -------------------------------------------------------------------- wrapper


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
            return _reduce(_ops.sgns_loss_fwd(w_in, w_out, centers, contexts, negatives), reduction)
        scale = 1.0 / max(centers.shape[0], 1) if reduction == "mean" else 1.0
        loss, d_h, d_u = _ops.sgns_loss_fwd_grad(w_in, w_out, centers, contexts, negatives, scale)
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
    contexts are [B] token ids, negatives [B, k], all in [0, vocab): any other id
    (negative ones too, as with nn.Embedding) raises an error naming it. ``reduction``:
    'mean' (over B), 'sum' or 'none' ([B]). Gradients flow to both tables: dense by
    default, sparse COO when ``sparse=True`` (or an nn.Embedding(sparse=True) is passed).
    On the sparse path a forward that needs gradients computes them already (one pass
    over the rows) and keeps them, B * (k + 2) * dim values, until backward. CPU and CUDA.
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
    return _reduce(_ops.sgns_loss_fwd(w_in, w_out, centers, contexts, negatives), reduction)
