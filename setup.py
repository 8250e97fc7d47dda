"""Builds pyattn and its one extension, pyattn._C.

    pip install --no-build-isolation -e .      (torch must already be installed)

Knobs (environment): PYATTN_SKIP_CUDA=1, PYATTN_FORCE_CUDA=1, PYATTN_DEBUG=1,
MAX_JOBS (parallel compile jobs), TORCH_CUDA_ARCH_LIST (default "8.0;9.0").
"""

import importlib.util
import os

from setuptools import find_packages, setup

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("_build_config", os.path.join(_here, "pyattn", "_build_config.py"))
cfg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cfg)

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

with_cuda = cfg.want_cuda()
if with_cuda:
    cfg.set_default_cuda_archs()
    ext = CUDAExtension(
        "pyattn._C",
        sources=cfg.sources(True, _here),
        include_dirs=cfg.include_dirs(_here),
        extra_compile_args={"cxx": cfg.cxx_flags(True), "nvcc": cfg.nvcc_flags()},
        extra_link_args=cfg.link_flags(),
    )
else:
    ext = CppExtension(
        "pyattn._C",
        sources=cfg.sources(False, _here),
        include_dirs=cfg.include_dirs(_here),
        extra_compile_args={"cxx": cfg.cxx_flags(False)},
        extra_link_args=cfg.link_flags(),
    )

setup(
    name="pyattn",
    version="0.1.0",
    description="Fused attention, LSTM and negative-sampling kernels for PyTorch (C++ and CUDA)",
    packages=find_packages(include=["pyattn", "pyattn.*"]),
    python_requires=">=3.9",
    install_requires=["torch", "numpy"],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "hypothesis", "expecttest"],
        "bench": ["matplotlib", "tqdm", "pytest-benchmark"],
    },
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
