// packed_gemm: pyattn's fp32 CPU GEMM on a pre-packed right operand (kernels/cpu/packed_gemm.h),
// exposed as an op of its own so that it is tested over many shapes directly: out[m, n]
// = (c or 0) + a[m, k] · b[n, k]ᵀ, b packed per call. The LSTM kernels use the same
// micro-kernel with weights packed once per sequence (or kept packed by nn.LSTMCell).
#pragma once

#include "pyattn/common.h"

namespace pyattn {

struct PackedGemmParams {
  const float* a;  // [m, k], row stride lda, unit column stride
  int64_t lda;
  const float* b;  // [n, k]: element (j, k) at b[j·b_stride_n + k·b_stride_k]
  int64_t b_stride_n, b_stride_k;
  float* out;      // [m, n], row stride ldo: accumulated into (+=) when accumulate, else overwritten
  int64_t ldo;
  int64_t m, n, k;
  bool accumulate;
};

void packed_gemm_cpu(const PackedGemmParams& p, ParallelFor parallel_for);

}  // namespace pyattn
