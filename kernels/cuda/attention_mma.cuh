// The pieces the mma.sync attention kernels share (kernels/cuda/attention_mma_fwd.cu,
// kernels/cuda/attention_mma_bwd.cu): shared-memory tiles, their loads, and the two
// warp-level products every pass is made of. Layouts of ptx.cuh.
//
// T is __half or __nv_bfloat16 (mma m16n8k16, one instruction a product step) or float
// (mma m16n8k8 on TF32, three instructions a step: ptx::mma_1688_3xtf32, fp32 accuracy).
//
// A shared-memory tile holds rows of D elements of T (D, the compiled head dim, 64, 128
// or 256, at least d and dv; zero past them) in 16-byte chunks (8 elements of 16 bits, 4
// floats), chunk c of row r stored at c ^ (r % 8): the 8 rows one ldmatrix matrix reads
// sit in 8 different bank groups, without padding.
//
// A warp's accumulators: acc[mt][nb][4] is the 16x8 block (m-tile mt, 8-column block nb)
// of a result, lane 4g + t holding rows g and g + 8 of the m-tile, columns 2t and 2t + 1
// of the block: acc[mt][nb][2·hi + e] is row 16·mt + g + 8·hi, column 8·nb + 2t + e.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/ptx.cuh"
#include "cuda/storage.cuh"

namespace pyattn {
namespace attention_cuda {
namespace mma {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;

// Elements of T in a 16-byte chunk.
template <typename T>
constexpr int kChunk = 16 / int(sizeof(T));

// Element offset of (row, 16-byte chunk) in a swizzled tile of D-element rows.
template <typename T, int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  static_assert(D % (8 * kChunk<T>) == 0, "the swizzle permutes whole groups of 8 chunks");
  return row * D + (chunk ^ (row & 7)) * kChunk<T>;
}

// A head's rows can go by cp.async when every row starts 16-byte aligned.
template <typename T>
__device__ __forceinline__ bool rows_aligned(const T* base, int64_t row_stride) {
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && row_stride % kChunk<T> == 0;
}

// Rows [r0, r0 + n) of a head's [·, width] matrix of T (row stride `stride` elements)
// into the swizzled tile [R][D]; zeros past n rows and past width columns. The block's
// threads share the chunks. async: by cp.async (the caller commits and waits), else by
// plain loads and stores (visible after the caller's next __syncthreads).
template <typename T, int D, int R>
__device__ __forceinline__ void load_tile(T* tile, const T* src, int64_t stride, int64_t r0, int n, int64_t width,
                                          bool async) {
  constexpr int kPer = kChunk<T>, kChunks = D / kPer;
  for (int idx = threadIdx.x; idx < R * kChunks; idx += kThreads) {
    const int row = idx / kChunks, c = idx % kChunks;
    T* dst = tile + swz<T, D>(row, c);
    const int valid = row < n ? int(min(int64_t(kPer), max(int64_t(0), width - kPer * c))) : 0;  // elements
    const T* from = src + (r0 + row) * stride + kPer * c;
    if (async && valid > 0) {
      ptx::cp_async_16(dst, from, int(sizeof(T)) * valid);
    } else if (async) {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    } else {
#pragma unroll
      for (int e = 0; e < kPer; ++e) dst[e] = e < valid ? from[e] : from_acc<T>(0.f);
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

// One product step's operand, N registers (A: 4, B: 2) as mma takes them: as loaded, or
// for float split into TF32 big and small parts.
template <typename T, int N>
struct Frag {
  uint32_t r[N];
  __device__ __forceinline__ void set(const uint32_t (&x)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) r[i] = x[i];
  }
};

template <int N>
struct Frag<float, N> {
  uint32_t big[N], small[N];
  __device__ __forceinline__ void set(const uint32_t (&x)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const ptx::Tf32Pair s = ptx::split_tf32(ptx::float_of(x[i]));
      big[i] = s.big, small[i] = s.small;
    }
  }
};

template <typename T>
__device__ __forceinline__ Frag<T, 2> b_frag(uint32_t b0, uint32_t b1) {
  Frag<T, 2> f;
  f.set({b0, b1});
  return f;
}

// acc += A·B for one product step: an m16n8k16 mma, or three m16n8k8 for float.
template <typename T>
__device__ __forceinline__ void mma_step(float (&acc)[4], const Frag<T, 4>& a, const Frag<T, 2>& b) {
  if constexpr (std::is_same_v<T, float>) {
    ptx::mma_1688_3xtf32(acc, a.big, a.small, b.big, b.small);
  } else {
    ptx::mma_16816<T>(acc, a.r, b.r);
  }
}

// acc += X Yᵀ for X = rows [x_row, x_row + 16·kMT) of tile x and Y = rows
// [y_row, y_row + 8·kNB) of tile y, over all D columns: S = Q Kᵀ, dP = dO Vᵀ, and the
// transposed Sᵀ = K Qᵀ, dPᵀ = V dOᵀ. Y's rows are the col-major B operand as they are.
// A product step kk spans chunks 2kk and 2kk+1 of a row, for every T (16 bytes of 16-bit
// elements are k 0-7, of floats k 0-3, and ldmatrix hands lane 4g + t the 4 bytes at
// 4t of row g: elements 2t, 2t+1 or float t, as either mma wants them).
// X's ldmatrix: lanes 0-15 rows 0-15 chunk 2kk, 16-31 rows 0-15 chunk 2kk+1.
// Y's ldmatrix: lanes 0-7 rows 0-7 chunk 2kk, 8-15 rows 0-7 chunk 2kk+1, 16-23 rows 8-15
// chunk 2kk, 24-31 rows 8-15 chunk 2kk+1: registers 0-1 are the B operand of 8-row block
// 2yb, 2-3 of block 2yb + 1.
template <typename T, int D, int kMT, int kNB>
__device__ __forceinline__ void mma_xyt(float (&acc)[kMT][kNB][4], const T* x, int x_row, const T* y, int y_row) {
  static_assert(kNB % 2 == 0, "Y's rows go 16 at a time");
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < D / (2 * kChunk<T>); ++kk) {
    Frag<T, 4> xa[kMT];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      uint32_t r[4];
      ptx::ldmatrix_x4(r, x + swz<T, D>(x_row + 16 * mt + lane % 16, 2 * kk + lane / 16));
      xa[mt].set(r);
    }
#pragma unroll
    for (int yb = 0; yb < kNB / 2; ++yb) {
      uint32_t yf[4];
      ptx::ldmatrix_x4(yf, y + swz<T, D>(y_row + 16 * yb + 8 * (lane / 16) + lane % 8, 2 * kk + (lane / 8) % 2));
      const Frag<T, 2> lo = b_frag<T>(yf[0], yf[1]), hi = b_frag<T>(yf[2], yf[3]);
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        mma_step<T>(acc[mt][2 * yb], xa[mt], lo);
        mma_step<T>(acc[mt][2 * yb + 1], xa[mt], hi);
      }
    }
  }
}

