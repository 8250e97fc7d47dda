#!/usr/bin/env bash
# Compile-checks the CUDA side of pyattn on a machine without a GPU (CI):
#   1. every kernels/cuda/*.cu with nvcc for sm_80 and sm_90, warnings as errors;
#   2. every csrc/*.cpp with g++ -fsyntax-only -DPYATTN_WITH_CUDA against torch's headers.
# Objects go to a temp dir and are thrown away. Exit status is non-zero on any failure.
#
# Environment:
#   PYATTN_ALLOW_NO_NVCC=1   exit 0 (after saying so) when nvcc is not installed
#   PYATTN_NVCC_WERROR=0     keep nvcc/host warnings as warnings
#   CI_JOBS                  parallel compiles (default: number of CPUs, at most 2)
#   CUDA_HOME, PYTHON        where CUDA and the python with torch live
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python}

find_nvcc() {
  if command -v nvcc >/dev/null 2>&1; then command -v nvcc; return; fi
  local d
  for d in "${CUDA_HOME:-}" /usr/local/cuda; do
    if [[ -n "$d" && -x "$d/bin/nvcc" ]]; then echo "$d/bin/nvcc"; return; fi
  done
}

NVCC=$(find_nvcc || true)
if [[ -z "$NVCC" ]]; then
  echo "compile_cuda: nvcc not found (looked in PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)." >&2
  if [[ "${PYATTN_ALLOW_NO_NVCC:-0}" == 1 ]]; then
    echo "compile_cuda: PYATTN_ALLOW_NO_NVCC=1, skipping the CUDA compile check." >&2
    exit 0
  fi
  echo "compile_cuda: install the CUDA toolkit or set PYATTN_ALLOW_NO_NVCC=1 to skip." >&2
  exit 1
fi

