"""The Python side of each ``torch.ops.pyattn.*`` op, one module per op, as
pytorch/extension-cpp keeps them: the op's fake (meta) implementation, so shapes and
dtypes propagate under torch.compile and FakeTensor; its derivative; and the Python
wrapper that checks arguments and calls it. Importing this package registers the fakes
and derivatives on the ops. Schemas are in csrc/bindings.cpp, the real implementations
in csrc/<op>.cpp; the public faces are :mod:`pyattn.functional` and :mod:`pyattn.nn`.

Derivatives are registered on the op (``torch.library.register_autograd``), so the raw
op, the wrapper, torch.compile and opcheck see the same one. Two exceptions are
``torch.autograd.Function`` classes, each for a stated reason: the LSTM ops (a per-step
cell in a Python loop cannot afford register_autograd's per-call argument binding) and
``sgns_loss`` with sparse gradients (its forward computes the gradients too).
"""

from pyattn.ops import (  # noqa: F401
    attention,
    lstm,
    negative_sampling,
    packed_gemm,
    scaled_masked_softmax,
    subsample_tokens,
)
