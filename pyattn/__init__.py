"""pyattn: fused attention, LSTM and negative-sampling kernels for PyTorch (C++ and CUDA).

Ops are ``torch.ops.pyattn.*`` (their Python side in :mod:`pyattn.ops`, one module per op);
the public API is :mod:`pyattn.functional` and :mod:`pyattn.nn`.
"""

from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension)

from pyattn import _extension

_C = _extension.load()

from pyattn import ops  # noqa: E402,F401  (each op's fake implementation and derivative)
from pyattn import functional  # noqa: E402
from pyattn import nn  # noqa: E402

__version__ = "0.1.0"


def build_info() -> dict:
    """How the extension was built and what it runs with: ``cuda`` (bool), ``cuda_archs``,
    ``cuda_runtime``, ``cpu_isa`` (the CPU code path in use), ``cpu_isa_best``, ``compiler``,
    ``torch_built_with``, ``torch_version`` (running), ``debug``."""
    info = dict(_C.build_info())
    info["torch_version"] = torch.__version__
    info["pyattn_version"] = __version__
    return info


def set_cpu_isa(name: str) -> None:
    """Use the CPU code path ``name`` ('generic', 'avx2', 'avx512', 'avx512_bf16'); it must
    not exceed what the CPU supports (``build_info()['cpu_isa_best']``)."""
    _C.set_cpu_isa(name)


__all__ = ["build_info", "set_cpu_isa", "functional", "nn", "__version__"]
