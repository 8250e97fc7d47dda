#!/usr/bin/env bash
# Sets up a fresh machine for pyattn: torch (only if missing, so an existing CUDA build is
# kept), the build/test/bench dependencies, and the package itself with its compiled
# extension (editable, built with ninja; CUDA kernels too when torch has CUDA and nvcc).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip --version >/dev/null
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install "torch==${PYATTN_TORCH_VERSION:-2.13.0}"
fi
python -m pip install -q -r requirements-dev.txt
python -m pip install -q --no-build-isolation -e .
python -c "import pyattn; print('pyattn', pyattn.__version__, pyattn.build_info())"
