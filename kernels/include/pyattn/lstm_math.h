// Scalar LSTM gate math shared by the CUDA kernel and the CPU's generic path, so CPU
// tests exercise the arithmetic the GPU runs. A is float (for f32/f16/bf16 data) or
// double. The SIMD CPU paths use their own exp2-based vector forms (cpu/lstm_body.h).
#pragma once

#include <cmath>

#include "pyattn/hd_math.h"

namespace pyattn {
namespace lstm_math {

PYATTN_HD float tanh_acc(float v) {
#if defined(__CUDA_ARCH__)
  return tanhf(v);
#else
  return std::tanh(v);
#endif
}
PYATTN_HD double tanh_acc(double v) {
#if defined(__CUDA_ARCH__)
  return ::tanh(v);
#else
  return std::tanh(v);
#endif
}

// exp(-z) overflows to inf for z < ~-88 (fp32), giving exactly 0: no NaN.
template <typename A>
PYATTN_HD A sigmoid(A z) {
  return A(1) / (A(1) + exp_acc(-z));
}

}  // namespace lstm_math
}  // namespace pyattn