# The toolkit root (for cuda_runtime_api.h): $CUDA_HOME, else what nvcc reports as TOP
# (nvcc on PATH may be a wrapper script), else /usr/local/cuda.
cuda_include() {
  local top
  top=$("$NVCC" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n1)
  local d
  for d in "${CUDA_HOME:-}" "$top" /usr/local/cuda; do
    [[ -z "$d" ]] && continue
    if [[ -f "$d/include/cuda_runtime_api.h" ]]; then echo "$d/include"; return; fi
    if [[ -f "$d/targets/x86_64-linux/include/cuda_runtime_api.h" ]]; then
      echo "$d/targets/x86_64-linux/include"; return
    fi
  done
}
CUDA_INC=$(cuda_include || true)
NVCC_VERSION=$("$NVCC" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1.\2/p')
echo "compile_cuda: nvcc $NVCC ($NVCC_VERSION), CUDA headers ${CUDA_INC:-not found}"

JOBS=${CI_JOBS:-$(n=$(nproc 2>/dev/null || echo 2); echo $((n < 2 ? n : 2)))}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pyattn_ci.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Flags follow pyattn/_build_config.py nvcc_flags() plus the defines torch's
# BuildExtension adds (no implicit half/bfloat16 conversions), so CI sees what setup.py builds.
NVCC_FLAGS=(-std=c++17 -O3 -c -lineinfo --expt-relaxed-constexpr -DPYATTN_WITH_CUDA
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
  -I"$ROOT/kernels/include" -I"$ROOT/kernels"
  -Wno-deprecated-gpu-targets -Xcompiler -Wall)
if [[ "${PYATTN_NVCC_WERROR:-1}" != 0 ]]; then
  NVCC_FLAGS+=(-Werror all-warnings -Wno-deprecated-declarations)
fi

# Runs one compile command, keeping its output in a log printed in one piece.
# Usage: run_one LABEL SOURCE CMD...; prints "ok"/"FAIL" lines; non-zero on failure.
run_one() {
  local label=$1 src=$2
  shift 2
  local log
  log="$TMP/$(echo "$label-$src" | tr '/ ' '__').log"
  local t0=$SECONDS
  if "$@" >"$log" 2>&1; then
    echo "compile_cuda: ok   [$label] $src ($((SECONDS - t0)) s)"
    [[ -s "$log" ]] && sed 's/^/    /' "$log"
    return 0
  fi
  echo "compile_cuda: FAIL [$label] $src"
  sed 's/^/    /' "$log"
  return 1
}
export -f run_one
export TMP

fail=0
shopt -s nullglob

# ---- 1. CUDA kernels ---------------------------------------------------------------------
cu_files=(kernels/cuda/*.cu)
if ((${#cu_files[@]} == 0)); then
  echo "compile_cuda: no kernels/cuda/*.cu files"
else
  printf '%s\0' "${cu_files[@]}" |
    xargs -0 -P "$JOBS" -I{} bash -c 'run_one nvcc "$1" "${@:2}" -o "$TMP/$(basename "$1").o" "$1"' \
      _ {} "$NVCC" "${NVCC_FLAGS[@]}" || fail=1
fi

# ---- 2. torch glue, syntax only, as the CUDA build compiles it --------------------------
cpp_files=(csrc/*.cpp)
if ((${#cpp_files[@]} == 0)); then
  echo "compile_cuda: no csrc/*.cpp files"
elif [[ -z "$CUDA_INC" ]]; then
  echo "compile_cuda: FAIL cannot find the CUDA include dir for the csrc check (set CUDA_HOME)"
  fail=1
else
  # Torch facts: header dirs, python headers (pybind11), the C++ ABI torch was built with.
  mapfile -t TORCH_FACTS < <("$PYTHON" - <<'EOF'
import sysconfig
import torch
from torch.utils.cpp_extension import include_paths
for p in include_paths():
    print(p)
print(sysconfig.get_paths()["include"])
print("ABI=%d" % int(torch.compiled_with_cxx11_abi()))
EOF
  )
  if ((${#TORCH_FACTS[@]} < 2)); then
    echo "compile_cuda: FAIL cannot import torch with $PYTHON for the csrc check"
    exit 1
  fi
  CXX_FLAGS=(-std=c++17 -fsyntax-only -DPYATTN_WITH_CUDA -DTORCH_API_INCLUDE_EXTENSION_H
    -DTORCH_EXTENSION_NAME=_C -Wall -Wextra -Wno-unused-parameter -Werror)
  for f in "${TORCH_FACTS[@]}"; do
    case "$f" in
      ABI=*) CXX_FLAGS+=("-D_GLIBCXX_USE_CXX11_ABI=${f#ABI=}") ;;
      *) CXX_FLAGS+=(-isystem "$f") ;;
    esac
  done
  # A CPU build of torch ships c10/cuda headers but not the CMake-generated
  # c10/cuda/impl/cuda_cmake_macros.h they include. Where it is missing, stand in for
  # it: shared-library build, toolkit version from our nvcc.
  have_macros=0
  for f in "${TORCH_FACTS[@]}"; do
    [[ -f "$f/c10/cuda/impl/cuda_cmake_macros.h" ]] && have_macros=1
  done
  if ((!have_macros)); then
    STUB="$TMP/stub_include"
    mkdir -p "$STUB/c10/cuda/impl"
    cat >"$STUB/c10/cuda/impl/cuda_cmake_macros.h" <<EOF
// Stand-in written by .ci/compile_cuda.sh for a CPU-only torch install.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
#define TORCH_CUDA_VERSION_MAJOR ${NVCC_VERSION%.*}
#define TORCH_CUDA_VERSION_MINOR ${NVCC_VERSION#*.}
#define TORCH_CUDA_VERSION_PATCH 0
#define TORCH_CUDA_VERSION_BUILD 0
EOF
    CXX_FLAGS+=(-isystem "$STUB")
    echo "compile_cuda: torch lacks c10/cuda/impl/cuda_cmake_macros.h; using a stand-in"
  fi
  CXX_FLAGS+=(-isystem "$CUDA_INC" -I"$ROOT/kernels/include" -I"$ROOT/kernels" -I"$ROOT/csrc")
  CXX=${CXX:-g++}
  printf '%s\0' "${cpp_files[@]}" |
    xargs -0 -P "$JOBS" -I{} bash -c 'run_one g++ "$1" "${@:2}" "$1"' _ {} "$CXX" "${CXX_FLAGS[@]}" ||
    fail=1
fi

if ((fail)); then
  echo "compile_cuda: FAILED"
  exit 1
fi
echo "compile_cuda: all passed (${#cu_files[@]} .cu, ${#cpp_files[@]} .cpp)"
