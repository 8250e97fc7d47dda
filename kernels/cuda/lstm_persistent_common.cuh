// What the persistent LSTM kernels share: the steps of the loop, the shared-memory
// carve-up rule, and the forward's cell update of a block's hidden units. The CUDA-core
// kernels (cuda/lstm_persistent.cu, batch <= kLstmPersistentMaxBatch) and the
// tensor-core forward (cuda/lstm_persistent_mma.cu, larger batches) differ only in how
// they form the recurrent product h_prev · W_hh[slice]ᵀ.
#pragma once

#include <cstdint>

#include "cuda/storage.cuh"
#include "pyattn/lstm.h"
#include "pyattn/lstm_math.h"

namespace pyattn {
namespace lstm_persistent {

// Step s of the processing order: p.steps[s], or, without a steps array (a dense
// [T, batch] sequence), `batch` rows at time s (reverse: T - 1 - s).
template <typename Params>
__device__ LstmStep step_at(const Params& p, int64_t s) {
  if (p.steps) return p.steps[s];
  return {(p.reverse ? p.nsteps - 1 - s : s) * p.batch, p.batch};
}

// Bytes of a shared-memory part, rounded up so that every part starts 16-byte aligned.
__host__ __device__ inline size_t aligned(size_t bytes) { return (bytes + 15) / 16 * 16; }

// The pointwise half of forward step s for the block's hidden units [j0, j0 + U), after
// the recurrent product: recurrent(r, m) is row r's product with slice row m = g·U + u
// (W_hh's row g·H + j0 + u). Adds x·W_ihᵀ (in act) and the biases, writes act, y, c_all,
// and, for rows [nn, n) that end here, h_n and c_n. c_own [batch, U] carries the block's
// c from step to step (as stored: the per-step loop's c); rows >= pn start from c0.
template <typename T, typename Recurrent>
__device__ void fwd_cell_update(const LstmSeqCudaFwdParams& p, int64_t j0, int64_t U, int n, int pn, int nn,
                                int64_t off, acc_t<T>* c_own, int threads, Recurrent recurrent) {
  using A = acc_t<T>;
  const int64_t H = p.hidden;
  const T* b0 = static_cast<const T*>(p.bias[0]);
  const T* b1 = static_cast<const T*>(p.bias[1]);
  const T* c0 = static_cast<const T*>(p.c0);
  T* act = static_cast<T*>(p.act);
  for (int64_t e = threadIdx.x; e < n * U; e += threads) {
    const int r = int(e / U);
    const int64_t u = e - r * U, j = j0 + u;
    T* a = act + (off + r) * 4 * H;
    A pre[4];
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      pre[g] = recurrent(r, g * U + u) + to_acc(a[g * H + j]);
      if (b0) pre[g] += to_acc(b0[g * H + j]);
      if (b1) pre[g] += to_acc(b1[g * H + j]);
    }
    const A i = lstm_math::sigmoid(pre[0]), f = lstm_math::sigmoid(pre[1]);
    const A g = lstm_math::tanh_acc(pre[2]), o = lstm_math::sigmoid(pre[3]);
    const A c = r < pn ? c_own[r * U + u] : to_acc(c0[r * H + j]);
    const A cn = f * c + i * g;
    const T h = from_acc<T>(o * lstm_math::tanh_acc(cn));
    a[j] = from_acc<T>(i);
    a[H + j] = from_acc<T>(f);
    a[2 * H + j] = from_acc<T>(g);
    a[3 * H + j] = from_acc<T>(o);
    c_own[r * U + u] = to_acc(from_acc<T>(cn));
    static_cast<T*>(p.c_all)[(off + r) * H + j] = from_acc<T>(cn);
    static_cast<T*>(p.y)[(off + r) * H + j] = h;
    if (r >= nn) {
      static_cast<T*>(p.h_n)[r * H + j] = h;
      static_cast<T*>(p.c_n)[r * H + j] = from_acc<T>(cn);
    }
  }
}

}  // namespace lstm_persistent
}  // namespace pyattn
