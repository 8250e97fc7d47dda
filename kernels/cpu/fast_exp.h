// exp(x) for float lanes, the same algorithm on every ISA so tails, the generic path and
// SIMD paths agree: x = n*ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial,
// times 2^n assembled in the exponent bits. Relative error ~2 ulp.
// Domain: exact 0 for x < kExpLo (so exp(-inf) = 0), NaN in gives NaN, clamped above
// kExpHi (softmax only feeds x <= 0).
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/half.h"

namespace pyattn::cpu {

constexpr float kExpLo = -87.33654f;  // ln(2^-126): smallest normal result
constexpr float kExpHi = 88.0f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;    // ln2 split so n*kLn2Hi is exact
constexpr float kLn2Lo = 1.42860682030941723e-6f;
// Taylor coefficients 1/k!, k = 6..0 (Horner order).
constexpr float kExpC6 = 1.0f / 720, kExpC5 = 1.0f / 120, kExpC4 = 1.0f / 24, kExpC3 = 1.0f / 6,
                kExpC2 = 0.5f, kExpC1 = 1.0f, kExpC0 = 1.0f;

inline float fast_exp(float x) {
  if (std::isnan(x)) return x;
  if (x < kExpLo) return 0.0f;
  x = x > kExpHi ? kExpHi : x;
  const float n = std::nearbyint(x * kLog2e);
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = kExpC6;
  p = p * r + kExpC5;
  p = p * r + kExpC4;
  p = p * r + kExpC3;
  p = p * r + kExpC2;
  p = p * r + kExpC1;
  p = p * r + kExpC0;
  return p * bits_float(uint32_t(int32_t(n) + 127) << 23);
}

}  // namespace pyattn::cpu
