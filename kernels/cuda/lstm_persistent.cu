// The recurrent loop of a whole LSTM sequence in one persistent CUDA kernel, for small
// batches (semantics in pyattn/lstm.h, LstmSeqCudaFwdParams / LstmSeqCudaBwdParams).
//
// With a few rows per step, the per-step recurrent GEMM is too small to fill a GPU and
// a step's time goes to launches and to reading W_hh again. Here W_hh is read once:
// block b owns hidden units J = [b·U, b·U + U) and keeps its slice of W_hh in shared
// memory for the whole sequence, and the blocks meet at a grid barrier
// (cuda/grid_barrier.cuh) after each step, the only sync. Per step:
//   forward   stage h_prev [n, H] (fp32) in shared memory; the 4U gate rows of J
//             (W_hh rows g·H + j) times h_prev; then the pointwise update of J's units,
//             as cuda/lstm.cu, with x·W_ihᵀ taken from act and J's c kept in shared
//             memory from step to step. Writes y, c_all, act; the barrier publishes y.
//   backward  stage dgates of the step after (in time) [n, 4H]; times the columns J of
//             W_hh gives dh for J's units; the pointwise backward writes J's four gate
//             columns of dgates, and the barrier publishes them for the step before.
// The products are warp dot products: a task is one slice row (or a K-chunk of one,
// when there are fewer rows than warps), lanes stride over K, every batch row at once.
// Both kernels walk the same `steps` as the CPU loop (a dense sequence's are derived, see
// step_at), so a PackedSequence (rows per step that shrink, or grow in reverse) needs
// nothing extra.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/launch.cuh"
#include "cuda/lstm_persistent_common.cuh"
#include "cuda/storage.cuh"
#include "pyattn/lstm.h"

