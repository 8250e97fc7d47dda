// CUDA attention forward on tensor cores (fp16 / bf16, sm_80 and newer, head dims up to
// kTcMaxHeadDim), semantics in pyattn/attention.h; the same algorithm as the CPU kernel:
// key tiles with an online softmax in base 2, the [lq, lk] scores never leave the chip.
//
// A block is kWarps warps and owns kBQ = 16·kWarps query rows; warp w owns rows
// [16w, 16w + 16). Per key tile of kBK keys, staged (zero-padded) in shared memory:
//   S = Q Kᵀ       WMMA 16x16x16, Q's fragments in registers for the whole loop, fp32
//                  accumulators stored to the warp's score tile Ss [16, kBK];
//   softmax        two lanes per row (every other key each): scale, masks, running max m and sum
//                  l, P = 2^(z - m) as T into Ps [16, kBK], the rescale factor of each row
//                  into the warp's alpha tile [16, 16] (every column the row's factor);
//   O = αO + P V   O is kD/16 fp32 accumulator fragments in registers. WMMA does not say
//                  which row a fragment element holds, but fragments of one type share
//                  one element order: the alpha tile loaded as an accumulator fragment
//                  holds each element's row factor at the same index, so O scales
//                  element-wise. Then P V accumulates into O.
// The end: O / l (times 1/(1-p) with dropout) through the same alpha tile, staged in
// shared memory as fp32 and written as T; lse = (m + log2 l)·ln 2.
// Dropout: the keep mask of pyattn/dropout_math.h on P (l takes every probability), as
// on the CPU and in version 1, so the version-1 backward applies unchanged.
// Not yet measured on a GPU (the project's machines had none so far): see the README.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "cuda/attention_common.cuh"
#include "cuda/launch.cuh"
#include "cuda/storage.cuh"
#include "pyattn/attention.h"

