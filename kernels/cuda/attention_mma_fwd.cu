// CUDA attention forward on tensor cores with mma.sync (fp16 / bf16, and fp32 as 3xTF32;
// compute capability 8+, head dims up to kTcMaxHeadDim, fp32 kTcMaxHeadDimF32, padded
// to 64, 128 or 256), semantics in
// pyattn/attention.h, in FlashAttention-2's way: key tiles with an online softmax in base
// 2, the [lq, lk] scores never leave the registers. Tiles, products and accumulator
// layout: kernels/cuda/attention_mma.cuh.
//
// A block is kWarps warps and owns kBQ = kWarps·16·kMT query rows; warp w owns kMT
// m-tiles of 16 rows. The block's Q tile is loaded once; K and V tiles of kBK keys
// stream through two shared-memory stages, the next tile's cp.async copies in flight
// while the current one is computed. Per key tile, per warp:
//   S = Q Kᵀ       kMT x kBK/8 accumulators (mma_xyt);
//   softmax        on the accumulators: a row's max is two shuffles among its 4 lanes;
//                  scale and log2e folded in one product where no mask applies, every
//                  mask where one may; the sum l is kept per lane and summed over the 4
//                  lanes once, at the end;
//   O = αO + P V   P rounded to T straight from the S accumulators (mma_py).
// Masks (mask tensor, causal / window, key lengths, the tile's end) are applied element
// by element only on tiles where some row of the block may lose a key; the rest take
// z = S·scale·log2e. Tiles no row of the block can see are never loaded.
// The end: O / l (times 1/(1-p) with dropout) written as T, lse = (m + log2 l)·ln 2.
// Dropout: the keep mask of pyattn/dropout_math.h on P, l takes every probability, as on
// the CPU and in version 1. Tested lane by lane on CPU threads (tests/test_cuda_emulated.py,
// with tests/cuda_emulation/ptx_emulated.h); not yet run on a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention_common.cuh"
#include "cuda/attention_mma.cuh"
#include "cuda/launch.cuh"
#include "cuda/ptx.cuh"
#include "cuda/storage.cuh"
#include "pyattn/attention.h"
#include "pyattn/hd_math.h"

