"""Build ``pyattn._C`` from the source tree with ``torch.utils.cpp_extension.load`` (ninja).

For kernel work: edit a file under kernels/ or csrc/, re-run, and ninja rebuilds only what
changed (cache in $PYATTN_JIT_DIR, default ~/.cache/pyattn_jit). Used by ``import pyattn``
when PYATTN_JIT=1; the PYATTN_SKIP_CUDA / PYATTN_FORCE_CUDA / PYATTN_DEBUG knobs apply.
"""

from __future__ import annotations

import os

from pyattn import _build_config as cfg


def load(verbose: bool = False):
    from torch.utils import cpp_extension

    with_cuda = cfg.want_cuda()
    if with_cuda:
        cfg.set_default_cuda_archs()
    build_dir = os.environ.get("PYATTN_JIT_DIR", os.path.expanduser("~/.cache/pyattn_jit"))
    build_dir = os.path.join(build_dir, "cuda" if with_cuda else "cpu")
    os.makedirs(build_dir, exist_ok=True)
    return cpp_extension.load(
        name="pyattn_jit_C",
        sources=[os.path.join(cfg.ROOT, s) for s in cfg.sources(with_cuda)],
        extra_include_paths=cfg.include_dirs(),
        extra_cflags=cfg.cxx_flags(with_cuda),
        extra_cuda_cflags=cfg.nvcc_flags() if with_cuda else None,
        with_cuda=with_cuda,
        build_directory=build_dir,
        verbose=verbose,
    )
