"""packed_gemm: pyattn's fp32 CPU GEMM on a packed right operand
(``torch.ops.pyattn.packed_gemm``, csrc/packed_gemm.cpp): the micro-kernel the LSTM and
attention kernels share, exposed so it is tested on its own. No derivative."""

from __future__ import annotations

import torch


# ----------------------------------------------------------------------- fake


@torch.library.register_fake("pyattn::packed_gemm")
def _packed_gemm_fake(a, b, c):
    return a.new_empty((a.shape[0], b.shape[0]))
