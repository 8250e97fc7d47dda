// Storage types for 16-bit floats on the CPU, bit-compatible with torch's Half and
// BFloat16 (and CUDA's __half / __nv_bfloat16), with portable scalar conversions.
// SIMD paths convert whole vectors themselves (F16C, AVX-512); these serve tails and
// the generic path.
#pragma once

#include <cstdint>
#include <cstring>

namespace pyattn::cpu {

struct f16 { uint16_t bits; };
struct bf16 { uint16_t bits; };

inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// widen(): storage -> accumulation type (float for 16/32-bit, double for double).
inline float widen(float v) { return v; }
inline double widen(double v) { return v; }
inline float widen(bf16 v) { return bits_float(uint32_t(v.bits) << 16); }

inline float widen(f16 v) {
  const uint32_t sign = uint32_t(v.bits & 0x8000) << 16;
  const uint32_t exp = (v.bits >> 10) & 0x1f;
  uint32_t mant = v.bits & 0x3ff;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp != 0) return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return bits_float(sign);
  // Subnormal half: value = mant * 2^-24; renormalise into a float.
  int e = -1;
  do { mant <<= 1; ++e; } while (!(mant & 0x400));
  return bits_float(sign | uint32_t(112 - e) << 23 | ((mant & 0x3ff) << 13));
}

// Round to nearest even; NaN stays NaN (quiet), overflow goes to inf.
inline bf16 to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

inline f16 to_f16(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return f16{uint16_t(sign | 0x7e00)};      // nan
  if (a >= 0x477ff000u) return f16{uint16_t(sign | 0x7c00)};     // rounds to >= 65520: inf
  if (a < 0x38800000u) {                                          // below 2^-14: subnormal or 0
    // Adding 0.5 puts the half subnormal step (2^-24) at float's last mantissa bit, so
    // the FPU rounds to nearest even for us; a result of 0x400 is the smallest normal.
    const float r = bits_float(a) + 0.5f;
    return f16{uint16_t(sign | (float_bits(r) - 0x3f000000u))};
  }
  const uint32_t rounded = a + 0x0fffu + ((a >> 13) & 1u);        // round to nearest even
  return f16{uint16_t(sign | ((rounded - 0x38000000u) >> 13))};
}

// narrow<T>(): accumulation type -> storage type T.
template <class T> inline T narrow(float v);
template <> inline float narrow<float>(float v) { return v; }
template <> inline bf16 narrow<bf16>(float v) { return to_bf16(v); }
template <> inline f16 narrow<f16>(float v) { return to_f16(v); }
template <class T> inline T narrow(double v) { static_assert(sizeof(T) == 8); return v; }

}  // namespace pyattn::cpu
