// Scalar math usable on the host and in CUDA device code, for the shared arithmetic
// headers (softmax_math.h, lstm_math.h) that CPU tests exercise for the GPU.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define PYATTN_HD __host__ __device__ __forceinline__
#else
#define PYATTN_HD inline
#endif

namespace pyattn {

// exp in the accumulation type: float (for f32/f16/bf16 data) or double.
PYATTN_HD float exp_acc(float v) {
#if defined(__CUDA_ARCH__)
  return expf(v);
#else
  return std::exp(v);
#endif
}

PYATTN_HD double exp_acc(double v) {
#if defined(__CUDA_ARCH__)
  return ::exp(v);
#else
  return std::exp(v);
#endif
}

}  // namespace pyattn
