// The pieces the mma.sync attention kernels share (kernels/cuda/attention_mma_fwd.cu,
// kernels/cuda/attention_mma_bwd.cu): shared-memory tiles, their loads, and the two
// warp-level products every pass is made of. Layouts of ptx.cuh.
//
// A shared-memory tile holds rows of D 16-bit elements (D, the compiled head dim, 64, 128
// or 256, at least d and dv; zero past them) in 16-byte chunks, chunk c of row r stored at
// c ^ (r % 8): the 8 rows one ldmatrix matrix reads sit in 8 different bank groups,
// without padding.
//
// A warp's accumulators: acc[mt][nb][4] is the 16x8 block (m-tile mt, 8-column block nb)
// of a result, lane 4g + t holding rows g and g + 8 of the m-tile, columns 2t and 2t + 1
// of the block: acc[mt][nb][2·hi + e] is row 16·mt + g + 8·hi, column 8·nb + 2t + e.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/ptx.cuh"
#include "cuda/storage.cuh"

namespace pyattn {
namespace attention_cuda {
namespace mma {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;

// Element offset of (row, 16-byte chunk) in a swizzled tile of D-element rows.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  static_assert(D % 64 == 0, "the swizzle permutes whole groups of 8 chunks");
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// A head's rows can go by cp.async when every row starts 16-byte aligned.
template <typename T>
__device__ __forceinline__ bool rows_aligned(const T* base, int64_t row_stride) {
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && row_stride % 8 == 0;
}

// Rows [r0, r0 + n) of a head's [·, width] matrix of T (row stride `stride` elements)
// into the swizzled tile [R][D]; zeros past n rows and past width columns. The block's
// threads share the chunks. async: by cp.async (the caller commits and waits), else by
// plain loads and stores (visible after the caller's next __syncthreads).
template <typename T, int D, int R>
__device__ __forceinline__ void load_tile(T* tile, const T* src, int64_t stride, int64_t r0, int n, int64_t width,
                                          bool async) {
  constexpr int kChunks = D / 8;
  for (int idx = threadIdx.x; idx < R * kChunks; idx += kThreads) {
    const int row = idx / kChunks, c = idx % kChunks;
    T* dst = tile + swz<D>(row, c);
    const int valid = row < n ? int(min(int64_t(8), max(int64_t(0), width - 8 * c))) : 0;  // elements
    const T* from = src + (r0 + row) * stride + 8 * c;
    if (async && valid > 0) {
      ptx::cp_async_16(dst, from, 2 * valid);
    } else if (async) {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) dst[e] = e < valid ? from[e] : from_acc<T>(0.f);
    }
  }
}

// The K and V tiles of kBK keys that a block of queries walks, [kbeg, kend), through two
// shared-memory stages (each [kBK][D] at ks and vs + stage·kBK·D).
template <typename T, int D, int kBK>
struct KeyTiles {
  T* ks;
  T* vs;
  const T* k;  // the head's rows
  const T* v;
  int64_t k_stride, v_stride, kbeg, kend, d, dv;
  bool k_async, v_async;  // rows_aligned(k, k_stride), rows_aligned(v, v_stride)

  __device__ __forceinline__ int64_t count() const { return kend > kbeg ? (kend - kbeg + kBK - 1) / kBK : 0; }

  __device__ __forceinline__ void load(int64_t tile, int stage) const {
    const int64_t k0 = kbeg + tile * kBK;
    const int nk = int(min(int64_t(kBK), kend - k0));
    load_tile<T, D, kBK>(ks + stage * kBK * D, k, k_stride, k0, nk, d, k_async);
    load_tile<T, D, kBK>(vs + stage * kBK * D, v, v_stride, k0, nk, dv, v_async);
  }

