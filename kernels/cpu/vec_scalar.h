// One-lane "vector" with the VecF interface: VecScalar<float> is the generic (any CPU)
// path, VecScalar<double> serves fp64 tensors on every ISA. No intrinsics, so it lives
// outside the ISA regions and inlines into any of them.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/fast_exp.h"
#include "cpu/half.h"

namespace pyattn::cpu {

inline float scalar_exp2(float t) { return fast_exp2(t); }     // same polynomial as the SIMD paths
inline double scalar_exp2(double t) { return std::exp2(t); }   // fp64: exact library exp2

template <class A>
struct VecScalar {
  static constexpr int W = 1;
  using value_type = A;
  A v;

  static VecScalar set1(A a) { return {a}; }
  template <class T> static VecScalar load(const T* p) { return {widen(*p)}; }
  template <class T> void store(T* p) const { *p = narrow<T>(v); }
  template <class T> void stream(T* p) const { store(p); }  // no non-temporal scalar store here
  static void stream_fence() {}
  // z where the mask byte is 0, -inf where it is nonzero.
  static VecScalar masked_neg_inf(VecScalar z, const uint8_t* m) { return {*m ? A(-INFINITY) : z.v}; }

  VecScalar operator+(VecScalar b) const { return {v + b.v}; }
  VecScalar operator-(VecScalar b) const { return {v - b.v}; }
  VecScalar operator*(VecScalar b) const { return {v * b.v}; }
  static VecScalar fmadd(VecScalar a, VecScalar b, VecScalar c) { return {a.v * b.v + c.v}; }
  static VecScalar max(VecScalar a, VecScalar b) { return {a.v > b.v ? a.v : b.v}; }
  VecScalar operator/(VecScalar b) const { return {v / b.v}; }
  // a < b ? x : y per lane (false where a or b is NaN).
  static VecScalar select_lt(VecScalar a, VecScalar b, VecScalar x, VecScalar y) { return {a.v < b.v ? x.v : y.v}; }
  static VecScalar exp2(VecScalar a) { return {scalar_exp2(a.v)}; }
  A hsum() const { return v; }
  A hmax() const { return v; }
};

}  // namespace pyattn::cpu
