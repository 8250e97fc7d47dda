// CUDA attention backward on tensor cores (fp16 / bf16, compute capability 8+, head dims
// up to kTcMaxHeadDim, padded to 64 or 128), semantics in pyattn/attention.h; the same
// algorithm as the CPU kernel: key tiles, P recomputed from the forward's lse, the
// [lq, lk] scores never leave the chip. WMMA 16x16x16 products, fp32 accumulators,
// operands staged (zero-padded) in shared memory; WMMA's fragment layout is unspecified,
// so scores go through shared memory between the products. The forward has moved to
// mma.sync (kernels/cuda/attention_mma.cu); this backward is next. The two kernels are
// described where they start below.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>

#include "cuda/attention_common.cuh"
#include "cuda/launch.cuh"
#include "cuda/storage.cuh"
#include "cuda/switch.cuh"
#include "pyattn/attention.h"
#include "pyattn/hd_math.h"

namespace pyattn {
namespace attention_cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWarps = 4;
constexpr int kThreadsTc = 32 * kWarps;
constexpr int kBQ = 16 * kWarps;  // query rows per block
constexpr int kBK = 64;           // keys per tile
static_assert(kBQ == kBK, "Q is staged through the K tile");
static_assert(kBK == 64, "the softmax gives each of a row's two lanes every other key: 32 of a tile");
constexpr int kF = 16;            // WMMA fragment side (m16n16k16)

// Row pitches in elements, padded so rows start on different banks; every fragment
// pointer stays 32-byte aligned (WMMA's requirement) as each pitch is a multiple of 16
// bytes and 16 rows of it a multiple of 32.
template <int D> constexpr int kPitchT = D + 8;  // staged K, V (and Q), T
constexpr int kPitchS = kBK + 4;                 // scores, fp32
constexpr int kPitchP = kBK + 8;                 // probabilities, T
template <int D> constexpr int kPitchO = D + 4;  // output staging, fp32

// rows [r0, r0 + n) of a [rows, width] matrix (row stride `stride`) into tile[kBK][pitch],
// zero past n rows and past width columns.
template <typename T, int D>
__device__ __forceinline__ void stage(T* tile, const T* src, int64_t stride, int64_t r0, int n, int64_t width) {
  for (int idx = threadIdx.x; idx < kBK * D; idx += kThreadsTc) {
    const int j = idx / D, d = idx % D;
    tile[j * kPitchT<D> + d] = (j < n && d < width) ? src[(r0 + j) * stride + d] : from_acc<T>(0.f);
  }
}

using AccFrag = wmma::fragment<wmma::accumulator, kF, kF, kF, float>;
template <typename T> using FragA = wmma::fragment<wmma::matrix_a, kF, kF, kF, T, wmma::row_major>;
template <typename T> using FragBc = wmma::fragment<wmma::matrix_b, kF, kF, kF, T, wmma::col_major>;  // B as the rows of Bᵀ
template <typename T> using FragBr = wmma::fragment<wmma::matrix_b, kF, kF, kF, T, wmma::row_major>;

// ---- backward: two kernels, as version 1, so no two blocks add into one gradient row:
//   dq_tc_kernel    a block owns kBQ queries and walks key tiles: S and dP = dO Vᵀ on
//                   tensor cores, dS = P (dP - D) by the lanes (and dL/dz into dmask),
//                   dQ += dS K;
//   dkdv_tc_kernel  a block owns kBK keys and walks every query tile of every query head
//                   of its group that sees them: Sᵀ = K Qᵀ and dPᵀ = V dOᵀ, then
//                   dV += Pᵀ dO and dK += dSᵀ Q.
// P is recomputed from the saved lse; D_i = dO_i . O_i - dlse_i (delta()). P and dS
// are rounded to T for the products, fp32 accumulators.

// Shared memory of dq_tc_kernel, in bytes. Q and dO are staged through the K and V tiles
// once, into fragments; at the end the K and V tiles stage dQ.
template <int D>
struct SmemDq {
  static constexpr int k = 0;                                // [kBK][kPitchT] T
  static constexpr int v = k + kBK * kPitchT<D> * 2;         // [kBK][kPitchT] T
  static constexpr int s = v + kBK * kPitchT<D> * 2;         // per warp [16][kPitchS] f32: scores
  static constexpr int dp = s + kWarps * kF * kPitchS * 4;   // per warp [16][kPitchS] f32: dP
  static constexpr int ds = dp + kWarps * kF * kPitchS * 4;  // per warp [16][kPitchP] T: dS
  static constexpr int bytes = ds + kWarps * kF * kPitchP * 2;
  static_assert(kWarps * kF * kPitchO<D> * 4 <= s, "dQ staging must fit in the K and V tiles");
};

template <typename T, int D, bool DROP>
__global__ void __launch_bounds__(kThreadsTc) dq_tc_kernel(AttentionBwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched there: bwd_tensor_cores checks the device first
#else
  using L = SmemDq<D>;
  PYATTN_DYNAMIC_SMEM(smem, 128);
  T* ks = reinterpret_cast<T*>(smem + L::k);
  T* vs = reinterpret_cast<T*>(smem + L::v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* ss = reinterpret_cast<float*>(smem + L::s) + warp * kF * kPitchS;
  float* dps = reinterpret_cast<float*>(smem + L::dp) + warp * kF * kPitchS;
  T* dss = reinterpret_cast<T*>(smem + L::ds) + warp * kF * kPitchP;

  const AttentionShape& s = p.s;
  const QueryBlock blk = query_block(s, kBQ);
  const int64_t b = blk.b, h = blk.h, q0 = blk.q0, kbeg = blk.kbeg, kend = blk.kend;
  const Rules r = blk.r;
  const T* k = head_rows<T>(p.k, p.k_stride, b, blk.hk);
  const T* v = head_rows<T>(p.v, p.v_stride, b, blk.hk);
  const T* q = head_rows<T>(p.q, p.q_stride, b, h);
  const T* dout = head_rows<T>(p.dout, p.dout_stride, b, h);

  const int row = lane / 2, half = lane % 2;  // two lanes per query row, as in the forward
  const int64_t i = q0 + warp * kF + row;
  const bool active = i < s.lq;
  const float zscale = float(s.scale);
  const float lse2 = active ? static_cast<const float*>(p.lse)[(b * s.heads_q + h) * s.lq + i] * float(kLog2e)
                            : neg_inf<float>();
  const float dd = active ? delta<T, float>(p, b, h, i) : 0.f;
  T* dmask = p.dmask && active ? static_cast<T*>(p.dmask) + ((b * s.heads_q + h) * s.lq + i) * s.lk : nullptr;
  const DropRow dr = DROP && active ? drop_row(s, b, h, i) : DropRow{0, 0};

  FragA<T> qa[D / kF], doa[D / kF];
  const int nq = int(min(int64_t(kBQ), s.lq - q0));
  stage<T, D>(ks, q, p.q_stride[2], q0, nq, s.d);
  stage<T, D>(vs, dout, p.dout_stride[2], q0, nq, s.dv);
  __syncthreads();
#pragma unroll
  for (int kk = 0; kk < D / kF; ++kk) {
    wmma::load_matrix_sync(qa[kk], ks + warp * kF * kPitchT<D> + kk * kF, kPitchT<D>);
    wmma::load_matrix_sync(doa[kk], vs + warp * kF * kPitchT<D> + kk * kF, kPitchT<D>);
  }
  AccFrag dq[D / kF];
#pragma unroll
  for (int f = 0; f < D / kF; ++f) wmma::fill_fragment(dq[f], 0.f);

  for (int64_t k0 = kbeg; k0 < kend; k0 += kBK) {
    const int nk = int(min(int64_t(kBK), kend - k0));
    __syncthreads();
    stage<T, D>(ks, k, p.k_stride[2], k0, nk, s.d);
    stage<T, D>(vs, v, p.v_stride[2], k0, nk, s.dv);
    __syncthreads();

    // S = Q Kᵀ and dP = dO Vᵀ, key column block n.
#pragma unroll
    for (int n = 0; n < kBK / kF; ++n) {
      AccFrag c, e;
      wmma::fill_fragment(c, 0.f);
      wmma::fill_fragment(e, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / kF; ++kk) {
        FragBc<T> kb, vb;
        wmma::load_matrix_sync(kb, ks + n * kF * kPitchT<D> + kk * kF, kPitchT<D>);
        wmma::mma_sync(c, qa[kk], kb, c);
        wmma::load_matrix_sync(vb, vs + n * kF * kPitchT<D> + kk * kF, kPitchT<D>);
        wmma::mma_sync(e, doa[kk], vb, e);
      }
      wmma::store_matrix_sync(ss + n * kF, c, kPitchS, wmma::mem_row_major);
      wmma::store_matrix_sync(dps + n * kF, e, kPitchS, wmma::mem_row_major);
    }
    __syncwarp();

    // dS = P (dP - D), P = 2^(z·log2e - lse·log2e); dropout scales dP by Z/(1-p).
#pragma unroll 4
    for (int c = 0; c < kBK; c += 2) {
      const int j = c + half;
      float ds = 0.f;
      if (active && j < nk && lse2 != neg_inf<float>()) {
        const float z = masked<T>(s, r, b, h, i, k0 + j, ss[row * kPitchS + j] * zscale) * float(kLog2e);
        if (z != neg_inf<float>()) {
          float dpv = dps[row * kPitchS + j];
          if (DROP) dpv = drop_mult(s, dr, k0 + j, dpv * float(s.dropout_scale));
          ds = exp2f(z - lse2) * (dpv - dd);
        }
      }
      if (dmask && j < nk) dmask[k0 + j] = from_acc<T>(ds);
      dss[row * kPitchP + j] = from_acc<T>(ds);
    }
    __syncwarp();

    // dQ += dS K.
    FragA<T> dsa[kBK / kF];
#pragma unroll
    for (int kk = 0; kk < kBK / kF; ++kk) wmma::load_matrix_sync(dsa[kk], dss + kk * kF, kPitchP);
#pragma unroll
    for (int f = 0; f < D / kF; ++f)
#pragma unroll
      for (int kk = 0; kk < kBK / kF; ++kk) {
        FragBr<T> kb;
        wmma::load_matrix_sync(kb, ks + kk * kF * kPitchT<D> + f * kF, kPitchT<D>);
        wmma::mma_sync(dq[f], dsa[kk], kb, dq[f]);
      }
    __syncwarp();
  }

  // dq = scale · Σ dS k, staged through the K and V tiles.
  __syncthreads();
  float* os = reinterpret_cast<float*>(smem + L::k) + warp * kF * kPitchO<D>;
#pragma unroll
  for (int f = 0; f < D / kF; ++f) {
#pragma unroll
    for (int t = 0; t < dq[f].num_elements; ++t) dq[f].x[t] *= zscale;
    wmma::store_matrix_sync(os + f * kF, dq[f], kPitchO<D>, wmma::mem_row_major);
  }
  __syncwarp();
  if (!active) return;
  T* drow = static_cast<T*>(p.dq) + b * p.dq_stride[0] + h * p.dq_stride[1] + i * p.dq_stride[2];
  for (int64_t d = half; d < s.d; d += 2) drow[d] = from_acc<T>(os[row * kPitchO<D> + d]);
#endif
}

// Shared memory of dkdv_tc_kernel, in bytes: the block's keys and values for the whole
// kernel, one query tile and its dO, the per-warp tiles, and per query of the tile its
// lse (base 2), D and dropout row key. At the end the query and dO tiles stage dK, dV.
template <int D>
struct SmemDkdv {
  static constexpr int k = 0;                                // [kBK][kPitchT] T
  static constexpr int v = k + kBK * kPitchT<D> * 2;         // [kBK][kPitchT] T
  static constexpr int q = v + kBK * kPitchT<D> * 2;         // [kBQ][kPitchT] T
  static constexpr int dout = q + kBQ * kPitchT<D> * 2;      // [kBQ][kPitchT] T
  static constexpr int s = dout + kBQ * kPitchT<D> * 2;      // per warp [16][kPitchS] f32: Sᵀ
  static constexpr int dp = s + kWarps * kF * kPitchS * 4;   // per warp [16][kPitchS] f32: dPᵀ
  static constexpr int pt = dp + kWarps * kF * kPitchS * 4;  // per warp [16][kPitchP] T: Pᵀ (dropped)
  static constexpr int ds = pt + kWarps * kF * kPitchP * 2;  // per warp [16][kPitchP] T: dSᵀ
  static constexpr int lse = ds + kWarps * kF * kPitchP * 2; // [kBQ] f32
  static constexpr int delta = lse + kBQ * 4;                // [kBQ] f32
  static constexpr int drop = delta + kBQ * 4;               // [kBQ] DropRow
  static constexpr int bytes = drop + kBQ * int(sizeof(DropRow));
  static_assert(kWarps * kF * kPitchO<D> * 4 <= s - q, "dK / dV staging must fit in the query and dO tiles");
};

template <typename T, int D, bool DROP>
__global__ void __launch_bounds__(kThreadsTc) dkdv_tc_kernel(AttentionBwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched there: bwd_tensor_cores checks the device first
#else
  using L = SmemDkdv<D>;
  PYATTN_DYNAMIC_SMEM(smem, 128);
  T* kbs = reinterpret_cast<T*>(smem + L::k);
  T* vbs = reinterpret_cast<T*>(smem + L::v);
  T* qs = reinterpret_cast<T*>(smem + L::q);
  T* dos = reinterpret_cast<T*>(smem + L::dout);
  float* lses = reinterpret_cast<float*>(smem + L::lse);
  float* dds = reinterpret_cast<float*>(smem + L::delta);
  DropRow* drs = reinterpret_cast<DropRow*>(smem + L::drop);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* ss = reinterpret_cast<float*>(smem + L::s) + warp * kF * kPitchS;
  float* dps = reinterpret_cast<float*>(smem + L::dp) + warp * kF * kPitchS;
  T* pts = reinterpret_cast<T*>(smem + L::pt) + warp * kF * kPitchP;
  T* dss = reinterpret_cast<T*>(smem + L::ds) + warp * kF * kPitchP;

  const AttentionShape& s = p.s;
  const int64_t b = blockIdx.z, hk = blockIdx.y, j0 = int64_t(blockIdx.x) * kBK;
  const int64_t jlast = min(s.lk, j0 + kBK) - 1;
  const int64_t group = s.heads_q / s.heads_kv;
  const Rules r = rules_of(s, b);
  const int row = lane / 2, half = lane % 2;  // two lanes per key row
  const int64_t j = j0 + warp * kF + row;
  const bool active = j < s.lk;
  const float zscale = float(s.scale);

  stage<T, D>(kbs, head_rows<T>(p.k, p.k_stride, b, hk), p.k_stride[2], j0, int(jlast - j0 + 1), s.d);
  stage<T, D>(vbs, head_rows<T>(p.v, p.v_stride, b, hk), p.v_stride[2], j0, int(jlast - j0 + 1), s.dv);
  AccFrag dk[D / kF], dv[D / kF];
#pragma unroll
  for (int f = 0; f < D / kF; ++f) {
    wmma::fill_fragment(dk[f], 0.f);
    wmma::fill_fragment(dv[f], 0.f);
  }

  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    const T* q = head_rows<T>(p.q, p.q_stride, b, h);
    const T* dout = head_rows<T>(p.dout, p.dout_stride, b, h);
    const float* lse = static_cast<const float*>(p.lse) + (b * s.heads_q + h) * s.lq;
    for (int64_t i0 = 0; i0 < s.lq; i0 += kBQ) {
      const int nq = int(min(int64_t(kBQ), s.lq - i0));
      // Skip query tiles that see none of this block's keys (rules are monotone in i).
      if (r.hi(i0 + nq - 1) <= j0 || r.lo(i0) > jlast) continue;
      __syncthreads();
      stage<T, D>(qs, q, p.q_stride[2], i0, nq, s.d);
      stage<T, D>(dos, dout, p.dout_stride[2], i0, nq, s.dv);
      if (threadIdx.x < nq) {
        const int64_t i = i0 + threadIdx.x;
        lses[threadIdx.x] = lse[i] * float(kLog2e);
        dds[threadIdx.x] = delta<T, float>(p, b, h, i);
        if (DROP) drs[threadIdx.x] = drop_row(s, b, h, i);
      }
      __syncthreads();

      // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ, query column block n.
#pragma unroll
      for (int n = 0; n < kBQ / kF; ++n) {
        AccFrag c, e;
        wmma::fill_fragment(c, 0.f);
        wmma::fill_fragment(e, 0.f);
#pragma unroll
        for (int kk = 0; kk < D / kF; ++kk) {
          FragA<T> ka, va;
          FragBc<T> qb, ob;
          wmma::load_matrix_sync(ka, kbs + warp * kF * kPitchT<D> + kk * kF, kPitchT<D>);
          wmma::load_matrix_sync(qb, qs + n * kF * kPitchT<D> + kk * kF, kPitchT<D>);
          wmma::mma_sync(c, ka, qb, c);
          wmma::load_matrix_sync(va, vbs + warp * kF * kPitchT<D> + kk * kF, kPitchT<D>);
          wmma::load_matrix_sync(ob, dos + n * kF * kPitchT<D> + kk * kF, kPitchT<D>);
          wmma::mma_sync(e, va, ob, e);
        }
        wmma::store_matrix_sync(ss + n * kF, c, kPitchS, wmma::mem_row_major);
        wmma::store_matrix_sync(dps + n * kF, e, kPitchS, wmma::mem_row_major);
      }
      __syncwarp();

      // Pᵀ (times the keep mask's Z/(1-p) with dropout) and dSᵀ = Pᵀ (dPᵀ Z/(1-p) - D).
#pragma unroll 4
      for (int c = 0; c < kBQ; c += 2) {
        const int qi = c + half;
        float pd = 0.f, ds = 0.f;
        if (active && qi < nq && lses[qi] != neg_inf<float>()) {
          const int64_t i = i0 + qi;
          const float z = masked<T>(s, r, b, h, i, j, ss[row * kPitchS + qi] * zscale) * float(kLog2e);
          if (z != neg_inf<float>()) {
            const float pj = exp2f(z - lses[qi]);
            const float m = DROP ? drop_mult(s, drs[qi], j, float(s.dropout_scale)) : 1.f;
            pd = pj * m;
            ds = pj * (dps[row * kPitchS + qi] * m - dds[qi]);
          }
        }
        pts[row * kPitchP + qi] = from_acc<T>(pd);
        dss[row * kPitchP + qi] = from_acc<T>(ds);
      }
      __syncwarp();

      // dV += Pᵀ dO and dK += dSᵀ Q.
      FragA<T> pa[kBQ / kF], dsa[kBQ / kF];
#pragma unroll
      for (int kk = 0; kk < kBQ / kF; ++kk) {
        wmma::load_matrix_sync(pa[kk], pts + kk * kF, kPitchP);
        wmma::load_matrix_sync(dsa[kk], dss + kk * kF, kPitchP);
      }
#pragma unroll
      for (int f = 0; f < D / kF; ++f)
#pragma unroll
        for (int kk = 0; kk < kBQ / kF; ++kk) {
          FragBr<T> ob, qb;
          wmma::load_matrix_sync(ob, dos + kk * kF * kPitchT<D> + f * kF, kPitchT<D>);
          wmma::mma_sync(dv[f], pa[kk], ob, dv[f]);
          wmma::load_matrix_sync(qb, qs + kk * kF * kPitchT<D> + f * kF, kPitchT<D>);
          wmma::mma_sync(dk[f], dsa[kk], qb, dk[f]);
        }
      __syncwarp();
    }
  }

  // dk = scale · Σ dSᵀ q, dv = Σ Pᵀ dO: each staged in turn through the query and dO tiles.
  __syncthreads();
  float* os = reinterpret_cast<float*>(smem + L::q) + warp * kF * kPitchO<D>;
  T* dkrow = static_cast<T*>(p.dk) + b * p.dk_stride[0] + hk * p.dk_stride[1] + j * p.dk_stride[2];
  T* dvrow = static_cast<T*>(p.dv) + b * p.dv_stride[0] + hk * p.dv_stride[1] + j * p.dv_stride[2];
#pragma unroll
  for (int f = 0; f < D / kF; ++f) {
#pragma unroll
    for (int t = 0; t < dk[f].num_elements; ++t) dk[f].x[t] *= zscale;
    wmma::store_matrix_sync(os + f * kF, dk[f], kPitchO<D>, wmma::mem_row_major);
  }
  __syncwarp();
  if (active)
    for (int64_t d = half; d < s.d; d += 2) dkrow[d] = from_acc<T>(os[row * kPitchO<D> + d]);
  __syncwarp();
#pragma unroll
  for (int f = 0; f < D / kF; ++f) wmma::store_matrix_sync(os + f * kF, dv[f], kPitchO<D>, wmma::mem_row_major);
  __syncwarp();
  if (active)
    for (int64_t d = half; d < s.dv; d += 2) dvrow[d] = from_acc<T>(os[row * kPitchO<D> + d]);
#endif
}

}  // namespace