  // body(k0, nk, K tile, V tile) for every tile in order, the next tile's copies in flight
  // while body runs. The caller has issued its own tiles' copies (Q, dO) before: they join
  // the first tile's group.
  template <typename Body>
  __device__ __forceinline__ void stream(Body&& body) const {
    const int64_t tiles = count();
    if (tiles > 0) {
      load(0, 0);
      ptx::cp_async_commit();
    }
    for (int64_t tile = 0; tile < tiles; ++tile) {
      // Tile `tile` has landed for every thread, and every warp is done with the other
      // stage (the previous tile): the next tile's copies go there now.
      ptx::cp_async_wait<0>();
      __syncthreads();
      if (tile + 1 < tiles) {
        load(tile + 1, int((tile + 1) % 2));
        ptx::cp_async_commit();
      }
      const int64_t k0 = kbeg + tile * kBK;
      body(k0, int(min(int64_t(kBK), kend - k0)), ks + (tile % 2) * kBK * D, vs + (tile % 2) * kBK * D);
    }
  }
};

template <int A, int B>
__device__ __forceinline__ void zero(float (&acc)[A][B][4]) {
#pragma unroll
  for (int a = 0; a < A; ++a)
#pragma unroll
    for (int b = 0; b < B; ++b)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[a][b][e] = 0.f;
}

// acc += X Yᵀ for X = rows [x_row, x_row + 16·kMT) of tile x and Y = rows
// [y_row, y_row + 8·kNB) of tile y, over all D columns: S = Q Kᵀ, dP = dO Vᵀ, and the
// transposed Sᵀ = K Qᵀ, dPᵀ = V dOᵀ. Y's rows are the col-major B operand as they are.
// Y's ldmatrix: lanes 0-7 rows 0-7 chunk 2kk, 8-15 rows 0-7 chunk 2kk+1, 16-23 rows 8-15
// chunk 2kk, 24-31 rows 8-15 chunk 2kk+1: registers 0-1 are the B operand of 8-row block
// 2yb, 2-3 of block 2yb + 1.
template <typename T, int D, int kMT, int kNB>
__device__ __forceinline__ void mma_xyt(float (&acc)[kMT][kNB][4], const T* x, int x_row, const T* y, int y_row) {
  static_assert(kNB % 2 == 0, "Y's rows go 16 at a time");
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t xa[kMT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) ptx::ldmatrix_x4(xa[mt], x + swz<D>(x_row + 16 * mt + lane % 16, 2 * kk + lane / 16));
#pragma unroll
    for (int yb = 0; yb < kNB / 2; ++yb) {
      uint32_t yf[4];
      ptx::ldmatrix_x4(yf, y + swz<D>(y_row + 16 * yb + 8 * (lane / 16) + lane % 8, 2 * kk + (lane / 8) % 2));
      const uint32_t lo[2] = {yf[0], yf[1]}, hi[2] = {yf[2], yf[3]};
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        ptx::mma_16816<T>(acc[mt][2 * yb], xa[mt], lo);
        ptx::mma_16816<T>(acc[mt][2 * yb + 1], xa[mt], hi);
      }
    }
  }
}

// acc += P Y for P the warp's [16·kMT, 8·kKB] accumulators (rounded to T: two 8-column
// blocks make one 16-wide A operand, no trip through shared memory) and Y = rows
// [y_row, y_row + 8·kKB) of tile y, all D columns: O += P V, dQ += dS K, dV += Pᵀ dO,
// dK += dSᵀ Q. Y's ldmatrix.trans: lanes 0-7 rows 0-7 chunk 2yc, 8-15 rows 8-15 chunk
// 2yc, 16-23 rows 0-7 chunk 2yc+1, 24-31 rows 8-15 chunk 2yc+1: registers 0-1 are the B
// operand of output block 2yc, 2-3 of block 2yc + 1.
template <typename T, int D, int kMT, int kKB>
__device__ __forceinline__ void mma_py(float (&acc)[kMT][D / 8][4], const float (&p)[kMT][kKB][4], const T* y,
                                       int y_row) {
  static_assert(kKB % 2 == 0, "P's columns go 16 at a time");
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < kKB / 2; ++kk) {
    uint32_t pa[kMT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      pa[mt][0] = ptx::pack2<T>(p[mt][2 * kk][0], p[mt][2 * kk][1]);
      pa[mt][1] = ptx::pack2<T>(p[mt][2 * kk][2], p[mt][2 * kk][3]);
      pa[mt][2] = ptx::pack2<T>(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
      pa[mt][3] = ptx::pack2<T>(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int yc = 0; yc < D / 16; ++yc) {
      uint32_t yf[4];
      ptx::ldmatrix_x4_trans(yf, y + swz<D>(y_row + 16 * kk + 8 * ((lane / 8) % 2) + lane % 8, 2 * yc + lane / 16));
      const uint32_t lo[2] = {yf[0], yf[1]}, hi[2] = {yf[2], yf[3]};
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        ptx::mma_16816<T>(acc[mt][2 * yc], pa[mt], lo);
        ptx::mma_16816<T>(acc[mt][2 * yc + 1], pa[mt], hi);
      }
    }
  }
}

// The steps below work on a warp's accumulators whatever product made them, so a Hopper
// main loop (wgmma, whose accumulators hold the same per-lane pattern of rows g, g + 8
// and column pairs 2t, 2t + 1 in each 8-column block) can reuse them.

