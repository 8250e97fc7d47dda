// CUDA attention, version 1 (semantics in pyattn/attention.h): simple and exact rather
// than fast. One thread owns one query row (forward, dq) or one key row (dk, dv) with its
// vectors in registers (head dims up to kMaxHeadDim; at 256 they spill to local memory:
// correct, slow); a block of kThreads rows walks
// tiles of keys (or queries) staged in shared memory, with the same online softmax as
// the CPU kernel. Tiles that causal / window / key_lengths rule out are skipped.
// fp16 and bf16 (head dims up to 256) and fp32 (as 3xTF32, up to 128) on sm_80+ run the
// tensor-core kernels of kernels/cuda/attention_mma_fwd.cu and _bwd.cu instead;
// everything else (fp64, older GPUs, larger head dims, shapes whose tiles exceed the
// device's shared memory) runs here.
//
// Backward is two kernels, so no two threads ever add into the same gradient row:
//   dq_kernel    per query: P from the saved lse, dS = P (dO.v - D), dq += dS k
//                (and dL/dz into dmask when asked);
//   dkdv_kernel  per key: loops over every query head of its group and every query
//                tile: dv += P dO, dk += dS q.
// D_i = dO_i . O_i - dlse_i is recomputed where needed (a dot per query per tile).
//
// Dropout (template flag DROP, so the p = 0 kernels are unchanged): the keep mask of
// pyattn/dropout_math.h, the same function of (key, b, h, i, j) as on the CPU. Forward
// acc += Z p v with l over every p and 1/(1-p) folded into 1/l; backward
// dP = (dO . v) Z/(1-p), dS = P (dP - D), dv += P Z/(1-p) dO.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention_common.cuh"
#include "cuda/launch.cuh"
#include "cuda/storage.cuh"
#include "cuda/switch.cuh"
#include "pyattn/attention.h"
#include "pyattn/dropout_math.h"

namespace pyattn {
namespace {

using namespace attention_cuda;

constexpr int kThreads = 64;  // rows (queries or keys) per block, one per thread
constexpr int kMaxHeadDim = kAttentionCudaMaxHeadDim;

__device__ __forceinline__ float exp_acc(float v) { return expf(v); }
__device__ __forceinline__ double exp_acc(double v) { return exp(v); }
__device__ __forceinline__ float log_acc(float v) { return logf(v); }
__device__ __forceinline__ double log_acc(double v) { return log(v); }

// Rows per staged tile: fewer for fp64 and for D 256, so that the two [tile, D] arrays a
// kernel stages (and the forward's score tile) fit in 48 KiB of static shared memory:
// fp32 32 rows (16 at D 256), fp64 16 (8 at D 256).
template <typename A, int D>
constexpr int kTile = (sizeof(A) == 8 ? 16 : 32) * 128 / (D > 128 ? D : 128);

// rows [r0, r0 + n) of a [rows, width] matrix (row stride `stride`) into tile[n][D], as
// A, zero-padded to D columns and kTile rows.
template <typename T, typename A, int D>
__device__ __forceinline__ void stage(A (*tile)[D], const T* src, int64_t stride, int64_t r0, int n, int64_t width) {
  for (int idx = threadIdx.x; idx < kTile<A, D> * D; idx += kThreads) {
    const int j = idx / D, d = idx % D;
    tile[j][d] = (j < n && d < width) ? to_acc(src[(r0 + j) * stride + d]) : A(0);
  }
}

template <typename T, int D, bool DROP>
__global__ void __launch_bounds__(kThreads) fwd_kernel(AttentionFwdParams p) {
  using A = acc_t<T>;
  constexpr int TK = kTile<A, D>;
  __shared__ A ks[TK][D];
  __shared__ A vs[TK][D];
  __shared__ A zs[TK][kThreads];  // this tile's scores, a column per thread
  const AttentionShape& s = p.s;
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kThreads;
  const int64_t i = q0 + threadIdx.x;
  const bool active = i < s.lq;
  const int64_t hk = h / (s.heads_q / s.heads_kv);
  const Rules r = rules_of(s, b);
  const int64_t kbeg = r.lo(q0), kend = r.hi(min(s.lq, q0 + kThreads) - 1);
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
  A* z = &zs[0][threadIdx.x];

  A q[D], acc[D];
  const T* qrow = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1] + i * p.q_stride[2];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    q[d] = active && d < s.d ? to_acc(qrow[d]) * A(s.scale) : A(0);
    acc[d] = A(0);
  }
  A m = neg_inf<A>(), l = A(0);  // invariant: l = sum exp(z - m), acc = sum Z exp(z - m) v, over keys seen
  const DropRow dr = DROP ? drop_row(s, b, h, i) : DropRow{0, 0};

