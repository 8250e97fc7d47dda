// CUDA attention backward on tensor cores with mma.sync (fp16 / bf16, and fp32 as 3xTF32;
// compute capability 8+, head dims up to kTcMaxHeadDim, fp32 kTcMaxHeadDimF32, padded
// to 64, 128 or 256), semantics in
// pyattn/attention.h. Tiles, products and accumulator layout: kernels/cuda/attention_mma.cuh.
// P is recomputed from the forward's lse, P = 2^(z·log2e - lse·log2e), and
// dS = P ∘ (dP - D) with D_i = dO_i · O_i - dlse_i (delta()); dropout scales P and dP by
// the keep mask's Z/(1-p). Two kernels, so that no two blocks add into one gradient row
// (deterministic, no atomics), each keeping every product's A operand in registers:
//   dq_mma_kernel    a block owns kBQ queries (warps as in the forward) and walks the
//                    key tiles its rows may see: S = Q Kᵀ and dP = dO Vᵀ (mma_xyt),
//                    dS on the accumulators (and dL/dz into dmask), dQ += dS K (mma_py);
//   dkdv_mma_kernel  a block owns kBKeys keys, its warps 16·kMT keys each, and walks
//                    every query tile of every query head of its GQA group that may see
//                    them: Sᵀ = K Qᵀ and dPᵀ = V dOᵀ (the transposed problem, keys as
//                    rows), then dV += Pᵀ dO and dK += dSᵀ Q (mma_py).
// S and dP are computed in both (7 products where FlashAttention-2's single kernel with
// atomically added dQ does 5): the price of determinism, to be measured on a GPU.
// dq_mma_kernel writes each row's D to p.row_delta, which dkdv_mma_kernel, next on the
// stream, reads: else every key block would recompute it (dv reads per query row). The
// streamed tiles (K, V in the first, mma::KeyTiles as in the forward; Q, dO and their
// rows' lse, D and dropout keys in the second) go through two shared-memory stages by
// cp.async. Masks
// are applied element by element only on tiles where some pair may be masked.
// Tested lane by lane on CPU threads (tests/test_cuda_emulated.py, with
// tests/cuda_emulation/ptx_emulated.h); not yet run on a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
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

// dq_mma_kernel's shape for elements of T: head dim D, kMT m-tiles of 16 queries per warp,
// kBK keys a tile.
template <typename T, int D_, int kMT_, int kBK_>
struct DqTiles {
  static constexpr int D = D_, kMT = kMT_, kBK = kBK_;
  static constexpr int kBQ = kWarps * 16 * kMT;  // query rows per block
  // Dynamic shared memory, in elements of T: Q and dO [kBQ][D], K and V [2 stages][kBK][D].
  static constexpr int kQ = 0, kDo = kBQ * D, kK = 2 * kBQ * D, kV = kK + 2 * kBK * D;
  static constexpr int bytes = (kV + 2 * kBK * D) * int(sizeof(T));
};

// dkdv_mma_kernel's shape for elements of T: head dim D, kMT m-tiles of 16 keys per warp,
// kBQ queries a tile, and the output columns split among kColSplit blocks (each block
// computes Sᵀ and dPᵀ over all D columns, then dK and dV for its D / kColSplit columns:
// at D256, dk and dv whole would take 256 registers a thread).
template <typename T, int D_, int kMT_, int kBQ_, int kColSplit_ = 1>
struct DkdvTiles {
  static constexpr int D = D_, kMT = kMT_, kBQ = kBQ_, kColSplit = kColSplit_;
  static constexpr int kOB = D / 8 / kColSplit;     // 8-column blocks of dk and dv a block owns
  static constexpr int kBKeys = kWarps * 16 * kMT;  // key rows per block
  // Dynamic shared memory: K and V [kBKeys][D], Q and dO [2 stages][kBQ][D] (elements of
  // T), then per stage and query row its lse·log2e, D (floats) and dropout key (DropRow).
  static constexpr int kK = 0, kV = kBKeys * D, kQ = 2 * kBKeys * D, kDo = kQ + 2 * kBQ * D;
  static constexpr int kRowsAt = (kDo + 2 * kBQ * D) * int(sizeof(T));  // bytes
  static constexpr int kLse = kRowsAt, kDelta = kLse + 2 * kBQ * 4, kDrop = kDelta + 2 * kBQ * 4;
  static constexpr int bytes = kDrop + 2 * kBQ * int(sizeof(DropRow));
  static_assert(kBQ <= kThreads, "one thread per query row fills the row data");
};