// sc (a raw S = Q Kᵀ, or Sᵀ) becomes z·log2e, the scores in base 2: S·scale·log2e when
// `whole` (no element of the tile can be masked), else z_of(x, col, S) for row x = 2·mt + hi
// and column col = 8·nb + 2t + e of the tile. Two loops, so the masked path's registers
// are not live in the plain one.
template <int kMT, int kNB, typename Z>
__device__ __forceinline__ void to_log2_scores(float (&sc)[kMT][kNB][4], bool whole, float scale_log2, Z&& z_of) {
  const int t = threadIdx.x % 4;
  if (whole) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[mt][nb][e] *= scale_log2;
    return;
  }
#pragma unroll
  for (int x = 0; x < 2 * kMT; ++x)
#pragma unroll
    for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& z = sc[x / 2][nb][2 * (x % 2) + e];
        z = z_of(x, 8 * nb + 2 * t + e, z);
      }
}

// One tile of the online softmax over base-2 scores sc: per row x, the running max m[x]
// and this lane's part of the sum l[x] (every probability, kept or dropped) take the
// tile in, the output rows o scale by 2^(m_old - m_new), and sc becomes
// keep(x, col, p) for p = 2^(z - m_new): P as the next product takes it. A row's max is
// two shuffles among its 4 lanes; its sum is left per lane (summed once, at the end).
template <int kMT, int kNB, int kOB, typename Keep>
__device__ __forceinline__ void online_softmax(float (&sc)[kMT][kNB][4], float (&m)[2 * kMT], float (&l)[2 * kMT],
                                               float (&o)[kMT][kOB][4], Keep&& keep) {
  const int t = threadIdx.x % 4;
#pragma unroll
  for (int x = 0; x < 2 * kMT; ++x) {
    const int mt = x / 2, hi = x % 2;
    float tmax = -INFINITY;
#pragma unroll
    for (int nb = 0; nb < kNB; ++nb) tmax = fmaxf(tmax, fmaxf(sc[mt][nb][2 * hi], sc[mt][nb][2 * hi + 1]));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    const float mnew = fmaxf(m[x], tmax);
    // Nothing visible yet (mnew = -inf): shift by 0 so that 2^(-inf) = 0, keep alpha 1.
    const float shift = mnew == -INFINITY ? 0.f : mnew;
    const float alpha = mnew == -INFINITY ? 1.f : exp2f(m[x] - mnew);
    float sum = 0.f;
#pragma unroll
    for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& z = sc[mt][nb][2 * hi + e];
        const float p = exp2f(z - shift);
        sum += p;
        z = keep(x, 8 * nb + 2 * t + e, p);
      }
    l[x] = l[x] * alpha + sum;
    m[x] = mnew;
#pragma unroll
    for (int ob = 0; ob < kOB; ++ob) {
      o[mt][ob][2 * hi] *= alpha;
      o[mt][ob][2 * hi + 1] *= alpha;
    }
  }
}

// Writes the warp's accumulator rows, times factor[2·mt + hi] per row, as T: row
// (first + 16·mt + g + 8·hi) of out (row stride `stride`), columns below width, rows
// below rows only; a lane's two neighbouring columns in one 4-byte store where aligned.
template <typename T, int kMT, int kOB>
__device__ __forceinline__ void store_rows(const float (&acc)[kMT][kOB][4], const float (&factor)[2 * kMT], T* out,
                                           int64_t stride, int64_t first, int64_t rows, int64_t width) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int x = 0; x < 2 * kMT; ++x) {
    const int mt = x / 2, hi = x % 2;
    const int64_t row = first + 16 * mt + g + 8 * hi;
    if (row >= rows) continue;
#pragma unroll
    for (int ob = 0; ob < kOB; ++ob) {
      const int col = 8 * ob + 2 * t;
      T* dst = out + row * stride + col;
      const float v0 = acc[mt][ob][2 * hi] * factor[x], v1 = acc[mt][ob][2 * hi + 1] * factor[x];
      if (col + 1 < width && reinterpret_cast<uintptr_t>(dst) % 4 == 0) {
        *reinterpret_cast<uint32_t*>(dst) = ptx::pack2<T>(v0, v1);  // both columns in one store
      } else {
        if (col < width) dst[0] = from_acc<T>(v0);
        if (col + 1 < width) dst[1] = from_acc<T>(v1);
      }
    }
  }
}

}  // namespace mma
}  // namespace attention_cuda
}  // namespace pyattn
