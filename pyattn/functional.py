"""Functional forms of pyattn's kernels; each accepts what its torch counterpart does.

The public face of the per-op modules in :mod:`pyattn.ops`, where each wrapper lives
beside its op's fake implementation and derivative."""

from __future__ import annotations

from pyattn.ops.attention import attention, scaled_dot_product_attention
from pyattn.ops.lstm import lstm, lstm_cell
from pyattn.ops.negative_sampling import sgns_loss
from pyattn.ops.scaled_masked_softmax import scaled_masked_softmax

__all__ = ["scaled_masked_softmax", "attention", "scaled_dot_product_attention", "lstm_cell", "lstm", "sgns_loss"]