// The shapes each head dim runs with (ptxas, sm_80 and sm_90: no spills). dk/dv with 64
// queries a tile spills at D64: dk, dv, Sᵀ and dPᵀ all live in registers; at D256 two
// blocks share a key block's columns, and dq takes 32 keys a tile (128 KiB of shared
// memory each). fp32 (3xTF32) dq at D128 spills with 32 keys a tile and takes 16 (96 KiB);
// its dk/dv at D128 fits sm_90 without spills, sm_80 with 4 bytes.
template <typename T, int D>
using DefaultDqTiles = DqTiles<T, D, 1, (D > 128 ? 32 : D <= 64 || sizeof(T) == 2 ? 64 : 16)>;
template <typename T, int D>
using DefaultDkdvTiles = DkdvTiles<T, D, 1, 32, D <= 128 ? 1 : 2>;

template <typename T, typename Tiles, bool DROP>
__global__ void __launch_bounds__(kThreads) dq_mma_kernel(AttentionBwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched there: bwd_tensor_cores checks the device first
#else
  constexpr int D = Tiles::D, kMT = Tiles::kMT, kBK = Tiles::kBK, kBQ = Tiles::kBQ;
  constexpr int kSB = kBK / 8;  // 8-key blocks of a score row
  PYATTN_DYNAMIC_SMEM(smem, 128);
  T* qs = reinterpret_cast<T*>(smem) + Tiles::kQ;
  T* dos = reinterpret_cast<T*>(smem) + Tiles::kDo;
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
  const int64_t last_row = min(s.lq, q0 + kBQ) - 1;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int wrow = warp * 16 * kMT;
  // This lane's rows x = 2·mt + hi (row q0 + wrow + 16·mt + g + 8·hi): lse·log2e (-inf for
  // rows past lq or that saw nothing), D, dropout key, and where its dL/dz goes.
  int64_t row_of[2 * kMT];
  float lse2[2 * kMT], dd[2 * kMT];
  DropRow drop[2 * kMT];
#pragma unroll
  for (int x = 0; x < 2 * kMT; ++x) {
    const int64_t i = q0 + wrow + 16 * (x / 2) + g + 8 * (x % 2);
    const bool live = i < s.lq;
    row_of[x] = i;
    lse2[x] = live ? static_cast<const float*>(p.lse)[(b * s.heads_q + h) * s.lq + i] * float(kLog2e)
                   : neg_inf<float>();
    dd[x] = live ? delta<T, float>(p, b, h, i) : 0.f;
    drop[x] = DROP && live ? drop_row(s, b, h, i) : DropRow{0, 0};
    if (live && t == 0) p.row_delta[(b * s.heads_q + h) * s.lq + i] = dd[x];  // for dkdv_mma_kernel
  }
  T* dmask = static_cast<T*>(p.dmask);
  float dq[kMT][D / 8][4];
  mma::zero(dq);

  const float zscale = float(s.scale), zscale2 = float(s.scale * kLog2e);
  if (kv.count() > 0) {
    const T* q = head_rows<T>(p.q, p.q_stride, b, h);
    const T* dout = head_rows<T>(p.dout, p.dout_stride, b, h);
    const int nq = int(last_row - q0 + 1);
    mma::load_tile<T, D, kBQ>(qs, q, p.q_stride[2], q0, nq, s.d, mma::rows_aligned(q, p.q_stride[2]));
    mma::load_tile<T, D, kBQ>(dos, dout, p.dout_stride[2], q0, nq, s.dv, mma::rows_aligned(dout, p.dout_stride[2]));
  }
  kv.stream([&](int64_t k0, int nk, const T* kt, const T* vt) {
    float sc[kMT][kSB][4], dp[kMT][kSB][4];  // S = Q Kᵀ, dP = dO Vᵀ
    mma::zero(sc);
    mma::zero(dp);
    mma::mma_xyt<T, D>(sc, qs, wrow, kt, 0);
    mma::mma_xyt<T, D>(dp, dos, wrow, vt, 0);

    // sc becomes dS.
    const bool whole = nk == kBK && sees_all(s, r, q0, last_row, k0, k0 + kBK);
    mma::to_log2_scores(sc, whole, zscale2, [&](int x, int j, float raw) {
      return row_of[x] < s.lq && j < nk ? masked<T>(s, r, b, h, row_of[x], k0 + j, raw * zscale) * float(kLog2e)
                                        : neg_inf<float>();
    });
#pragma unroll
    for (int x = 0; x < 2 * kMT; ++x) {
      const int mt = x / 2, hi = x % 2;
      const int64_t i = row_of[x];
      T* dmask_row = dmask && i < s.lq ? dmask + ((b * s.heads_q + h) * s.lq + i) * s.lk : nullptr;
#pragma unroll
      for (int sb = 0; sb < kSB; ++sb)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& z = sc[mt][sb][2 * hi + e];
          const int j = 8 * sb + 2 * t + e;
          float ds = 0.f;
          if (z != neg_inf<float>() && lse2[x] != neg_inf<float>()) {
            float dpv = dp[mt][sb][2 * hi + e];
            if (DROP) dpv = drop_mult(s, drop[x], k0 + j, dpv * float(s.dropout_scale));
            ds = exp2f(z - lse2[x]) * (dpv - dd[x]);
          }
          if (dmask_row && j < nk) dmask_row[k0 + j] = from_acc<T>(ds);
          z = ds;
        }
    }

    // dQ += dS K.
    mma::mma_py<T, D>(dq, sc, kt, 0);
  });

  // dq = scale · Σ dS k.
  float factor[2 * kMT];
