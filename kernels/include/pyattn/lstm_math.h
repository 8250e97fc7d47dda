// Scalar LSTM gate math shared by the CUDA kernel and the CPU's generic path, so CPU
// tests exercise the arithmetic the GPU runs. A is float (for f32/f16/bf16 data) or
// double. The SIMD CPU paths use their own exp2-based vector forms (cpu/lstm_body.h).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define PYATTN_LSTM_HD __host__ __device__ __forceinline__
#else
#define PYATTN_LSTM_HD inline
#endif

namespace pyattn {
namespace lstm_math {

PYATTN_LSTM_HD float exp_acc(float v) {
#if defined(__CUDA_ARCH__)
  return expf(v);
#else
  return std::exp(v);
#endif
}
PYATTN_LSTM_HD double exp_acc(double v) {
#if defined(__CUDA_ARCH__)
  return ::exp(v);
#else
  return std::exp(v);
#endif
}
PYATTN_LSTM_HD float tanh_acc(float v) {
#if defined(__CUDA_ARCH__)
  return tanhf(v);
#else
  return std::tanh(v);
#endif
}
PYATTN_LSTM_HD double tanh_acc(double v) {
#if defined(__CUDA_ARCH__)
  return ::tanh(v);
#else
  return std::tanh(v);
#endif
}

// exp(-z) overflows to inf for z < ~-88 (fp32), giving exactly 0: no NaN.
template <typename A>
PYATTN_LSTM_HD A sigmoid(A z) {
  return A(1) / (A(1) + exp_acc(-z));
}

}  // namespace lstm_math
}  // namespace pyattn
