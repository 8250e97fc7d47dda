"""What to compile for ``pyattn._C`` and how: shared by ``setup.py`` and the JIT path.

Imported by ``setup.py`` straight from its file (before the package exists), so it
imports nothing from pyattn and nothing heavy at module level.
"""

from __future__ import annotations

import glob
import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def want_cuda() -> bool:
    """CUDA kernels are built when torch has CUDA and nvcc is found.

    PYATTN_SKIP_CUDA=1 never builds them; PYATTN_FORCE_CUDA=1 always does (for a
    machine with nvcc but no GPU, e.g. a build box).
    """
    if _flag("PYATTN_SKIP_CUDA"):
        return False
    if _flag("PYATTN_FORCE_CUDA"):
        return True
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None and (
        shutil.which("nvcc") is not None or os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))
    )


def debug() -> bool:
    return _flag("PYATTN_DEBUG")


def sources(with_cuda: bool, root: str = ROOT) -> list[str]:
    """Paths relative to ``root`` (setuptools wants relative source paths)."""
    pats = ["csrc/*.cpp", "kernels/cpu/*.cpp"] + (["kernels/cuda/*.cu"] if with_cuda else [])
    out: list[str] = []
    for pat in pats:
        out += sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pat)))
    return out


def include_dirs(root: str = ROOT) -> list[str]:
    return [os.path.join(root, "kernels", "include"), os.path.join(root, "kernels")]


def cxx_flags(with_cuda: bool) -> list[str]:
    opt = ["-O0", "-g", "-DPYATTN_DEBUG"] if debug() else ["-O3"]
    defs = ["-DPYATTN_WITH_CUDA"] if with_cuda else []
    # -fopenmp: at::parallel_for (behind the kernels' ParallelFor) is an inline template
    # whose `#pragma omp parallel` is compiled into this extension; without the flag it
    # silently runs on one thread. The OpenMP calls resolve to the runtime torch loaded.
    return opt + ["-std=c++17", "-fno-math-errno", "-fopenmp"] + defs


def link_flags() -> list[str]:
    return ["-fopenmp"]


def nvcc_flags() -> list[str]:
    opt = ["-O0", "-g", "-lineinfo", "-DPYATTN_DEBUG"] if debug() else ["-O3", "-lineinfo"]
    return opt + ["-std=c++17", "--expt-relaxed-constexpr", "-DPYATTN_WITH_CUDA"]


def set_default_cuda_archs() -> None:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
