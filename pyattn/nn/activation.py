"""pyattn.nn.MultiheadAttention (where torch keeps it: torch.nn.modules.activation)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from pyattn.ops.attention import attention_with_dropout_seed, check_dropout_p, draw_dropout_seed
from pyattn.ops.common import needs_grad
from pyattn.ops.scaled_masked_softmax import scaled_masked_softmax

__all__ = ["MultiheadAttention"]


def _to_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torch's MHA convention (bool True = not allowed, float added) as an additive mask."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


class MultiheadAttention(torch.nn.MultiheadAttention):
    """``torch.nn.MultiheadAttention`` with the attention itself computed by pyattn's fused
    kernel (``pyattn.functional.attention``): same constructor, parameters, state_dict
    (load either module's into the other) and ``forward`` signature and semantics.

    * ``attn_mask`` (``(L, S)`` or ``(N*num_heads, L, S)``) and ``key_padding_mask``
      (``(N, S)``) follow torch: bool True = not allowed, floating = added.
      ``is_causal`` is, as in torch, a hint that ``attn_mask`` is causal; ``attn_mask``
      must then be given. As torch does, with no ``key_padding_mask`` and
      ``need_weights=False`` the hint replaces the mask: the fused kernel runs top-left
      causal, skipping the key blocks above the diagonal, and never reads the mask.
    * ``need_weights=True`` (torch's default) also returns the attention weights, which
      need the full ``(L, S)`` matrix. Without autograd (inference, CPU) one fused kernel
      forms each row of it in cache and writes each weight once, averaged over the heads
      in the kernel (``torch.ops.pyattn.attention_with_weights``). With autograd, or on
      CUDA, the scores are a GEMM, the weights pyattn's fused ``scaled_masked_softmax``
      and the output a second GEMM. ``need_weights=False`` takes the fused attention
      kernel, which never forms the matrix (O(L) memory) and has a fused backward.
    * The projections run on the inputs in their own layout, the heads are strided views
      of their outputs, and self-attention (``query is key is value``) projects with one
      GEMM, as torch does.
    * A query whose keys are all masked gives 0 (torch gives NaN there).
    * ``dropout`` drops attention probabilities in training mode only, as torch's does,
      on the fused path and with ``need_weights=True`` alike; the returned weights are,
      as torch's, the dropped and rescaled ones the output was computed with (same mask).
      The mask is pyattn's counter-based one (see ``pyattn.functional.attention``), keyed
      from torch's default CPU generator: ``torch.manual_seed`` reproduces it, but it is
      not the mask torch's module would draw.
    """

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        need_weights: bool = True,
        attn_mask: Optional[torch.Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ):
        if is_causal and attn_mask is None:
            raise RuntimeError("pyattn.nn.MultiheadAttention: is_causal is a hint that attn_mask is causal; "
                               "attn_mask must be given with it (as in torch)")
        # torch's rule: the hint stands for the mask only where nothing else is merged into
        # it (no key padding) and no weights are returned.
        causal = is_causal and key_padding_mask is None and not need_weights
        if causal:
            attn_mask = None
        batched = query.dim() == 3
        if not batched:  # (L, E): one sequence, seq-first (L, 1, E)
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        # The projections run on the inputs as laid out ((N, L, E) when batch_first, else
        # (L, N, E)): no transposed copies; the heads are strided views of their outputs.
        bf = batched and self.batch_first
        n = query.shape[0] if bf else query.shape[1]
        h, hd, e = self.num_heads, self.head_dim, self.embed_dim

        def heads(t):  # projection output -> (N, H, L, hd) view
            if bf:
                return t.unflatten(-1, (h, hd)).transpose(1, 2)
            return t.unflatten(-1, (h, hd)).permute(1, 2, 0, 3)

        if self.in_proj_weight is not None and query is key and key is value:  # self-attention: one GEMM
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias).unflatten(-1, (3, e))
            q, k, v = (heads(qkv.select(-2, i)) for i in range(3))
        else:
            if self.in_proj_weight is not None:
                w_q, w_k, w_v = self.in_proj_weight.chunk(3)
            else:
                w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
            b_q = b_k = b_v = None
            if self.in_proj_bias is not None:
                b_q, b_k, b_v = self.in_proj_bias.chunk(3)
            q, k, v = heads(F.linear(query, w_q, b_q)), heads(F.linear(key, w_k, b_k)), heads(F.linear(value, w_v, b_v))
        lq = q.shape[2]

        dtype = q.dtype
        extra = int(self.bias_k is not None) + int(self.add_zero_attn)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.view(1, h, 1, hd).expand(n, h, 1, hd)], dim=2)
            v = torch.cat([v, self.bias_v.view(1, h, 1, hd).expand(n, h, 1, hd)], dim=2)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(n, h, 1, hd)], dim=2)
            v = torch.cat([v, v.new_zeros(n, h, 1, hd)], dim=2)
        s_in = k.shape[2] - extra  # keys the caller's masks describe

        # The caller's masks as one, broadcastable to (N, H, L, S): additive when either is
        # floating, else bool in torch's MHA polarity (True = drop). bias_k / zero-attn keys
        # are always visible.
        masks = []
        if attn_mask is not None:
            m = attn_mask
            if m.dim() == 3:
                m = m.reshape(n, h, lq, s_in)
            masks.append(m)
        if key_padding_mask is not None:
            masks.append(key_padding_mask.reshape(n, 1, 1, s_in))
        additive = drop = None
        if any(m.dtype != torch.bool for m in masks):
            additive = sum(_to_additive(m, dtype) for m in masks)
            if extra:
                additive = F.pad(additive, (0, extra))
        elif masks:
            drop = masks[0] if len(masks) == 1 else masks[0] | masks[1]
            if extra:
                drop = F.pad(drop, (0, extra), value=False)
        # attention and attention_with_weights take SDPA's polarity (True = keep).
        attention_mask = additive if drop is None else ~drop

        dropout_p = check_dropout_p(self.dropout, "pyattn.nn.MultiheadAttention") if self.training else 0.0
        seed = draw_dropout_seed() if dropout_p > 0.0 else None
        weights = None
        if need_weights and seed is None and q.device.type == "cpu" and not needs_grad(q, k, v, additive):
            # Inference: one fused kernel gives the output and the (head-mean) weights.
            scale = hd**-0.5
            out, weights = torch.ops.pyattn.attention_with_weights(q, k, v, attention_mask, scale, average_attn_weights)
        elif need_weights:  # the (L, S) weights with autograd: scores GEMM, fused softmax, GEMM
            # scaled_masked_softmax takes the drop polarity, as torch's MHA does.
            softmax_mask = additive if drop is None else drop
            weights = scaled_masked_softmax(q @ k.transpose(-1, -2), softmax_mask, scale=hd**-0.5)  # (N, H, L, S)
            if seed is not None:  # torch returns the weights after dropout, as the output uses them
                weights = torch.ops.pyattn.attention_dropout(weights, seed, dropout_p)
            out = weights @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:  # the fused kernel: the (L, S) matrix is never formed
            out = attention_with_dropout_seed(q, k, v, mask=attention_mask, key_padding_mask=None, key_lengths=None,
                                              causal="top_left" if causal else None, window=None,
                                              scale=None, return_lse=False,
                                              dropout_p=dropout_p, dropout_seed=seed)  # (N, H, L, hd)
        # (N, H, L, hd) -> the input's layout, (N, L, E) or (L, N, E), for the output projection.
        out = out.transpose(1, 2) if bf else out.permute(2, 0, 1, 3)
        out = F.linear(out.flatten(-2), self.out_proj.weight, self.out_proj.bias)
        if weights is not None and not batched:
            weights = weights.squeeze(0)
        if not batched:
            out = out.squeeze(1)
        return out, weights