  for (int64_t k0 = kbeg; k0 < kend; k0 += TK) {  // same trip count for every thread of the block
    const int nk = int(min(int64_t(TK), kend - k0));
    __syncthreads();
    stage<T, A, D>(ks, k, p.k_stride[2], k0, nk, s.d);
    stage<T, A, D>(vs, v, p.v_stride[2], k0, nk, s.dv);
    __syncthreads();
    if (!active) continue;
    A mt = neg_inf<A>();
#pragma unroll 1
    for (int j = 0; j < nk; ++j) {
      A dot = A(0);
#pragma unroll
      for (int d = 0; d < D; ++d) dot += q[d] * ks[j][d];
      const A zj = masked<T>(s, r, b, h, i, k0 + j, dot);
      z[j * kThreads] = zj;
      mt = max(mt, zj);
    }
    const A mnew = max(m, mt);
    if (mnew == neg_inf<A>()) continue;  // nothing visible yet
    const A alpha = exp_acc(m - mnew);    // m = -inf: 0
    l *= alpha;
#pragma unroll
    for (int d = 0; d < D; ++d) acc[d] *= alpha;
#pragma unroll 1
    for (int j = 0; j < nk; ++j) {
      const A pj = exp_acc(z[j * kThreads] - mnew);
      l += pj;
      const A pk = DROP ? drop_mult(s, dr, k0 + j, pj) : pj;
#pragma unroll
      for (int d = 0; d < D; ++d) acc[d] += pk * vs[j][d];
    }
    m = mnew;
  }
  if (!active) return;
  const A inv = l > A(0) ? (DROP ? A(s.dropout_scale) : A(1)) / l : A(0);
  T* orow = static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] + i * p.out_stride[2];
#pragma unroll
  for (int d = 0; d < D; ++d)
    if (d < s.dv) orow[d] = from_acc<T>(acc[d] * inv);
  static_cast<A*>(p.lse)[(b * s.heads_q + h) * s.lq + i] = l > A(0) ? m + log_acc(l) : neg_inf<A>();
}

template <typename T, int D, bool DROP>
__global__ void __launch_bounds__(kThreads) dq_kernel(AttentionBwdParams p) {
  using A = acc_t<T>;
  constexpr int TK = kTile<A, D>;
  __shared__ A ks[TK][D];
  __shared__ A vs[TK][D];
  const AttentionShape& s = p.s;
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kThreads;
  const int64_t i = q0 + threadIdx.x;
  const bool active = i < s.lq;
  const int64_t hk = h / (s.heads_q / s.heads_kv);
  const Rules r = rules_of(s, b);
  const int64_t kbeg = r.lo(q0), kend = r.hi(min(s.lq, q0 + kThreads) - 1);
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];

  A q[D], dout[D], dq[D];
  const T* qrow = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1] + i * p.q_stride[2];
  const T* drow = static_cast<const T*>(p.dout) + b * p.dout_stride[0] + h * p.dout_stride[1] + i * p.dout_stride[2];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    q[d] = active && d < s.d ? to_acc(qrow[d]) * A(s.scale) : A(0);
    dout[d] = active && d < s.dv ? to_acc(drow[d]) : A(0);
    dq[d] = A(0);
  }
  const A lse = active ? static_cast<const A*>(p.lse)[(b * s.heads_q + h) * s.lq + i] : neg_inf<A>();
  const A dd = active ? delta<T, A>(p, b, h, i) : A(0);
  T* dmask = p.dmask ? static_cast<T*>(p.dmask) + ((b * s.heads_q + h) * s.lq + i) * s.lk : nullptr;
  const DropRow dr = DROP ? drop_row(s, b, h, i) : DropRow{0, 0};

  for (int64_t k0 = kbeg; k0 < kend; k0 += TK) {
    const int nk = int(min(int64_t(TK), kend - k0));
    __syncthreads();
    stage<T, A, D>(ks, k, p.k_stride[2], k0, nk, s.d);
    stage<T, A, D>(vs, v, p.v_stride[2], k0, nk, s.dv);
    __syncthreads();
    if (!active || lse == neg_inf<A>()) continue;  // nothing attended: zero gradient
#pragma unroll 1
    for (int j = 0; j < nk; ++j) {
      A dot = A(0), dp = A(0);
#pragma unroll
      for (int d = 0; d < D; ++d) {
        dot += q[d] * ks[j][d];
        dp += dout[d] * vs[j][d];
      }
      const A z = masked<T>(s, r, b, h, i, k0 + j, dot);
      const A pj = z == neg_inf<A>() ? A(0) : exp_acc(z - lse);
      if (DROP) dp *= drop_mult(s, dr, k0 + j, A(s.dropout_scale));
      const A ds = pj * (dp - dd);
      if (dmask) dmask[k0 + j] = from_acc<T>(ds);
#pragma unroll
      for (int d = 0; d < D; ++d) dq[d] += ds * ks[j][d];
    }
  }
  if (!active) return;
  T* out = static_cast<T*>(p.dq) + b * p.dq_stride[0] + h * p.dq_stride[1] + i * p.dq_stride[2];
