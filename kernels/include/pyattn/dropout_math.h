// Counter-based dropout mask for attention probabilities, shared by the CPU and CUDA
// kernels (and re-implemented independently in NumPy by pyattn/reference/attention.py),
// so every kernel and the reference drop the same (b, h, i, j) for the same key.
//
// Nothing is stored: whether probability P[b, h, i, j] is kept is a pure function of the
// call's 128-bit key (two 64-bit words drawn from a torch.Generator by the Python API) and
// the element's coordinates, so the backward regenerates the forward's mask and a seed
// reproduces a run. Coordinates: b the op's (flattened) batch item, h the query head, i
// the query row, j the key column (j is taken mod 2^32), all absolute (not block-relative).
//
//   row key  r(b, h, i) = a 64-bit hash of (key0, key1, b, h, i): five rounds of a 64-bit
//            finaliser, once per row, so its cost is spread over the row's lk elements.
//   bits     u(r, j)    = a keyed 32-bit permutation of j (r's low word XORed in first,
//            its high word midway): 2 multiplies per element, vectorisable with 32-bit
//            integer SIMD, and injective in j, so no two keys of a row share bits.
//   keep     u >= threshold, threshold = min(floor(p * 2^32), 2^32 - 1): P(drop) = p to
//            within 2^-32. Kept values are scaled by 1 / (1 - p); p = 1 scales by 0 (all
//            dropped, zeros and not NaN).
#pragma once

#include <cstdint>

#include "pyattn/hd_math.h"

namespace pyattn {
namespace dropout_math {

using ::pyattn::mix64;  // hd_math.h

// The prefix of the row key shared by every row of one (b, h): computed once per head.
PYATTN_HD uint64_t head_key(uint64_t key0, uint64_t key1, uint64_t b, uint64_t h) {
  uint64_t x = mix64(key0 ^ 0x9e3779b97f4a7c15ULL);  // the constant keeps key0 = 0 away from mix64(0) = 0
  x = mix64(x ^ key1);
  x = mix64(x ^ b);
  return mix64(x ^ h);
}

PYATTN_HD uint64_t row_key(uint64_t head, uint64_t i) { return mix64(head ^ i); }

// 32 pseudo-random bits for key column j of the row whose key has words r_lo, r_hi (the
// low and high halves of row_key; kept apart so that CPU loops over rows vectorise in
// 32-bit lanes). Each step (xor with a constant, xorshift, odd multiply) is a bijection
// of uint32, so j -> bits is too. Shifts and multipliers: the low-bias 32-bit integer
// hash found by C. Wellons' hash-prospector search, keyed here by the two xors.
PYATTN_HD uint32_t bits(uint32_t r_lo, uint32_t r_hi, uint32_t j) {
  uint32_t x = j ^ r_lo;
  x ^= x >> 16;
  x *= 0x21f0aaadU;
  x ^= x >> 15;
  x ^= r_hi;
  x *= 0x735a2d97U;
  x ^= x >> 15;
  return x;
}

// keep iff bits >= threshold.
PYATTN_HD uint32_t threshold(double p) {
  const double t = p * 4294967296.0;  // exact: p times a power of two
  return t >= 4294967295.0 ? 0xffffffffU : uint32_t(t);
}

// What a kept probability is multiplied by: 1 / (1 - p), or 0 when p = 1.
PYATTN_HD double keep_scale(double p) { return p < 1.0 ? 1.0 / (1.0 - p) : 0.0; }

}  // namespace dropout_math
}  // namespace pyattn
