"""Build ``pyattn._C`` from the source tree with ``torch.utils.cpp_extension.load`` (ninja).

For kernel work: edit a file under kernels/ or csrc/, re-run, and ninja rebuilds only what
changed (cache in $PYATTN_JIT_DIR, default ~/.cache/pyattn_jit). Used by ``import pyattn``
when PYATTN_JIT=1; the PYATTN_SKIP_CUDA / PYATTN_FORCE_CUDA / PYATTN_DEBUG knobs apply.
"""

from __future__ import annotations

import os

from pyattn import _build_config as cfg


def _unique_sources(with_cuda: bool, build_dir: str) -> list[str]:
    """cpp_extension.load names object files by basename, and csrc/<op>.cpp and
    kernels/cpu/<op>.cpp share one. Each source is therefore compiled through a one-line
    wrapper named after its path (csrc_<op>.cpp, ...) that #includes it; ninja's
    dependency tracking still rebuilds exactly what an edit touches."""
    out = []
    wrap_dir = os.path.join(build_dir, "sources")
    os.makedirs(wrap_dir, exist_ok=True)
    for rel in cfg.sources(with_cuda):
        wrapper = os.path.join(wrap_dir, rel.replace(os.sep, "_").replace("/", "_"))
        text = f'#include "{os.path.join(cfg.ROOT, rel)}"\n'
        if not os.path.exists(wrapper) or open(wrapper).read() != text:
            with open(wrapper, "w") as f:
                f.write(text)
        out.append(wrapper)
    return out


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
        sources=_unique_sources(with_cuda, build_dir),
        extra_include_paths=cfg.include_dirs(),
        extra_cflags=cfg.cxx_flags(with_cuda),
        extra_ldflags=cfg.link_flags(),
        extra_cuda_cflags=cfg.nvcc_flags() if with_cuda else None,
        with_cuda=with_cuda,
        build_directory=build_dir,
        verbose=verbose,
    )