#pragma unroll
  for (int d = 0; d < D; ++d)
    if (d < s.d) out[d] = from_acc<T>(dq[d] * A(s.scale));
}

template <typename T, int D, bool DROP>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(AttentionBwdParams p) {
  using A = acc_t<T>;
  constexpr int TQ = kTile<A, D>;
  __shared__ A qs[TQ][D];
  __shared__ A dos[TQ][D];
  __shared__ A lses[TQ];
  __shared__ A dds[TQ];
  __shared__ DropRow drs[TQ];  // the tile's dropout row keys (DROP only)
  const AttentionShape& s = p.s;
  const int64_t b = blockIdx.z, hk = blockIdx.y, j0 = int64_t(blockIdx.x) * kThreads;
  const int64_t j = j0 + threadIdx.x;
  const int64_t jlast = min(s.lk, j0 + kThreads) - 1;
  const bool active = j < s.lk;
  const int64_t group = s.heads_q / s.heads_kv;
  const Rules r = rules_of(s, b);

  A k[D], v[D], dk[D], dv[D];
  const T* krow = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1] + j * p.k_stride[2];
  const T* vrow = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1] + j * p.v_stride[2];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    k[d] = active && d < s.d ? to_acc(krow[d]) : A(0);
    v[d] = active && d < s.dv ? to_acc(vrow[d]) : A(0);
    dk[d] = dv[d] = A(0);
  }

  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
    const T* dout = static_cast<const T*>(p.dout) + b * p.dout_stride[0] + h * p.dout_stride[1];
    const A* lse = static_cast<const A*>(p.lse) + (b * s.heads_q + h) * s.lq;
    for (int64_t i0 = 0; i0 < s.lq; i0 += TQ) {
      const int nq = int(min(int64_t(TQ), s.lq - i0));
      // Skip query tiles that see none of this block's keys (rules are monotone in i).
      if (r.hi(i0 + nq - 1) <= j0 || r.lo(i0) > jlast) continue;
      __syncthreads();
      stage<T, A, D>(qs, q, p.q_stride[2], i0, nq, s.d);
      stage<T, A, D>(dos, dout, p.dout_stride[2], i0, nq, s.dv);
      if (threadIdx.x < nq) {
        lses[threadIdx.x] = lse[i0 + threadIdx.x];
        dds[threadIdx.x] = delta<T, A>(p, b, h, i0 + threadIdx.x);
        if (DROP) drs[threadIdx.x] = drop_row(s, b, h, i0 + threadIdx.x);
      }
      __syncthreads();
      if (!active) continue;
#pragma unroll 1
      for (int ii = 0; ii < nq; ++ii) {
        if (lses[ii] == neg_inf<A>()) continue;
        A dot = A(0), dp = A(0);
#pragma unroll
        for (int d = 0; d < D; ++d) {
          dot += qs[ii][d] * k[d];
          dp += dos[ii][d] * v[d];
        }
        const A z = masked<T>(s, r, b, h, i0 + ii, j, dot * A(s.scale));
        if (z == neg_inf<A>()) continue;
        const A pj = exp_acc(z - lses[ii]);
        const A mj = DROP ? drop_mult(s, drs[ii], j, A(s.dropout_scale)) : A(1);
        const A ds = pj * (dp * mj - dds[ii]);
        const A pd = pj * mj;  // the probability as the forward used it
#pragma unroll
        for (int d = 0; d < D; ++d) {
          dv[d] += pd * dos[ii][d];
          dk[d] += ds * qs[ii][d];
        }
      }
    }
  }
  if (!active) return;
  T* dkrow = static_cast<T*>(p.dk) + b * p.dk_stride[0] + hk * p.dk_stride[1] + j * p.dk_stride[2];
  T* dvrow = static_cast<T*>(p.dv) + b * p.dv_stride[0] + hk * p.dv_stride[1] + j * p.dv_stride[2];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    if (d < s.d) dkrow[d] = from_acc<T>(dk[d] * A(s.scale));
    if (d < s.dv) dvrow[d] = from_acc<T>(dv[d]);
  }
}