// acc += P Y for P the warp's [16·kMT, 8·kKB] accumulators and Y = rows
// [y_row, y_row + 8·kKB) of tile y, columns [8·ob0, 8·ob0 + 8·kOB) (kOB 8-column blocks;
// all D columns unless a block owns a part of them): O += P V, dQ += dS K, dV += Pᵀ dO,
// dK += dSᵀ Q. P never goes through shared memory:
// - 16-bit T: P rounded to T; two 8-column blocks are one 16-wide A operand. Y's
//   ldmatrix.trans: lanes 0-7 rows 0-7 chunk 2yc, 8-15 rows 8-15 chunk 2yc, 16-23 rows 0-7
//   chunk 2yc+1, 24-31 rows 8-15 chunk 2yc+1: registers 0-1 are the B operand of output
//   block 2yc, 2-3 of block 2yc + 1.
// - float: one 8-column block is one k step of m16n8k8, whose A wants columns t and t + 4
//   where the accumulator holds 2t and 2t + 1. The product's sum runs over k in any order,
//   so k = t stands for key column 2t and k = t + 4 for 2t + 1, in A and in B alike: B is
//   then Y's rows 2t and 2t + 1 at column g, two 4-byte shared loads (no 32-bit ldmatrix
//   transposes); rows 2t of 8 sit in chunks c ^ {0, 2, 4, 6} and rows 2t + 1 in
//   c ^ {1, 3, 5, 7}, so a warp's 32 loads hit 32 banks.
template <typename T, int D, int kMT, int kKB, int kOB>
__device__ __forceinline__ void mma_py(float (&acc)[kMT][kOB][4], const float (&p)[kMT][kKB][4], const T* y,
                                       int y_row, int ob0 = 0) {
  static_assert(kOB % 2 == 0 && kOB <= D / 8, "output columns go 16 at a time, within D");
  const int lane = threadIdx.x % 32;
  if constexpr (std::is_same_v<T, float>) {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int kb = 0; kb < kKB; ++kb) {
      Frag<float, 4> pa[kMT];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
        pa[mt].set({ptx::bits_of(p[mt][kb][0]), ptx::bits_of(p[mt][kb][2]), ptx::bits_of(p[mt][kb][1]),
                    ptx::bits_of(p[mt][kb][3])});
      const int row = y_row + 8 * kb + 2 * t;
#pragma unroll
      for (int ob = 0; ob < kOB; ++ob) {
        const int col = 8 * (ob0 + ob) + g;
        const float* y0 = y + swz<float, D>(row, col / 4) + col % 4;
        const float* y1 = y + swz<float, D>(row + 1, col / 4) + col % 4;
        const Frag<float, 2> yb = b_frag<float>(ptx::bits_of(*y0), ptx::bits_of(*y1));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) mma_step<float>(acc[mt][ob], pa[mt], yb);
      }
    }
  } else {
    static_assert(kKB % 2 == 0, "P's columns go 16 at a time");
#pragma unroll
    for (int kk = 0; kk < kKB / 2; ++kk) {
      Frag<T, 4> pa[kMT];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
        pa[mt].set({ptx::pack2<T>(p[mt][2 * kk][0], p[mt][2 * kk][1]), ptx::pack2<T>(p[mt][2 * kk][2], p[mt][2 * kk][3]),
                    ptx::pack2<T>(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]),
                    ptx::pack2<T>(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3])});
#pragma unroll
      for (int yc = 0; yc < kOB / 2; ++yc) {
        uint32_t yf[4];
        ptx::ldmatrix_x4_trans(yf, y + swz<T, D>(y_row + 16 * kk + 8 * ((lane / 8) % 2) + lane % 8,
                                                 ob0 + 2 * yc + lane / 16));
        const Frag<T, 2> lo = b_frag<T>(yf[0], yf[1]), hi = b_frag<T>(yf[2], yf[3]);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_step<T>(acc[mt][2 * yc], pa[mt], lo);
          mma_step<T>(acc[mt][2 * yc + 1], pa[mt], hi);
        }
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
// below rows only; a lane's two neighbouring columns in one store where aligned.
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
      if (col + 1 < width && reinterpret_cast<uintptr_t>(dst) % (2 * sizeof(T)) == 0) {
        if constexpr (std::is_same_v<T, float>) *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
        else *reinterpret_cast<uint32_t*>(dst) = ptx::pack2<T>(v0, v1);  // both columns in one store
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
