// kernels/cuda/ptx.cuh's instructions on the emulated device of emulate.h, lane by lane
// from the PTX ISA's fragment layouts (written out at the top of ptx.cuh): a warp-wide
// instruction publishes every lane's operands through a warp exchange (emu::exchange),
// then each lane computes its own result registers from them. So a
// kernel that puts an element in the wrong register, or a row address in the wrong
// lane, gets a wrong answer here as on the GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "emulate.h"

namespace pyattn {
namespace ptx {

namespace detail {

// Element `half` (0: low, 1: high) of a register of two T, as float.
template <typename T>
float element(uint32_t reg, int half) {
  const uint16_t bits = uint16_t(reg >> (16 * half));
  T v;
  std::memcpy(&v, &bits, 2);
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else {
    return __bfloat162float(v);
  }
}

}  // namespace detail

template <typename T>
void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>);
  const uint64_t mine[3] = {a[0] | uint64_t(a[1]) << 32, a[2] | uint64_t(a[3]) << 32, b[0] | uint64_t(b[1]) << 32};
  const uint64_t* warp = ::emu::exchange(mine, 3);
  // Register i of lane l: a[i] for i < 4, b[i - 4] after.
  auto reg = [&](int l, int i) { return uint32_t(warp[l * ::emu::kSlotWords + i / 2] >> (32 * (i % 2))); };
  // A[r][k] sits in lane 4·(r % 8) + (k % 8) / 2, register (r / 8) + 2·(k / 8), half k % 2;
  // B[k][n] in lane 4·n + (k % 8) / 2, register 4 + k / 8, half k % 2.
  auto a_at = [&](int r, int k) { return detail::element<T>(reg(4 * (r % 8) + (k % 8) / 2, r / 8 + 2 * (k / 8)), k % 2); };
  auto b_at = [&](int k, int n) { return detail::element<T>(reg(4 * n + (k % 8) / 2, 4 + k / 8), k % 2); };
  const int g = ::emu::lane() / 4, t = ::emu::lane() % 4;
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i / 2), n = 2 * t + i % 2;
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += a_at(r, k) * b_at(k, n);
    d[i] = acc;
  }
}

// TF32 inputs: the hardware reads the top 19 bits of each register (sign, exponent, 10
// mantissa bits), so the emulation masks the rest off; products of two TF32 values are
// exact in fp32.
inline void mma_1688_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const uint64_t mine[3] = {a[0] | uint64_t(a[1]) << 32, a[2] | uint64_t(a[3]) << 32, b[0] | uint64_t(b[1]) << 32};
  const uint64_t* warp = ::emu::exchange(mine, 3);
  auto reg = [&](int l, int i) { return uint32_t(warp[l * ::emu::kSlotWords + i / 2] >> (32 * (i % 2))); };
  auto tf32 = [](uint32_t bits) {
    bits &= 0xffffe000u;
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  };
  // A[r][k] sits in lane 4·(r % 8) + k % 4, register r / 8 + 2·(k / 4); B[k][n] in lane
  // 4·n + k % 4, register 4 + k / 4.
  auto a_at = [&](int r, int k) { return tf32(reg(4 * (r % 8) + k % 4, r / 8 + 2 * (k / 4))); };
  auto b_at = [&](int k, int n) { return tf32(reg(4 * n + k % 4, 4 + k / 4)); };
  const int g = ::emu::lane() / 4, t = ::emu::lane() % 4;
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i / 2), n = 2 * t + i % 2;
    float acc = d[i];
    for (int k = 0; k < 8; ++k) acc += a_at(r, k) * b_at(k, n);
    d[i] = acc;
  }
}

// cvt.rna.tf32.f32: add half of the last kept bit to the magnitude, then drop the 13
// low bits (ties go away from zero); infinities and NaN pass through.
inline uint32_t to_tf32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u) return bits;
  return (bits + 0x1000u) & 0xffffe000u;
}

namespace detail {

// ldmatrix .x4, transposed or not: every lane's row address through the exchange buffer.
inline void ldmatrix(uint32_t (&r)[4], const void* row_addr, bool trans) {
  const uint64_t mine = reinterpret_cast<uintptr_t>(row_addr);
  const uint64_t* warp = ::emu::exchange(&mine, 1);
  auto at = [&](int matrix, int row, int col) {  // element col of row `row` of matrix `matrix`, 16 bits
    const uint16_t* p = reinterpret_cast<const uint16_t*>(uintptr_t(warp[(8 * matrix + row) * ::emu::kSlotWords]));
    return uint32_t(p[col]);
  };
  const int g = ::emu::lane() / 4, t = ::emu::lane() % 4;
  for (int m = 0; m < 4; ++m)
    r[m] = trans ? at(m, 2 * t, g) | (at(m, 2 * t + 1, g) << 16) : at(m, g, 2 * t) | (at(m, g, 2 * t + 1) << 16);
}

}  // namespace detail

inline void ldmatrix_x4(uint32_t (&r)[4], const void* row_addr) { detail::ldmatrix(r, row_addr, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row_addr) { detail::ldmatrix(r, row_addr, true); }

inline void cp_async_16(void* dst, const void* src, int src_bytes) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 || (src_bytes > 0 && reinterpret_cast<uintptr_t>(src) % 16) ||
      src_bytes < 0 || src_bytes > 16) {
    std::fprintf(stderr, "cuda emulation: cp.async of %d bytes from %p to %p (misaligned or too many)\n", src_bytes,
                 src, dst);
    std::abort();
  }
  // Until the wait the destination is garbage (all-ones bytes: NaN), as on the GPU, where
  // the bytes may land any time after the issue: a read before the wait, or a copy issued
  // into a buffer other warps still read, gives NaN here instead of stale good data.
  std::memset(dst, 0xff, 16);
  ::emu::t_async_copies.push_back({dst, src, src_bytes, -1});
}

// A commit closes a group even when it holds no copy, as on the GPU: kernels that commit
// once per pipeline step, copies or not, count on wait<N> meaning "all but the N newest
// commits".
inline void cp_async_commit() {
  for (auto& c : ::emu::t_async_copies)
    if (c.group < 0) c.group = ::emu::t_async_commits;
  ++::emu::t_async_commits;
}

// Lands every committed group but the newest N.
template <int N>
void cp_async_wait() {
  auto& q = ::emu::t_async_copies;
  const int64_t keep_from = ::emu::t_async_commits - N;  // groups >= keep_from stay in flight
  std::vector<::emu::AsyncCopy> rest;
  for (const auto& c : q) {
    if (c.group >= 0 && c.group < keep_from) {
      std::memset(c.dst, 0, 16);
      std::memcpy(c.dst, c.src, size_t(c.src_bytes));
    } else {
      rest.push_back(c);
    }
  }
  q.swap(rest);
}

}  // namespace ptx
}  // namespace pyattn