#pragma unroll
  for (int x = 0; x < 2 * kMT; ++x) factor[x] = zscale;
  T* dqh = static_cast<T*>(p.dq) + b * p.dq_stride[0] + h * p.dq_stride[1];
  mma::store_rows(dq, factor, dqh, p.dq_stride[2], q0 + wrow, s.lq, s.d);
#endif
}

template <typename T, typename Tiles, bool DROP>
__global__ void __launch_bounds__(kThreads) dkdv_mma_kernel(AttentionBwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched there: bwd_tensor_cores checks the device first
#else
  constexpr int D = Tiles::D, kMT = Tiles::kMT, kBQ = Tiles::kBQ, kBKeys = Tiles::kBKeys, kOB = Tiles::kOB;
  constexpr int kQB = kBQ / 8;  // 8-query blocks of a transposed score row
  PYATTN_DYNAMIC_SMEM(smem, 128);
  T* kbs = reinterpret_cast<T*>(smem) + Tiles::kK;
  T* vbs = reinterpret_cast<T*>(smem) + Tiles::kV;
  T* qs = reinterpret_cast<T*>(smem) + Tiles::kQ;    // stage st at qs + st·kBQ·D
  T* dos = reinterpret_cast<T*>(smem) + Tiles::kDo;  // likewise
  float* lses = reinterpret_cast<float*>(smem + Tiles::kLse);  // stage st at lses + st·kBQ
  float* dds = reinterpret_cast<float*>(smem + Tiles::kDelta);
  DropRow* drs = reinterpret_cast<DropRow*>(smem + Tiles::kDrop);

  const AttentionShape& s = p.s;
  // blockIdx.x: key block x / kColSplit, its dk and dv columns [8·ob0, 8·ob0 + 8·kOB).
  const int64_t b = blockIdx.z, hk = blockIdx.y, j0 = int64_t(blockIdx.x / Tiles::kColSplit) * kBKeys;
  const int ob0 = int(blockIdx.x % Tiles::kColSplit) * kOB;
  const int64_t jlast = min(s.lk, j0 + kBKeys) - 1;
  const int64_t group = s.heads_q / s.heads_kv;
  const Rules r = rules_of(s, b);

  // The query tiles that may see one of the block's keys: a contiguous run, as lo and hi
  // grow with the query.
  const int64_t query_tiles = (s.lq + kBQ - 1) / kBQ;
  auto visible = [&](int64_t tq) {
    const int64_t i0 = tq * kBQ, i1 = min(s.lq, i0 + kBQ) - 1;
    return r.hi(i1) > j0 && r.lo(i0) <= jlast;
  };
  int64_t tq_first = 0;
  while (tq_first < query_tiles && !visible(tq_first)) ++tq_first;
  int64_t tq_end = tq_first;
  while (tq_end < query_tiles && visible(tq_end)) ++tq_end;
  const int64_t per_head = tq_end - tq_first, steps = group * per_head;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int wrow = warp * 16 * kMT;  // the warp's first key row in the block
  const int64_t lane_key = j0 + wrow + g;  // this lane's key rows x = 2·mt + hi: lane_key + 16·mt + 8·hi
  float dk[kMT][kOB][4], dv[kMT][kOB][4];
  mma::zero(dk);
  mma::zero(dv);

  // Step u: query head hk·group + u / per_head, query tile tq_first + u % per_head.
  auto load_step = [&](int64_t u, int stage) {
    const int64_t h = hk * group + u / per_head, i0 = (tq_first + u % per_head) * kBQ;
    const int nq = int(min(int64_t(kBQ), s.lq - i0));
    const T* q = head_rows<T>(p.q, p.q_stride, b, h);
    const T* dout = head_rows<T>(p.dout, p.dout_stride, b, h);
    mma::load_tile<T, D, kBQ>(qs + stage * kBQ * D, q, p.q_stride[2], i0, nq, s.d, mma::rows_aligned(q, p.q_stride[2]));
    mma::load_tile<T, D, kBQ>(dos + stage * kBQ * D, dout, p.dout_stride[2], i0, nq, s.dv,
                              mma::rows_aligned(dout, p.dout_stride[2]));
    if (threadIdx.x < kBQ) {
      const int c = threadIdx.x;
      const int64_t i = i0 + c;
      const bool live = c < nq;
      lses[stage * kBQ + c] =
          live ? static_cast<const float*>(p.lse)[(b * s.heads_q + h) * s.lq + i] * float(kLog2e) : neg_inf<float>();
      dds[stage * kBQ + c] = live ? p.row_delta[(b * s.heads_q + h) * s.lq + i] : 0.f;
      if (DROP) drs[stage * kBQ + c] = live ? drop_row(s, b, h, i) : DropRow{0, 0};
    }
  };
  if (steps > 0) {
    const T* k = head_rows<T>(p.k, p.k_stride, b, hk);
    const T* v = head_rows<T>(p.v, p.v_stride, b, hk);
    const int nkeys = int(jlast - j0 + 1);
    mma::load_tile<T, D, kBKeys>(kbs, k, p.k_stride[2], j0, nkeys, s.d, mma::rows_aligned(k, p.k_stride[2]));
    mma::load_tile<T, D, kBKeys>(vbs, v, p.v_stride[2], j0, nkeys, s.dv, mma::rows_aligned(v, p.v_stride[2]));
    load_step(0, 0);
    ptx::cp_async_commit();
  }

  const float zscale = float(s.scale), zscale2 = float(s.scale * kLog2e);
  for (int64_t u = 0; u < steps; ++u) {
    // Step u's tiles and row data are in for every thread, and every warp is done with
    // the other stage.
    ptx::cp_async_wait<0>();
    __syncthreads();
    if (u + 1 < steps) {
      load_step(u + 1, int((u + 1) % 2));
      ptx::cp_async_commit();
    }
    const int stage = int(u % 2);
    const int64_t h = hk * group + u / per_head, i0 = (tq_first + u % per_head) * kBQ;
    const int nq = int(min(int64_t(kBQ), s.lq - i0));
    const T* qt = qs + stage * kBQ * D;
    const T* dot = dos + stage * kBQ * D;
    const float* lse2 = lses + stage * kBQ;
    const float* ddt = dds + stage * kBQ;
    const DropRow* drt = drs + stage * kBQ;

    float st[kMT][kQB][4], dpt[kMT][kQB][4];  // Sᵀ = K Qᵀ, dPᵀ = V dOᵀ
    mma::zero(st);
    mma::zero(dpt);
    mma::mma_xyt<T, D>(st, kbs, wrow, qt, 0);
    mma::mma_xyt<T, D>(dpt, vbs, wrow, dot, 0);

    // st becomes Pᵀ (dropped), dpt becomes dSᵀ.
    const bool whole = nq == kBQ && jlast - j0 + 1 == kBKeys && sees_all(s, r, i0, i0 + kBQ - 1, j0, j0 + kBKeys);
    mma::to_log2_scores(st, whole, zscale2, [&](int x, int c, float raw) {
      const int64_t j = lane_key + 16 * (x / 2) + 8 * (x % 2);
      return j < s.lk && c < nq ? masked<T>(s, r, b, h, i0 + c, j, raw * zscale) * float(kLog2e) : neg_inf<float>();
    });
#pragma unroll
    for (int x = 0; x < 2 * kMT; ++x) {
      const int mt = x / 2, hi = x % 2;
      const int64_t j = lane_key + 16 * mt + 8 * hi;
#pragma unroll
      for (int qb = 0; qb < kQB; ++qb)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int c = 8 * qb + 2 * t + e;
          float& z = st[mt][qb][2 * hi + e];
          float pd = 0.f, ds = 0.f;
          if (z != neg_inf<float>() && lse2[c] != neg_inf<float>()) {
            const float pj = exp2f(z - lse2[c]);
            const float keep = DROP ? drop_mult(s, drt[c], j, float(s.dropout_scale)) : 1.f;
            pd = pj * keep;
            ds = pj * (dpt[mt][qb][2 * hi + e] * keep - ddt[c]);
          }
          z = pd;
          dpt[mt][qb][2 * hi + e] = ds;
        }
    }

    // dV += Pᵀ dO, dK += dSᵀ Q.
    mma::mma_py<T, D>(dv, st, dot, 0, ob0);
    mma::mma_py<T, D>(dk, dpt, qt, 0, ob0);
  }

  // dk = scale · Σ dSᵀ q, dv = Σ Pᵀ dO.
  float kfactor[2 * kMT], vfactor[2 * kMT];
