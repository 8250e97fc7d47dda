"""Functional forms of pyattn's kernels; each accepts what its torch counterpart does."""

from __future__ import annotations

import numbers
from typing import Optional, Sequence

import torch

from pyattn._autograd import ScaledMaskedSoftmax
from pyattn._autograd_lstm import LstmCell, LstmSeq

__all__ = ["scaled_masked_softmax", "lstm_cell", "lstm"]


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
    return ScaledMaskedSoftmax.apply(x, mask, float(scale), bool(causal))


def lstm_cell(
    input: torch.Tensor,
    hx: Optional[tuple[torch.Tensor, torch.Tensor]],
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor] = None,
    b_hh: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step, as ``nn.LSTMCell``: returns (h', c').

    gates = input @ w_ihᵀ + h @ w_hhᵀ + b_ih + b_hh in torch's order (i, f, g, o);
    c' = f*c + i*g; h' = o*tanh(c'). The two GEMMs go through ATen; everything
    elementwise (biases, activations, state update) is one fused kernel, as is its backward.

    Args:
        input: ``[N, C]`` or unbatched ``[C]``; float32, float64 or bfloat16 (CPU).
        hx: ``(h, c)``, each ``[N, H]`` (``[H]`` unbatched), or None for zeros.
        w_ih: ``[4H, C]``; w_hh: ``[4H, H]``; b_ih, b_hh: ``[4H]`` or None.
    """
    dim = input.dim()
    if dim == 2 and hx is not None:  # the loop's usual case first, with the least Python
        h_new, c_new = LstmCell.apply(input, hx[0], hx[1], w_ih, w_hh, b_ih, b_hh)
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
    h_new, c_new = LstmCell.apply(x, h, c, w_ih, w_hh, b_ih, b_hh)
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
    time): the input GEMM of all steps at once, per step the recurrent GEMM (ATen) and
    the fused pointwise kernel; backward through time likewise, with the weight gradients
    as GEMMs over all steps.

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
            y, h_n, c_n = LstmSeq.apply(x, h0[k], c0[k], w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, d == 1)
            outs.append(y)
            hs.append(h_n)
            cs.append(c_n)
        x = outs[0] if ndir == 1 else torch.cat(outs, dim=-1)
        if dropout > 0 and training and layer + 1 < num_layers:
            x = torch.nn.functional.dropout(x, dropout, training=True)
    return x, (torch.stack(hs), torch.stack(cs))
