// Device helpers shared by the CUDA attention kernels (kernels/cuda/attention.cu, version
// 1; kernels/cuda/attention_mma_fwd.cu and attention_mma_bwd.cu, the tensor-core
// kernels): the masking rules, the rows a block owns, the dropout keep mask, with the
// semantics of pyattn/attention.h, and the tensor-core kernels' launch helpers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/launch.cuh"
#include "cuda/storage.cuh"
#include "cuda/switch.cuh"
#include "pyattn/attention.h"
#include "pyattn/dropout_math.h"

namespace pyattn {
namespace attention_cuda {

template <typename A> __device__ __forceinline__ A neg_inf() { return -static_cast<A>(INFINITY); }

// Keys query i may see from the causal / window / length rules: [lo(i), hi(i)).
struct Rules {
  int64_t off, wl, wr, lk;
  __device__ int64_t lo(int64_t i) const { return wl >= 0 ? min(lk, max(int64_t(0), i + off - wl)) : 0; }
  __device__ int64_t hi(int64_t i) const { return wr >= 0 ? min(lk, max(int64_t(0), i + off + wr + 1)) : lk; }
};

__device__ __forceinline__ Rules rules_of(const AttentionShape& s, int64_t b) {
  int64_t lk = s.lk;
  if (s.key_lengths) lk = min(lk, max(int64_t(0), s.key_lengths[b]));
  return {s.diag_offset, s.window_left, s.window_right, lk};
}

// Rows of head h of batch item b of a [batch, heads, rows, ·] tensor.
template <typename T>
__device__ __forceinline__ const T* head_rows(const void* base, const int64_t (&stride)[3], int64_t b, int64_t h) {
  return static_cast<const T*>(base) + b * stride[0] + h * stride[1];
}

// A block of `rows` query rows (forward, dq): blockIdx = (query block, head, batch item),
// the query blocks of a head taken last to first (under causal the last see the most
// keys: started first, they leave the short ones for the tail, as FlashAttention-2
// does), and the key range [kbeg, kend) that any of its rows may see.
struct QueryBlock {
  int64_t b, h, hk, q0, kbeg, kend;
  Rules r;
};

__device__ __forceinline__ QueryBlock query_block(const AttentionShape& s, int rows) {
  QueryBlock qb;
  qb.b = blockIdx.z;
  qb.h = blockIdx.y;
  qb.hk = qb.h / (s.heads_q / s.heads_kv);
  qb.q0 = int64_t(gridDim.x - 1 - blockIdx.x) * rows;
  qb.r = rules_of(s, qb.b);
  qb.kbeg = qb.r.lo(qb.q0);
  qb.kend = qb.r.hi(min(s.lq, qb.q0 + rows) - 1);
  return qb;
}

// Every row of [i0, i1] may see every key of [j0, j1): no mask tensor, and no rule takes
// a key (lo and hi grow with the row, so the first and last rows decide).
__device__ __forceinline__ bool sees_all(const AttentionShape& s, const Rules& r, int64_t i0, int64_t i1, int64_t j0,
                                         int64_t j1) {
  return s.mask_kind == MaskKind::none && r.lo(i1) <= j0 && r.hi(i0) >= j1;
}

// The score z (scale already in) after every mask: -inf where key j is dropped. A boolean
// mask is MaskKind::keep (nonzero = attend).
template <typename T, typename A>
__device__ __forceinline__ A masked(const AttentionShape& s, const Rules& r, int64_t b, int64_t h, int64_t i,
                                    int64_t j, A z) {
  if (j < r.lo(i) || j >= r.hi(i)) return neg_inf<A>();
  if (s.mask_kind == MaskKind::none) return z;
  const int64_t mo = b * s.mask_stride[0] + h * s.mask_stride[1] + i * s.mask_stride[2] + j;
  if (s.mask_kind == MaskKind::keep) return static_cast<const uint8_t*>(s.mask)[mo] ? z : neg_inf<A>();
  return z + to_acc(static_cast<const T*>(s.mask)[mo]);
}

// Dropout row key of query row i of head h, batch item b, as its two 32-bit words.
struct DropRow {
  uint32_t lo, hi;
};

__device__ __forceinline__ DropRow drop_row(const AttentionShape& s, int64_t b, int64_t h, int64_t i) {
  const uint64_t r = dropout_math::row_key(
      dropout_math::head_key(s.dropout_key[0], s.dropout_key[1], uint64_t(b), uint64_t(h)), uint64_t(i));
  return {uint32_t(r), uint32_t(r >> 32)};
}

// keep ? kept : 0 for key column j of a row.
template <typename A>
__device__ __forceinline__ A drop_mult(const AttentionShape& s, DropRow r, int64_t j, A kept) {
  return dropout_math::bits(r.lo, r.hi, uint32_t(j)) >= s.dropout_threshold ? kept : A(0);
}

// D_i - dlse_i for query row i of head h (dO . O over dv).
template <typename T, typename A>
__device__ __forceinline__ A delta(const AttentionBwdParams& p, int64_t b, int64_t h, int64_t i) {
  const AttentionShape& s = p.s;
  const T* o = static_cast<const T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] + i * p.out_stride[2];
  const T* dout = static_cast<const T*>(p.dout) + b * p.dout_stride[0] + h * p.dout_stride[1] + i * p.dout_stride[2];
  A dd = A(0);
  for (int64_t d = 0; d < s.dv; ++d) dd += to_acc(o[d]) * to_acc(dout[d]);
  if (p.dlse) dd -= static_cast<const A*>(p.dlse)[(b * s.heads_q + h) * s.lq + i];
  return dd;
}

// The tensor-core kernels (kernels/cuda/attention_mma_fwd.cu and attention_mma_bwd.cu:
// fp16 / bf16 up to head dim kTcMaxHeadDim, fp32 as 3xTF32 up to kTcMaxHeadDimF32, on
// compute capability 8+): each launches and returns true when it serves p on the current
// device, else returns false and launches nothing (the caller runs version 1).
constexpr int kTcMaxHeadDim = 256;
constexpr int kTcMaxHeadDimF32 = 128;  // fp32 (3xTF32), both passes: its D256 forward spills

// Whether the tensor-core kernels are compiled for T at padded head dim D.
template <typename T>
constexpr bool tc_compiled(int D) {
  return sizeof(T) == 2 || D <= kTcMaxHeadDimF32;
}
bool fwd_tensor_cores(const AttentionFwdParams& p, cudaStream_t stream);
bool bwd_tensor_cores(const AttentionBwdParams& p, cudaStream_t stream);

// Host helpers of those kernels' launchers.

// The device's opt-in shared memory per block when it can run the tensor-core kernels
// (compute capability 8+), else 0.
inline int tc_usable_smem() {
  int dev = 0, major = 0, optin = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    return 0;
  return major >= 8 ? optin : 0;
}

inline bool tc_serves(const AttentionShape& s, int max_head_dim) {
  if (s.dtype == DType::f32) max_head_dim = max_head_dim < kTcMaxHeadDimF32 ? max_head_dim : kTcMaxHeadDimF32;
  else if (s.dtype != DType::f16 && s.dtype != DType::bf16) return false;
  return s.d <= max_head_dim && s.dv <= max_head_dim;
}

// Calls f(T{}, D, DROP) for s's storage type, head dim (the smallest of the compiled Ds,
// ascending, >= max(d, dv); tc_serves checked that one is) and dropout flag.
template <int... Ds, typename F>
void tc_dispatch(const AttentionShape& s, F&& f) {
  with_head_dim<Ds...>(s.d > s.dv ? s.d : s.dv, [&](auto dim) {
    with_bool(s.dropout, [&](auto drop) {
      if (s.dtype == DType::f16) f(__half{}, dim, drop);
      else if (s.dtype == DType::bf16) f(__nv_bfloat16{}, dim, drop);
      else f(float{}, dim, drop);
    });
  });
}

// Launches kernel(args...) on `threads` threads with `bytes` of dynamic shared memory
// (opting in above 48 KiB, per device, so on every launch: it is cheap).
template <typename... P>
void launch_tc(void (*kernel)(P...), int threads, dim3 grid, int bytes, cudaStream_t stream, const P&... args) {
  cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  PYATTN_LAUNCH(grid, threads, bytes, stream, kernel)(args...);
}

}  // namespace attention_cuda
}  // namespace pyattn