#pragma unroll
  for (int x = 0; x < 2 * kMT; ++x) kfactor[x] = zscale, vfactor[x] = 1.f;
  const int col0 = 8 * ob0;
  T* dkh = static_cast<T*>(p.dk) + b * p.dk_stride[0] + hk * p.dk_stride[1] + col0;
  T* dvh = static_cast<T*>(p.dv) + b * p.dv_stride[0] + hk * p.dv_stride[1] + col0;
  mma::store_rows(dk, kfactor, dkh, p.dk_stride[2], j0 + wrow, s.lk, s.d - col0);
  mma::store_rows(dv, vfactor, dvh, p.dv_stride[2], j0 + wrow, s.lk, s.dv - col0);
#endif
}

}  // namespace

bool bwd_tensor_cores(const AttentionBwdParams& p, cudaStream_t stream) {
  const AttentionShape& s = p.s;
  if (!tc_serves(s, kTcMaxHeadDim) || !p.row_delta) return false;
  int need = 0;
  tc_dispatch<64, 128, 256>(s, [&](auto t, auto dim, auto) {
    using T = decltype(t);
    constexpr int D = decltype(dim)::value;
    if constexpr (tc_compiled<T>(D)) need = std::max(DefaultDqTiles<T, D>::bytes, DefaultDkdvTiles<T, D>::bytes);
  });
  if (need > tc_usable_smem()) return false;
  tc_dispatch<64, 128, 256>(s, [&](auto t, auto dim, auto drop) {
    using T = decltype(t);
    constexpr int D = decltype(dim)::value;
    constexpr bool DROP = decltype(drop)::value;
    if constexpr (tc_compiled<T>(D)) {
      using Dq = DefaultDqTiles<T, D>;
      using Dkdv = DefaultDkdvTiles<T, D>;
      if (s.lq > 0)
        launch_tc(&dq_mma_kernel<T, Dq, DROP>, kThreads,
                  dim3(unsigned((s.lq + Dq::kBQ - 1) / Dq::kBQ), unsigned(s.heads_q), unsigned(s.batch)), Dq::bytes,
                  stream, p);
      if (s.lk > 0)
        launch_tc(&dkdv_mma_kernel<T, Dkdv, DROP>, kThreads,
                  dim3(unsigned((s.lk + Dkdv::kBKeys - 1) / Dkdv::kBKeys * Dkdv::kColSplit), unsigned(s.heads_kv),
                       unsigned(s.batch)),
                  Dkdv::bytes, stream, p);
    }
  });
  return true;
}

}  // namespace attention_cuda
}  // namespace pyattn
