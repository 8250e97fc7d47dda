// Scalar math usable on the host and in CUDA device code, for the shared arithmetic
// headers (softmax_math.h, lstm_math.h, dropout_math.h, negative_sampling.h) that CPU
// tests exercise for the GPU.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define PYATTN_HD __host__ __device__ __forceinline__
#else
#define PYATTN_HD inline
#endif

namespace pyattn {

// log2(e), for exp(x) = 2^(x·log2(e)): the kernels that compute exp as exp2 scale by it.
// fp32 code takes float(kLog2e) (the float nearest log2(e), as a float literal would be),
// fp64 code the double.
constexpr double kLog2e = 1.44269504088896340735992468100189214;

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

// A bijection of 64-bit words in which every input bit affects every output bit: the
// xorshift-multiply finaliser of splitmix64 (shifts and odd multipliers from Stafford's
// "Mix13"); each step is invertible. The counter-based draws (dropout masks, negative
// samples) hash their coordinates with it, identically on CPU and GPU.
PYATTN_HD uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace pyattn
