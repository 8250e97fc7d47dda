#!/usr/bin/env bash
# Builds bench/cuda/attention_harness.cu and lstm_harness.cu into build/harness/ with
# nvcc, for sm_80 and sm_90, the CUDA runtime linked statically so the binaries run
# wherever a driver is (carry build/harness to a lent GPU), and prints ptxas's registers
# and spill bytes per attention kernel (full reports: build/harness/ptxas*.txt). Every
# tile shape the harness times should show 0 spill bytes.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/harness
nvcc -std=c++17 -O3 --expt-relaxed-constexpr -cudart static \
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -Ikernels/include -Ikernels -Xptxas -v \
  -o build/harness/attention_harness bench/cuda/attention_harness.cu 2> build/harness/ptxas.txt || {
  cat build/harness/ptxas.txt >&2
  exit 1
}
echo "built build/harness/attention_harness"
# The LSTM kernels are separate translation units (each has its own anonymous namespace).
nvcc -std=c++17 -O3 --expt-relaxed-constexpr -cudart static \
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -Ikernels/include -Ikernels -Xptxas -v \
  -o build/harness/lstm_harness bench/cuda/lstm_harness.cu kernels/cuda/lstm_persistent.cu \
  kernels/cuda/lstm_persistent_mma.cu 2> build/harness/ptxas_lstm.txt || {
  cat build/harness/ptxas_lstm.txt >&2
  exit 1
}
if grep -q "[1-9][0-9]* bytes spill stores" build/harness/ptxas_lstm.txt; then
  echo "lstm_harness: some LSTM kernel spills, see build/harness/ptxas_lstm.txt" >&2
fi
echo "built build/harness/lstm_harness"
# One line per kernel: arch, kernel, <D, m-tiles per warp, tile[, dk/dv column split]>,
# dropout, type,
# registers, spill bytes.
awk '/Compiling entry function/ {
       arch = $NF; gsub(/[^a-z0-9_]/, "", arch)
       kernel = (match($0, /(fwd|dq|dkdv|mma_peak)_(mma_)?kernel/) ? substr($0, RSTART, RLENGTH) : "other")
       tiles = (match($0, /TilesI(S[0-9A-Z]*_|[0-9a-z_]*)Li[0-9]+ELi[0-9]+ELi[0-9]+E(Li[0-9]+E)?EELb[01]/) ? substr($0, RSTART, RLENGTH) : "")
       type = ($0 ~ /bfloat16/ ? "bf16" : ($0 ~ /half/ ? "fp16" : ($0 ~ /kernelIf/ ? "fp32" : "")))
     }
     /spill stores/ { spill = $5 }
     /Used [0-9]+ registers/ { print arch, kernel, tiles, type, "registers", $5, "spill", spill }' build/harness/ptxas.txt |
  sed -E 's/TilesI(S[0-9A-Z]*_|[0-9a-z_]*)Li([0-9]+)ELi([0-9]+)ELi([0-9]+)E(Li([0-9]+)E)?EELb([01])/<\2,\3,\4,\6> dropout=\7/; s/,> /> /' | sort -u