namespace pyattn {
namespace {

using lstm_persistent::aligned;
using lstm_persistent::step_at;

constexpr int kThreads = 256;  // one block per SM (a persistent grid): __launch_bounds__(kThreads, 1)
constexpr int kWarps = kThreads / 32;

// How the hidden units are split among the blocks, and the launch's size.
struct Plan {
  int64_t units;  // hidden units per block (the last block may have fewer)
  int blocks;
  size_t smem;    // bytes of dynamic shared memory
};

struct FwdArgs {
  LstmSeqCudaFwdParams p;
  int64_t units;
};

struct BwdArgs {
  LstmSeqCudaBwdParams p;
  int64_t units;
};

// K-chunks per slice row, so that small slices still give every warp a task.
__host__ __device__ inline int64_t splits_for(int64_t rows) { return rows >= kWarps ? 1 : kWarps / rows; }

// Room for the partial sums of any slice of up to `rows` rows: rows·splits_for(rows) is
// not monotone (3 rows make 6 tasks, 2 rows 8), and the last block's slice is smaller.
__host__ __device__ inline int64_t max_tasks(int64_t rows) {
  return rows * splits_for(rows) > kWarps ? rows * splits_for(rows) : kWarps;
}

// Sums v[r] over the warp for each of the 8 rows with 9 shuffles (not 8 · 5): each
// exchange halves the rows a lane keeps (by lane bits 16, 8, 4) and adds its partner's
// copy of them; two more add up the 4 lanes left with the same row. Returns the sum of
// row warp_row(lane).
static_assert(kLstmPersistentMaxBatch == 8, "warp_sum_rows splits 8 rows");
__device__ __forceinline__ int warp_row(int lane) { return (lane >> 4 & 1) * 4 + (lane >> 3 & 1) * 2 + (lane >> 2 & 1); }

template <typename A>
__device__ A warp_sum_rows(const A (&v)[8], int lane) {
  A v4[4], v2[2];
  const bool hi16 = lane & 16, hi8 = lane & 8, hi4 = lane & 4;
#pragma unroll
  for (int i = 0; i < 4; ++i)
    v4[i] = (hi16 ? v[i + 4] : v[i]) + __shfl_xor_sync(0xffffffffu, hi16 ? v[i] : v[i + 4], 16);
#pragma unroll
  for (int i = 0; i < 2; ++i)
    v2[i] = (hi8 ? v4[i + 2] : v4[i]) + __shfl_xor_sync(0xffffffffu, hi8 ? v4[i] : v4[i + 2], 8);
  A v1 = (hi4 ? v2[1] : v2[0]) + __shfl_xor_sync(0xffffffffu, hi4 ? v2[0] : v2[1], 4);
  v1 += __shfl_xor_sync(0xffffffffu, v1, 2);
  v1 += __shfl_xor_sync(0xffffffffu, v1, 1);
  return v1;
}

// part[(m·S + s)·batch + r] = Σ_{k in chunk s} a[r·K + k]·b[m·K + k], for slice rows
// m < M, chunks s < S (splits_for(M)), batch rows r < n; rows n..batch-1 are not written.
// a: [n, K] fp32/fp64 staged rows; b: [M, K] the weight slice.
template <typename T, typename A>
__device__ void slice_products(const A* a, int n, const T* b, int64_t M, int64_t K, int batch, A* part) {
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t S = splits_for(M), chunk = (K + S - 1) / S;
  for (int64_t task = warp; task < M * S; task += kWarps) {
    const int64_t m = task / S, k0 = (task % S) * chunk, k1 = min(K, k0 + chunk);
    A acc[kLstmPersistentMaxBatch] = {};
    for (int64_t k = k0 + lane; k < k1; k += 32) {
      const A w = to_acc(b[m * K + k]);
#pragma unroll
      for (int r = 0; r < kLstmPersistentMaxBatch; ++r)
        if (r < n) acc[r] += a[r * K + k] * w;
    }
    const A sum = warp_sum_rows(acc, lane);
    const int r = warp_row(lane);
    if ((lane & 3) == 0 && r < n) part[task * batch + r] = sum;
  }
}

// Σ over the chunks of slice row m, batch row r (after slice_products and a sync).
template <typename A>
__device__ A slice_sum(const A* part, int64_t m, int64_t S, int batch, int r) {
  A v = 0;
  for (int64_t s = 0; s < S; ++s) v += part[(m * S + s) * batch + r];
  return v;
}

// ------------------------------------------------------------------------------ forward

// Shared memory: w [4U, H] (T) | h_prev [batch, H] (A) | part [tasks, batch] (A) | c [batch, U] (A)
template <typename T>
size_t fwd_smem(int64_t units, int64_t hidden, int batch) {
  using A = acc_t<T>;
  const int64_t M = 4 * units, tasks = max_tasks(M);
  return aligned(M * hidden * sizeof(T)) + aligned(batch * hidden * sizeof(A)) + aligned(tasks * batch * sizeof(A)) +
         aligned(batch * units * sizeof(A));
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) lstm_seq_fwd_persistent_kernel(const FwdArgs args) {
  using A = acc_t<T>;
  const LstmSeqCudaFwdParams& p = args.p;
  const int64_t H = p.hidden, j0 = int64_t(blockIdx.x) * args.units, U = min(args.units, H - j0), M = 4 * U;
  const int64_t S = splits_for(M);
  const int batch = int(p.batch);
  PYATTN_DYNAMIC_SMEM(smem, 16);
  T* w = reinterpret_cast<T*>(smem);  // row m = g·U + u is W_hh's row g·H + j0 + u
  A* h_prev = reinterpret_cast<A*>(smem + aligned(4 * args.units * H * sizeof(T)));
  A* part = reinterpret_cast<A*>(reinterpret_cast<unsigned char*>(h_prev) + aligned(batch * H * sizeof(A)));
  const int64_t tasks = max_tasks(4 * args.units);
  A* c_own = reinterpret_cast<A*>(reinterpret_cast<unsigned char*>(part) + aligned(tasks * batch * sizeof(A)));

  const T* w_hh = static_cast<const T*>(p.w_hh);
  for (int64_t e = threadIdx.x; e < M * H; e += kThreads) {
    const int64_t m = e / H, k = e - m * H;
    w[e] = w_hh[((m / U) * H + j0 + m % U) * H + k];
  }
  const T* h0 = static_cast<const T*>(p.h0);
  const T* y = static_cast<const T*>(p.y);

  // Row r continues from the previous step's row r if that step had it, else starts
  // from h0 / c0 (as the CPU loop).
  const auto product = [&](const LstmStep& prev, const LstmStep& cur) {
    const int n = int(cur.n), pn = int(prev.n);
    for (int64_t e = threadIdx.x; e < n * H; e += kThreads) {
      const int64_t r = e / H, k = e - r * H;
      h_prev[e] = r < pn ? to_acc(__ldcg(y + (prev.off + r) * H + k)) : to_acc(h0[r * H + k]);
    }
    __syncthreads();  // h_prev staged (and, the first time, w loaded)
    slice_products(h_prev, n, w, M, H, batch, part);
    __syncthreads();
  };
  lstm_persistent::fwd_loop<T>(p, j0, U, c_own, kThreads, product,
                               [&](int r, int64_t m) { return slice_sum(part, m, S, batch, r); });
}

// ----------------------------------------------------------------------------- backward

// Shared memory: wt [U, 4H] (T) | dgates staged [batch, 4H] (A) | part [tasks, batch] (A)
//                | dc [batch, U] (A) | dz [batch, 4U] (A) | dbias [4U] (A)
template <typename T>
size_t bwd_smem(int64_t units, int64_t hidden, int batch) {
  using A = acc_t<T>;
  const int64_t tasks = max_tasks(units);
  return aligned(units * 4 * hidden * sizeof(T)) + aligned(batch * 4 * hidden * sizeof(A)) +
         aligned(tasks * batch * sizeof(A)) + aligned(batch * units * sizeof(A)) +
         aligned(batch * 4 * units * sizeof(A)) + aligned(4 * units * sizeof(A));
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) lstm_seq_bwd_persistent_kernel(const BwdArgs args) {
  using A = acc_t<T>;
  const LstmSeqCudaBwdParams& p = args.p;
  const int64_t H = p.hidden, H4 = 4 * H, j0 = int64_t(blockIdx.x) * args.units, U = min(args.units, H - j0);
  const int64_t S = splits_for(U);
  const int batch = int(p.batch);
  PYATTN_DYNAMIC_SMEM(smem, 16);
  T* wt = reinterpret_cast<T*>(smem);  // row u is W_hh's column j0 + u
  A* dg_next = reinterpret_cast<A*>(smem + aligned(args.units * H4 * sizeof(T)));
  A* part = reinterpret_cast<A*>(reinterpret_cast<unsigned char*>(dg_next) + aligned(batch * H4 * sizeof(A)));
  const int64_t tasks = max_tasks(args.units);
  A* dc_own = reinterpret_cast<A*>(reinterpret_cast<unsigned char*>(part) + aligned(tasks * batch * sizeof(A)));
  A* dz_own = reinterpret_cast<A*>(reinterpret_cast<unsigned char*>(dc_own) + aligned(batch * args.units * sizeof(A)));
  A* db_own =
      reinterpret_cast<A*>(reinterpret_cast<unsigned char*>(dz_own) + aligned(batch * 4 * args.units * sizeof(A)));

  const T* w_hh = static_cast<const T*>(p.w_hh);
  for (int64_t e = threadIdx.x; e < U * H4; e += kThreads) {  // u fastest: U-long runs of a row
    const int64_t q = e / U, u = e - q * U;
    wt[u * H4 + q] = w_hh[q * H + j0 + u];
  }
  for (int64_t e = threadIdx.x; e < 4 * U; e += kThreads) db_own[e] = 0;
  const T* dgates = static_cast<const T*>(p.dgates);
  __syncthreads();
  const auto product = [&](const LstmStep& after) {
    for (int64_t e = threadIdx.x; e < after.n * H4; e += kThreads)
      dg_next[e] = to_acc(__ldcg(dgates + after.off * H4 + e));
    __syncthreads();
    slice_products(dg_next, int(after.n), wt, U, H4, batch, part);
    __syncthreads();
  };
  lstm_persistent::bwd_loop<T>(p, j0, U, dc_own, dz_own, db_own, kThreads, product,
                               [&](int r, int64_t u) { return slice_sum(part, u, S, batch, r); });
}

// ------------------------------------------------------------------------------- host

// The smallest slice that lets every block be resident at once, or blocks = 0 when
// this device cannot run the persistent kernels for the shape.
template <typename Kernel>
Plan plan_for(Kernel kernel, size_t (*smem_for)(int64_t, int64_t, int), int64_t batch, int64_t hidden) {
  Plan none{0, 0, 0};
  if (batch < 1 || batch > kLstmPersistentMaxBatch || hidden < 1) return none;
  int dev = 0, sms = 0, coop = 0, optin = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return none;
  }
  if (!coop || sms < 1) return none;
  const int64_t units = (hidden + sms - 1) / sms;
  const size_t smem = smem_for(units, hidden, int(batch));
  if (smem > size_t(optin)) return none;
  // The opt-in maximum, the same value on every call: threads launching other sizes
  // cannot lower it under each other.
  int per_sm = 0;
  if (cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                           optin) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem) != cudaSuccess) {
    (void)cudaGetLastError();  // declined: leave no error for the caller's loop to trip on
    return none;
  }
  const int blocks = int((hidden + units - 1) / units);
  if (int64_t(per_sm) * sms < blocks) return none;
  return {units, blocks, smem};
}