namespace pyattn {
namespace attention_cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWarps = 4;
constexpr int kThreadsTc = 32 * kWarps;
constexpr int kBQ = 16 * kWarps;  // query rows per block
constexpr int kBK = 64;           // keys per tile
static_assert(kBQ == kBK, "Q is staged through the K tile");
static_assert(kBK == 64, "the softmax gives each of a row's two lanes 32 of the tile's keys");
constexpr int kF = 16;            // WMMA fragment side (m16n16k16)
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;

// Row pitches in elements, padded so rows start on different banks; every fragment
// pointer stays 32-byte aligned (WMMA's requirement) as each pitch is a multiple of 16
// bytes and 16 rows of it a multiple of 32.
template <int D> constexpr int kPitchT = D + 8;  // staged K, V (and Q), T
constexpr int kPitchS = kBK + 4;                 // scores, fp32
constexpr int kPitchP = kBK + 8;                 // probabilities, T
template <int D> constexpr int kPitchO = D + 4;  // output staging, fp32

// Shared memory layout of one block, in bytes (dynamic shared memory).
template <int D>
struct Smem {
  static constexpr int k = 0;                                          // [kBK][kPitchT] T
  static constexpr int v = k + kBK * kPitchT<D> * 2;                   // [kBK][kPitchT] T
  static constexpr int s = v + kBK * kPitchT<D> * 2;                   // per warp [16][kPitchS] f32
  static constexpr int p = s + kWarps * kF * kPitchS * 4;              // per warp [16][kPitchP] T
  static constexpr int alpha = p + kWarps * kF * kPitchP * 2;          // per warp [16][16] f32
  static constexpr int bytes = alpha + kWarps * kF * kF * 4;
  // The end reuses k and v for the fp32 output rows: per warp [16][kPitchO].
  static_assert(kWarps * kF * kPitchO<D> * 4 <= s, "output staging must fit in the K and V tiles");
};

// rows [r0, r0 + n) of a [rows, width] matrix (row stride `stride`) into tile[kBK][pitch],
// zero past n rows and past width columns.
template <typename T, int D>
__device__ __forceinline__ void stage(T* tile, const T* src, int64_t stride, int64_t r0, int n, int64_t width) {
  for (int idx = threadIdx.x; idx < kBK * D; idx += kThreadsTc) {
    const int j = idx / D, d = idx % D;
    tile[j * kPitchT<D> + d] = (j < n && d < width) ? src[(r0 + j) * stride + d] : from_acc<T>(0.f);
  }
}

// The warp's alpha tile as an accumulator fragment: element t holds its row's factor.
using AccFrag = wmma::fragment<wmma::accumulator, kF, kF, kF, float>;

template <typename T, int D, bool DROP>
__global__ void __launch_bounds__(kThreadsTc) fwd_tc_kernel(AttentionFwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched there: fwd_tensor_cores checks the device first
#else
  using FragA = wmma::fragment<wmma::matrix_a, kF, kF, kF, T, wmma::row_major>;
  using FragBc = wmma::fragment<wmma::matrix_b, kF, kF, kF, T, wmma::col_major>;
  using FragBr = wmma::fragment<wmma::matrix_b, kF, kF, kF, T, wmma::row_major>;
  using L = Smem<D>;
  PYATTN_DYNAMIC_SMEM(smem, 128);
  T* ks = reinterpret_cast<T*>(smem + L::k);
  T* vs = reinterpret_cast<T*>(smem + L::v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* ss = reinterpret_cast<float*>(smem + L::s) + warp * kF * kPitchS;
  T* ps = reinterpret_cast<T*>(smem + L::p) + warp * kF * kPitchP;
  float* at = reinterpret_cast<float*>(smem + L::alpha) + warp * kF * kF;

  const AttentionShape& s = p.s;
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kBQ;
  const int64_t hk = h / (s.heads_q / s.heads_kv);
  const Rules r = rules_of(s, b);
  const int64_t kbeg = r.lo(q0), kend = r.hi(min(s.lq, q0 + kBQ) - 1);
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
  const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];

  // This lane's row (two lanes per row) and its half of each key tile's columns.
  const int row = lane / 2, half = lane % 2;
  const int64_t i = q0 + warp * kF + row;
  const bool active = i < s.lq;
  const float zscale = float(s.scale);
  float m = neg_inf<float>(), l = 0.f;  // base 2: l = sum 2^(z·log2e - m) over keys seen
  const DropRow dr = DROP && active ? drop_row(s, b, h, i) : DropRow{0, 0};

  // Q's rows of the block, staged through the K tile once, into fragments.
  FragA qa[D / kF];
  stage<T, D>(ks, q, p.q_stride[2], q0, int(min(int64_t(kBQ), s.lq - q0)), s.d);
  __syncthreads();
#pragma unroll
  for (int kk = 0; kk < D / kF; ++kk) wmma::load_matrix_sync(qa[kk], ks + warp * kF * kPitchT<D> + kk * kF, kPitchT<D>);
  AccFrag o[D / kF];
#pragma unroll
  for (int f = 0; f < D / kF; ++f) wmma::fill_fragment(o[f], 0.f);

  for (int64_t k0 = kbeg; k0 < kend; k0 += kBK) {  // the same trip count for every warp
    const int nk = int(min(int64_t(kBK), kend - k0));
    __syncthreads();  // every warp is done with the previous tiles (and with Q)
    stage<T, D>(ks, k, p.k_stride[2], k0, nk, s.d);
    stage<T, D>(vs, v, p.v_stride[2], k0, nk, s.dv);
    __syncthreads();

    // S = Q Kᵀ: column block n of the tile is keys [16n, 16n + 16); Kᵀ as a col-major B.
#pragma unroll
    for (int n = 0; n < kBK / kF; ++n) {
      AccFrag c;
      wmma::fill_fragment(c, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / kF; ++kk) {
        FragBc kb;
        wmma::load_matrix_sync(kb, ks + n * kF * kPitchT<D> + kk * kF, kPitchT<D>);
        wmma::mma_sync(c, qa[kk], kb, c);
      }
      wmma::store_matrix_sync(ss + n * kF, c, kPitchS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of this lane's 32 scores (columns 2c + half: the two lanes of a row
    // hit different banks): z in base 2 after every mask.
    float* srow = ss + row * kPitchS + half;
    float tmax = neg_inf<float>();
#pragma unroll 4
    for (int c = 0; c < 64; c += 2) {
      const int j = c + half;
      float z = neg_inf<float>();
      if (active && j < nk) z = masked<T>(s, r, b, h, i, k0 + j, srow[c] * zscale) * kLog2e;
      srow[c] = z;
      tmax = fmaxf(tmax, z);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float mnew = fmaxf(m, tmax);
    // Nothing visible yet (mnew = -inf): shift by 0 so that 2^(-inf) = 0, keep alpha 1.
    const float shift = mnew == neg_inf<float>() ? 0.f : mnew;
    const float alpha = mnew == neg_inf<float>() ? 1.f : exp2f(m - mnew);
    float sum = 0.f;
    T* prow = ps + row * kPitchP + half;
#pragma unroll 4
    for (int c = 0; c < 64; c += 2) {
      const float pj = exp2f(srow[c] - shift);
      sum += pj;
      prow[c] = from_acc<T>(DROP ? drop_mult(s, dr, k0 + c + half, pj) : pj);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum;
    m = mnew;
#pragma unroll
    for (int c = 0; c < 8; ++c) at[row * kF + half * 8 + c] = alpha;
    __syncwarp();

    // O = alpha O + P V.
    AccFrag af;
    wmma::load_matrix_sync(af, at, kF, wmma::mem_row_major);
    FragA pa[kBK / kF];
#pragma unroll
    for (int kk = 0; kk < kBK / kF; ++kk) wmma::load_matrix_sync(pa[kk], ps + kk * kF, kPitchP);
#pragma unroll
    for (int f = 0; f < D / kF; ++f) {
#pragma unroll
      for (int t = 0; t < o[f].num_elements; ++t) o[f].x[t] *= af.x[t];
#pragma unroll
      for (int kk = 0; kk < kBK / kF; ++kk) {
        FragBr vb;
        wmma::load_matrix_sync(vb, vs + kk * kF * kPitchT<D> + f * kF, kPitchT<D>);
        wmma::mma_sync(o[f], pa[kk], vb, o[f]);
      }
    }
    __syncwarp();  // the alpha and P tiles are read before the next tile rewrites them
  }

  // out = O / l (times 1/(1-p) with dropout), 0 where nothing was attended.
  const float inv = l > 0.f ? (DROP ? float(s.dropout_scale) : 1.f) / l : 0.f;
#pragma unroll
  for (int c = 0; c < 8; ++c) at[row * kF + half * 8 + c] = inv;
  __syncwarp();
  AccFrag af;
  wmma::load_matrix_sync(af, at, kF, wmma::mem_row_major);
  __syncthreads();  // every warp is done with the K and V tiles: they become the staging
  float* os = reinterpret_cast<float*>(smem + L::k) + warp * kF * kPitchO<D>;
#pragma unroll
  for (int f = 0; f < D / kF; ++f) {
#pragma unroll
    for (int t = 0; t < o[f].num_elements; ++t) o[f].x[t] *= af.x[t];
    wmma::store_matrix_sync(os + f * kF, o[f], kPitchO<D>, wmma::mem_row_major);
  }
  __syncwarp();
  if (!active) return;
  T* orow = static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] + i * p.out_stride[2];
  for (int64_t d = half; d < s.dv; d += 2) orow[d] = from_acc<T>(os[row * kPitchO<D> + d]);
  if (half == 0)
    static_cast<float*>(p.lse)[(b * s.heads_q + h) * s.lq + i] = l > 0.f ? (m + log2f(l)) * kLn2 : neg_inf<float>();
#endif
}

template <typename T, int D, bool DROP>
bool launch(const AttentionFwdParams& p, cudaStream_t stream, int max_smem_optin) {
  constexpr int bytes = Smem<D>::bytes;
  if (bytes > max_smem_optin) return false;
  // Above 48 KiB a kernel must opt in (per device: so on every launch, it is cheap).
  const void* kernel = reinterpret_cast<const void*>(&fwd_tc_kernel<T, D, DROP>);
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess) return false;
  const dim3 grid(unsigned((p.s.lq + kBQ - 1) / kBQ), unsigned(p.s.heads_q), unsigned(p.s.batch));
  PYATTN_LAUNCH(grid, kThreadsTc, bytes, stream, fwd_tc_kernel<T, D, DROP>)(p);
  return true;
}

template <typename T>
bool launch_typed(const AttentionFwdParams& p, cudaStream_t stream, int max_smem_optin) {
  const int64_t dim = p.s.d > p.s.dv ? p.s.d : p.s.dv;
  if (dim <= 64)
    return p.s.dropout ? launch<T, 64, true>(p, stream, max_smem_optin) : launch<T, 64, false>(p, stream, max_smem_optin);
  return p.s.dropout ? launch<T, 128, true>(p, stream, max_smem_optin) : launch<T, 128, false>(p, stream, max_smem_optin);
}

}  // namespace

bool fwd_tensor_cores(const AttentionFwdParams& p, cudaStream_t stream) {
  const DType dt = p.s.dtype;
  if (dt != DType::f16 && dt != DType::bf16) return false;
  if (p.s.d > kTcMaxHeadDim || p.s.dv > kTcMaxHeadDim || p.s.lq == 0) return false;
  int dev = 0, major = 0, optin = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    return false;
  if (major < 8) return false;
  return dt == DType::f16 ? launch_typed<__half>(p, stream, optin) : launch_typed<__nv_bfloat16>(p, stream, optin);
}

}  // namespace attention_cuda
}  // namespace pyattn