// y = x .* M over [batch, heads, lq, lk]: blocks stride over rows, threads over keys.
template <typename T>
__global__ void __launch_bounds__(256) dropout_kernel(AttentionDropoutParams p) {
  using A = acc_t<T>;
  const int64_t rows = p.batch * p.heads * p.lq;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const AttentionDropoutRow row = attention_dropout_row(p, r);
    const T* x = static_cast<const T*>(p.x) + row.x_offset;
    T* y = static_cast<T*>(p.y) + row.y_offset;
    for (int64_t j = threadIdx.x; j < p.lk; j += blockDim.x) {
      const A m = dropout_math::bits(row.key_lo, row.key_hi, uint32_t(j)) >= p.threshold ? A(p.scale) : A(0);
      y[j] = from_acc<T>(to_acc(x[j]) * m);
    }
  }
}

unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

}  // namespace

void attention_fwd_cuda(const AttentionFwdParams& p, cudaStream stream) {
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  if (fwd_tensor_cores(p, st)) return;  // fp16 / bf16 on sm_80+ (kernels/cuda/attention_mma_*.cu)
  const dim3 grid(blocks_for(p.s.lq), unsigned(p.s.heads_q), unsigned(p.s.batch));
  with_storage(p.s.dtype, [&](auto t) {
    using T = decltype(t);
    with_head_dim<64, 128, kMaxHeadDim>(p.s.d > p.s.dv ? p.s.d : p.s.dv, [&](auto dim) {
      with_bool(p.s.dropout, [&](auto drop) {
        PYATTN_LAUNCH(grid, kThreads, 0, st, fwd_kernel<T, decltype(dim)::value, decltype(drop)::value>)(p);
      });
    });
  });
}

void attention_bwd_cuda(const AttentionBwdParams& p, cudaStream stream) {
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  if (bwd_tensor_cores(p, st)) return;  // fp16 / bf16 on sm_80+ (kernels/cuda/attention_mma_*.cu)
  const dim3 qgrid(blocks_for(p.s.lq), unsigned(p.s.heads_q), unsigned(p.s.batch));
  const dim3 kgrid(blocks_for(p.s.lk), unsigned(p.s.heads_kv), unsigned(p.s.batch));
  with_storage(p.s.dtype, [&](auto t) {
    using T = decltype(t);
    with_head_dim<64, 128, kMaxHeadDim>(p.s.d > p.s.dv ? p.s.d : p.s.dv, [&](auto dim) {
      with_bool(p.s.dropout, [&](auto drop) {
        constexpr int D = decltype(dim)::value;
        constexpr bool DROP = decltype(drop)::value;
        if (p.s.lq > 0) PYATTN_LAUNCH(qgrid, kThreads, 0, st, dq_kernel<T, D, DROP>)(p);
        if (p.s.lk > 0) PYATTN_LAUNCH(kgrid, kThreads, 0, st, dkdv_kernel<T, D, DROP>)(p);
      });
    });
  });
}

void attention_dropout_cuda(const AttentionDropoutParams& p, cudaStream stream) {
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  const int64_t rows = p.batch * p.heads * p.lq;
  const unsigned grid = unsigned(rows < 65536 ? rows : 65536);
  with_storage(p.dtype, [&](auto t) { PYATTN_LAUNCH(grid, 256, 0, st, dropout_kernel<decltype(t)>)(p); });
}

}  // namespace pyattn
