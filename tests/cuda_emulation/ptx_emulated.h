// kernels/cuda/ptx.cuh's instructions on the emulated device of emulate.h, lane by lane
// from the PTX ISA's fragment layouts (written out at the top of ptx.cuh): a warp-wide
// instruction publishes every lane's operands through the block's exchange buffers
// between two warp barriers, then each lane computes its own result registers. So a
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

inline uint32_t* warp_frag_base() {
  return ::emu::t_block->frag.data() + size_t(threadIdx.x - ::emu::lane()) * ::emu::kFragWords;
}

}  // namespace detail

template <typename T>
void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>);
  uint32_t* mine = ::emu::t_block->frag.data() + size_t(threadIdx.x) * ::emu::kFragWords;
  std::copy(a, a + 4, mine);
  std::copy(b, b + 2, mine + 4);
  ::emu::warp_barrier().arrive_and_wait();
  const uint32_t* warp = detail::warp_frag_base();
  // A[r][k] sits in lane 4·(r % 8) + (k % 8) / 2, register (r / 8) + 2·(k / 8), half k % 2;
  // B[k][n] in lane 4·n + (k % 8) / 2, register 4 + k / 8, half k % 2.
  auto a_at = [&](int r, int k) {
    return detail::element<T>(warp[(4 * (r % 8) + (k % 8) / 2) * ::emu::kFragWords + r / 8 + 2 * (k / 8)], k % 2);
  };
  auto b_at = [&](int k, int n) {
    return detail::element<T>(warp[(4 * n + (k % 8) / 2) * ::emu::kFragWords + 4 + k / 8], k % 2);
  };
  const int g = ::emu::lane() / 4, t = ::emu::lane() % 4;
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i / 2), n = 2 * t + i % 2;
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += a_at(r, k) * b_at(k, n);
    d[i] = acc;
  }
  ::emu::warp_barrier().arrive_and_wait();
}

namespace detail {

// ldmatrix .x4, transposed or not: every lane's row address through the exchange buffer.
inline void ldmatrix(uint32_t (&r)[4], const void* row_addr, bool trans) {
  uint64_t* x = ::emu::t_block->xchg.data();
  const int me = int(threadIdx.x), base = me - ::emu::lane();
  x[me] = reinterpret_cast<uintptr_t>(row_addr);
  ::emu::warp_barrier().arrive_and_wait();
  auto at = [&](int matrix, int row, int col) {  // element col of row `row` of matrix `matrix`, 16 bits
    const uint16_t* p = reinterpret_cast<const uint16_t*>(uintptr_t(x[base + 8 * matrix + row]));
    return uint32_t(p[col]);
  };
  const int g = ::emu::lane() / 4, t = ::emu::lane() % 4;
  for (int m = 0; m < 4; ++m)
    r[m] = trans ? at(m, 2 * t, g) | (at(m, 2 * t + 1, g) << 16) : at(m, g, 2 * t) | (at(m, g, 2 * t + 1) << 16);
  ::emu::warp_barrier().arrive_and_wait();
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
  ::emu::t_async_copies.push_back({dst, src, src_bytes, -1});
}

inline void cp_async_commit() {
  int newest = -1;
  for (const auto& c : ::emu::t_async_copies) newest = std::max(newest, c.group);
  for (auto& c : ::emu::t_async_copies)
    if (c.group < 0) c.group = newest + 1;
}

// Lands every committed group but the newest N.
template <int N>
void cp_async_wait() {
  auto& q = ::emu::t_async_copies;
  int newest = -1;
  for (const auto& c : q) newest = std::max(newest, c.group);
  const int keep_from = newest - N + 1;  // groups >= keep_from stay in flight
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