namespace pyattn {
namespace attention_cuda {
namespace {

using mma::kThreads;
using mma::kWarps;
constexpr float kLn2 = 0.693147180559945309f;

// A tile shape for elements of T: head dim D (compiled: 64, 128 or 256), kMT m-tiles of 16
// query rows per warp, kBK keys per key tile.
template <typename T, int D_, int kMT_, int kBK_>
struct FwdTiles {
  static constexpr int D = D_, kMT = kMT_, kBK = kBK_;
  static constexpr int kBQ = kWarps * 16 * kMT;  // query rows per block
  // Dynamic shared memory: Q [kBQ][D], then K and V, each [2 stages][kBK][D], all T.
  static constexpr int kQ = 0, kK = kBQ * D, kV = kK + 2 * kBK * D;  // in elements
  static constexpr int bytes = (kV + 2 * kBK * D) * int(sizeof(T));
  static_assert(D % 64 == 0 && kBK % 16 == 0, "whole swizzle groups and 16-key mma steps");
};

// The shape each head dim runs with: the most rows per warp (and at D256 the most keys a
// tile) that ptxas (sm_90) fits in 255 registers without spilling, with and without
// dropout. fp32 (3xTF32) needs more registers for the split operands, and its tiles
// twice the shared memory: 32 keys a tile (D64: 64 KiB, D128: 96 KiB); at D256 even 16
// keys spill, so fp32 stops at kTcMaxHeadDimF32.
template <typename T, int D>
using DefaultFwdTiles = FwdTiles<T, D, D <= 64 ? 2 : 1, D <= 128 && sizeof(T) == 2 ? 64 : 32>;

template <typename T, typename Tiles, bool DROP>
__global__ void __launch_bounds__(kThreads) fwd_mma_kernel(AttentionFwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched there: fwd_tensor_cores checks the device first
#else
  constexpr int D = Tiles::D, kMT = Tiles::kMT, kBK = Tiles::kBK, kBQ = Tiles::kBQ;
  constexpr int kSB = kBK / 8;  // 8-key blocks of a score row
  constexpr int kOB = D / 8;    // 8-column blocks of an output row
  PYATTN_DYNAMIC_SMEM(smem, 128);
  T* qs = reinterpret_cast<T*>(smem) + Tiles::kQ;
  T* ks = reinterpret_cast<T*>(smem) + Tiles::kK;  // stage st at ks + st·kBK·D
  T* vs = reinterpret_cast<T*>(smem) + Tiles::kV;

  const AttentionShape& s = p.s;
  const QueryBlock blk = query_block(s, kBQ);
  const int64_t b = blk.b, h = blk.h, q0 = blk.q0, kbeg = blk.kbeg, kend = blk.kend;
  const Rules r = blk.r;
  const T* k = head_rows<T>(p.k, p.k_stride, b, blk.hk);
  const T* v = head_rows<T>(p.v, p.v_stride, b, blk.hk);
  const mma::KeyTiles<T, D, kBK> kv{ks, vs, k, v, p.k_stride[2], p.v_stride[2], kbeg, kend, s.d, s.dv,
                                    mma::rows_aligned(k, p.k_stride[2]), mma::rows_aligned(v, p.v_stride[2])};
  const T* q = head_rows<T>(p.q, p.q_stride, b, h);
  const int64_t last_row = min(s.lq, q0 + kBQ) - 1;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int wrow = warp * 16 * kMT;  // the warp's first row in the block
  // This lane's rows: x = 2·mt + hi is row q0 + wrow + 16·mt + g + 8·hi.
  int64_t row_of[2 * kMT];
  DropRow drop[2 * kMT];
#pragma unroll
  for (int x = 0; x < 2 * kMT; ++x) {
    row_of[x] = q0 + wrow + 16 * (x / 2) + g + 8 * (x % 2);
    drop[x] = DROP && row_of[x] < s.lq ? drop_row(s, b, h, row_of[x]) : DropRow{0, 0};
  }
  float m[2 * kMT], l[2 * kMT];  // running max of z·log2e; this lane's part of the sum
  float o[kMT][kOB][4];
#pragma unroll
  for (int x = 0; x < 2 * kMT; ++x) m[x] = neg_inf<float>(), l[x] = 0.f;
  mma::zero(o);

  const float zscale = float(s.scale), zscale2 = float(s.scale * kLog2e);
  if (kv.count() > 0)
    mma::load_tile<T, D, kBQ>(qs, q, p.q_stride[2], q0, int(last_row - q0 + 1), s.d, mma::rows_aligned(q, p.q_stride[2]));
  kv.stream([&](int64_t k0, int nk, const T* kt, const T* vt) {
    // S = Q Kᵀ.
    float sc[kMT][kSB][4];
    mma::zero(sc);
    mma::mma_xyt<T, D>(sc, qs, wrow, kt, 0);

    // Online softmax; sc becomes P (dropped where dropout drops), as float.
    const bool whole = nk == kBK && sees_all(s, r, q0, last_row, k0, k0 + kBK);
    mma::to_log2_scores(sc, whole, zscale2, [&](int x, int j, float raw) {
      return row_of[x] < s.lq && j < nk ? masked<T>(s, r, b, h, row_of[x], k0 + j, raw * zscale) * float(kLog2e)
                                        : neg_inf<float>();
    });
    mma::online_softmax(sc, m, l, o, [&](int x, int j, float pj) {
      return DROP ? drop_mult(s, drop[x], k0 + j, pj) : pj;
    });

    // O += P V.
    mma::mma_py<T, D>(o, sc, vt, 0);
  });

  // out = O / l (times 1/(1-p) with dropout), 0 where nothing was attended.
  float inv[2 * kMT];
#pragma unroll
  for (int x = 0; x < 2 * kMT; ++x) {
    const int64_t i = row_of[x];
    float lrow = l[x] + __shfl_xor_sync(0xffffffffu, l[x], 1);
    lrow += __shfl_xor_sync(0xffffffffu, lrow, 2);
    inv[x] = lrow > 0.f ? (DROP ? float(s.dropout_scale) : 1.f) / lrow : 0.f;
    if (t == 0 && i < s.lq)
      static_cast<float*>(p.lse)[(b * s.heads_q + h) * s.lq + i] =
          lrow > 0.f ? (m[x] + log2f(lrow)) * kLn2 : neg_inf<float>();
  }
  T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1];
  mma::store_rows(o, inv, out, p.out_stride[2], q0 + wrow, s.lq, s.dv);
#endif
}

}  // namespace

bool fwd_tensor_cores(const AttentionFwdParams& p, cudaStream_t stream) {
  const AttentionShape& s = p.s;
  if (!tc_serves(s, kTcMaxHeadDim) || s.lq == 0) return false;
  int need = 0;
  tc_dispatch<64, 128, 256>(s, [&](auto t, auto dim, auto) {
    using T = decltype(t);
    constexpr int D = decltype(dim)::value;
    if constexpr (tc_compiled<T>(D)) need = DefaultFwdTiles<T, D>::bytes;
  });
  if (need > tc_usable_smem()) return false;
  tc_dispatch<64, 128, 256>(s, [&](auto t, auto dim, auto drop) {
    using T = decltype(t);
    constexpr int D = decltype(dim)::value;
    if constexpr (tc_compiled<T>(D)) {
      using Tiles = DefaultFwdTiles<T, D>;
      const dim3 grid(unsigned((s.lq + Tiles::kBQ - 1) / Tiles::kBQ), unsigned(s.heads_q), unsigned(s.batch));
      launch_tc(&fwd_mma_kernel<T, Tiles, decltype(drop)::value>, kThreads, grid, Tiles::bytes, stream, p);
    }
  });
  return true;
}

}  // namespace attention_cuda
}  // namespace pyattn
