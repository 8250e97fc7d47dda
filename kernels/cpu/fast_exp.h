// 2^t for float lanes, the same algorithm on every ISA so tails, the generic path and
// SIMD paths agree: t = n + f with n = round(t), |f| <= 1/2, 2^f by a degree-5
// near-minimax polynomial (max relative error 2.4e-7 evaluated in fp32), times 2^n
// assembled in the exponent bits.
// Rounding by a magic add: s = t + kExp2Magic lands in [2^23, 2^24), where floats are
// the integers, so s - kExp2Magic = round(t) exactly, and the low 9 bits of s's pattern
// hold n + 127 (kExp2Magic = 1.5 * 2^23 + 127), which shifted left by 23 is the pattern
// of 2^n. One add replaces a round, a float-to-int convert and an integer add.
// Domain: softmax feeds t = (z - max z) * log2(e) <= ~0 (kLog2e of pyattn/hd_math.h).
// t is clamped below at -127, where the assembled 2^n is exactly 0, so t = -inf (a
// masked score) gives 0. A NaN t gives NaN (SIMD code keeps it by putting t second in
// max(-127, t)).
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/half.h"
#include "pyattn/hd_math.h"

namespace pyattn::cpu {

constexpr float kExp2Lo = -127.0f;
constexpr float kExp2Magic = 12583039.0f;  // 1.5 * 2^23 + 127
constexpr float kExp2C5 = 0.001327647129073739f, kExp2C4 = 0.009675540961325169f,
                kExp2C3 = 0.05550713092088699f, kExp2C2 = 0.24022120237350464f,
                kExp2C1 = 0.6931469440460205f, kExp2C0 = 1.0000001192092896f;

inline float fast_exp2(float t) {
  if (std::isnan(t)) return t;
  t = t < kExp2Lo ? kExp2Lo : t;
  const float s = t + kExp2Magic;
  const float f = t - (s - kExp2Magic);
  float p = kExp2C5;
  p = p * f + kExp2C4;
  p = p * f + kExp2C3;
  p = p * f + kExp2C2;
  p = p * f + kExp2C1;
  p = p * f + kExp2C0;
  return p * bits_float(float_bits(s) << 23);
}

}  // namespace pyattn::cpu