// Zeroes the barrier counter and launches kernel cooperatively on the plan for p;
// false (and nothing launched) when there is none or the launch fails.
template <typename Params, typename Args>
bool launch_persistent(void (*kernel)(Args), size_t (*smem_for)(int64_t, int64_t, int), const Params& p,
                       cudaStream stream) {
  const Plan plan = plan_for(kernel, smem_for, p.batch, p.hidden);
  if (!plan.blocks || p.nsteps < 1) return false;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const Args args{p, plan.units};
  if (cudaMemsetAsync(p.barrier, 0, sizeof(unsigned), s) == cudaSuccess &&
      PYATTN_LAUNCH_COOPERATIVE(plan.blocks, kThreads, plan.smem, s, kernel, args) == cudaSuccess)
    return true;
  (void)cudaGetLastError();  // clear the error: the caller's loop runs instead
  return false;
}

}  // namespace

bool lstm_seq_fwd_persistent_cuda(const LstmSeqCudaFwdParams& p, cudaStream stream) {
  if (p.batch > kLstmPersistentMaxBatch) return lstm_seq_fwd_persistent_mma_cuda(p, stream);
  bool launched = false;
  with_storage(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    launched = launch_persistent(lstm_seq_fwd_persistent_kernel<T>, &fwd_smem<T>, p, stream);
  });
  return launched;
}

bool lstm_seq_bwd_persistent_cuda(const LstmSeqCudaBwdParams& p, cudaStream stream) {
  if (p.batch > kLstmPersistentMaxBatch) return lstm_seq_bwd_persistent_mma_cuda(p, stream);
  bool launched = false;
  with_storage(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    launched = launch_persistent(lstm_seq_bwd_persistent_kernel<T>, &bwd_smem<T>, p, stream);
  });
  return launched;
}

}  // namespace pyattn