bool bwd_tensor_cores(const AttentionBwdParams& p, cudaStream_t stream) {
  const AttentionShape& s = p.s;
  if (!tc_serves(s)) return false;
  const int smem = tc_usable_smem();
  const bool wide = s.d > 64 || s.dv > 64;
  const int need = wide ? std::max(SmemDq<128>::bytes, SmemDkdv<128>::bytes)
                        : std::max(SmemDq<64>::bytes, SmemDkdv<64>::bytes);
  if (need > smem) return false;
  tc_dispatch(s, [&](auto t, auto dim, auto drop) {
    using T = decltype(t);
    constexpr int D = decltype(dim)::value;
    constexpr bool DROP = decltype(drop)::value;
    if (s.lq > 0)
      launch_tc(&dq_tc_kernel<T, D, DROP>, kThreadsTc, dim3(unsigned((s.lq + kBQ - 1) / kBQ), unsigned(s.heads_q), unsigned(s.batch)),
             SmemDq<D>::bytes, stream, p);
    if (s.lk > 0)
      launch_tc(&dkdv_tc_kernel<T, D, DROP>, kThreadsTc,
             dim3(unsigned((s.lk + kBK - 1) / kBK), unsigned(s.heads_kv), unsigned(s.batch)), SmemDkdv<D>::bytes,
             stream, p);
  });
  return true;
}

}  // namespace attention_cuda
}  // namespace pyattn
