#!/usr/bin/env bash
# Builds bench/cuda/attention_fwd_harness.cu into build/harness/ with nvcc, for sm_80 and
# sm_90, the CUDA runtime linked statically so the binary runs wherever a driver is
# (carry build/harness to a lent GPU). Prints ptxas's registers and spills per kernel to
# build/harness/ptxas.txt: every tile shape the harness times should show 0 spill bytes.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/harness
nvcc -std=c++17 -O3 --expt-relaxed-constexpr -cudart static \
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -Ikernels/include -Ikernels -Xptxas -v \
  -o build/harness/attention_fwd_harness bench/cuda/attention_fwd_harness.cu 2> build/harness/ptxas.txt || {
  cat build/harness/ptxas.txt >&2
  exit 1
}
echo "built build/harness/attention_fwd_harness (ptxas report: build/harness/ptxas.txt)"
# One line per kernel: arch, FwdTiles<D, m-tiles per warp, keys per tile>, dropout,
# registers, spill bytes.
awk '/Compiling entry function/ {
       arch = $NF; gsub(/[^a-z0-9_]/, "", arch); name = $0
       tiles = (match(name, /FwdTilesILi[0-9]+ELi[0-9]+ELi[0-9]+EEELb[01]/) ? substr(name, RSTART, RLENGTH) : "other")
     }
     /spill stores/ { spill = $5 }
     /Used [0-9]+ registers/ { print arch, tiles, "registers", $5, "spill", spill }' build/harness/ptxas.txt |
  sed -E 's/FwdTilesILi([0-9]+)ELi([0-9]+)ELi([0-9]+)EEELb([01])/FwdTiles<\1,\2,\3> dropout=\4/' | sort -u
