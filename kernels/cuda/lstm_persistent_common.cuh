// What the persistent LSTM kernels share: the steps of the loop, the shared-memory
// carve-up rule, and the pointwise work of a block's hidden units forward and backward.
// The CUDA-core kernels (cuda/lstm_persistent.cu, batch <= kLstmPersistentMaxBatch) and
// the tensor-core ones (cuda/lstm_persistent_mma.cu, larger batches) differ only in how
// they form the recurrent products: forward h_prev · W_hh[gate rows of J]ᵀ, backward
// dgates · W_hh[:, J].
#pragma once

#include <cstdint>

#include "cuda/grid_barrier.cuh"
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

// The forward's loop over the steps: product(prev, cur) forms the recurrent product of
// step cur's rows (the previous step's h, or h0 for rows it did not have) and returns
// once every thread may read it through recurrent(r, m); then J's cell update, and the
// grid barrier that publishes y.
template <typename T, typename Product, typename Recurrent>
__device__ void fwd_loop(const LstmSeqCudaFwdParams& p, int64_t j0, int64_t U, acc_t<T>* c_own, int threads,
                         Product product, Recurrent recurrent) {
  for (int64_t s = 0; s < p.nsteps; ++s) {
    const LstmStep cur = step_at(p, s), prev = s ? step_at(p, s - 1) : LstmStep{0, 0};
    product(prev, cur);
    const int nn = s + 1 < p.nsteps ? min(int(cur.n), int(step_at(p, s + 1).n)) : 0;  // rows [nn, n) end here
    fwd_cell_update<T>(p, j0, U, int(cur.n), int(prev.n), nn, cur.off, c_own, threads, recurrent);
    if (s + 1 < p.nsteps) grid_barrier(p.barrier, unsigned(s + 1));  // publishes y
  }
}

// ------------------------------------------------------------------------------ backward
// recurrent(r, u) below is row r's dh for unit j0 + u: step k + 1's dgates [n1, 4H] times
// W_hh's column j0 + u.

// Rows [nk, n1) start at step k + 1 (a packed sequence run backwards): what reached
// their h there is dh0.
template <typename T, typename Recurrent>
__device__ void bwd_store_dh0(const LstmSeqCudaBwdParams& p, int64_t j0, int64_t U, int nk, int n1, int threads,
                              Recurrent recurrent) {
  const int first = nk < n1 ? nk : n1;
  for (int64_t e = threadIdx.x; e < (n1 - first) * U; e += threads) {
    const int r = first + int(e / U);
    const int64_t u = e % U;
    static_cast<T*>(p.dh_state)[r * p.hidden + j0 + u] = from_acc<T>(recurrent(r, u));
  }
}

// The pointwise backward of step k (rows [0, nk) at offset off; the step before has pn
// rows at poff) for units [j0, j0 + U): writes J's four gate columns of dgates, keeps dc
// in dc_own [batch, U] and the stored dz in dz_own [batch, 4U] (for the bias sum), and
// writes dc0 for rows that start at step k. Rows that go on to step k + 1 (r < n1) get
// dh from recurrent and dc from dc_own; the others end at step k and start from dh_n /
// dc_n.
template <typename T, typename Recurrent>
__device__ void bwd_cell_update(const LstmSeqCudaBwdParams& p, int64_t j0, int64_t U, int nk, int n1, int pn,
                                int64_t off, int64_t poff, acc_t<T>* dc_own, acc_t<T>* dz_own, int threads,
                                Recurrent recurrent) {
  using A = acc_t<T>;
  const int64_t H = p.hidden, H4 = 4 * H;
  const T* dy = static_cast<const T*>(p.dy);
  const T* act = static_cast<const T*>(p.act);
  const T* c_all = static_cast<const T*>(p.c_all);
  const T* c0 = static_cast<const T*>(p.c0);
  T* dgates = static_cast<T*>(p.dgates);
  const T* dh_state = static_cast<const T*>(p.dh_state);
  T* dc_state = static_cast<T*>(p.dc_state);
  for (int64_t e = threadIdx.x; e < nk * U; e += threads) {
    const int r = int(e / U);
    const int64_t u = e - r * U, j = j0 + u, row = off + r;
    A dh = r < n1 ? recurrent(r, u) : to_acc(dh_state[r * H + j]);
    if (dy) dh += to_acc(dy[row * H + j]);
    const A dc = r < n1 ? dc_own[r * U + u] : to_acc(dc_state[r * H + j]);
    const T* a = act + row * H4;
    const A i = to_acc(a[j]), f = to_acc(a[H + j]), g = to_acc(a[2 * H + j]), o = to_acc(a[3 * H + j]);
    const A c = r < pn ? to_acc(c_all[(poff + r) * H + j]) : to_acc(c0[r * H + j]);
    const A tc = lstm_math::tanh_acc(to_acc(c_all[row * H + j]));
    const A dct = dc + dh * o * (A(1) - tc * tc);
    A dz[4];
    dz[0] = dct * g * i * (A(1) - i);
    dz[1] = dct * c * f * (A(1) - f);
    dz[2] = dct * i * (A(1) - g * g);
    dz[3] = dh * tc * o * (A(1) - o);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      dgates[row * H4 + q * H + j] = from_acc<T>(dz[q]);
      dz_own[r * 4 * U + q * U + u] = to_acc(from_acc<T>(dz[q]));  // dbias sums what dgates holds
    }
    dc_own[r * U + u] = to_acc(from_acc<T>(dct * f));  // as the per-step loop stores dc
    if (r >= pn) dc_state[r * H + j] = from_acc<T>(dct * f);  // the row starts at step k: dc0
  }
}

// db_own[4U] += dz_own's nk rows (after a barrier that follows bwd_cell_update).
template <typename A>
__device__ void bwd_bias_sum(A* db_own, const A* dz_own, int64_t U, int nk, int threads) {
  for (int64_t e = threadIdx.x; e < 4 * U; e += threads) {
    A sum = 0;
    for (int r = 0; r < nk; ++r) sum += dz_own[r * 4 * U + e];
    db_own[e] += sum;
  }
}

// dbias[g·H + j0 + u] += db_own[g·U + u], at the end (dbias may be null).
template <typename T>
__device__ void bwd_bias_store(const LstmSeqCudaBwdParams& p, int64_t j0, int64_t U, const acc_t<T>* db_own,
                               int threads) {
  if (!p.dbias) return;
  T* db = static_cast<T*>(p.dbias);
  for (int64_t e = threadIdx.x; e < 4 * U; e += threads) {
    const int64_t col = (e / U) * p.hidden + j0 + e % U;
    db[col] = from_acc<T>(to_acc(db[col]) + db_own[e]);
  }
}

// The backward's loop, iteration k: dh of step k's rows from step k + 1's dgates (all
// blocks' columns, published by the last barrier; product(after) returns once every
// thread may read it through recurrent(r, u)), then step k's pointwise backward. k = -1
// only finishes dh0 of the rows that start at step 0. db_own [4U] starts at zero.
template <typename T, typename Product, typename Recurrent>
__device__ void bwd_loop(const LstmSeqCudaBwdParams& p, int64_t j0, int64_t U, acc_t<T>* dc_own, acc_t<T>* dz_own,
                         acc_t<T>* db_own, int threads, Product product, Recurrent recurrent) {
  unsigned barriers = 0;
  for (int64_t k = p.nsteps - 1; k >= -1; --k) {
    const LstmStep after = k + 1 < p.nsteps ? step_at(p, k + 1) : LstmStep{0, 0};
    const int n1 = int(after.n);  // rows of the step after
    const int nk = k >= 0 ? int(step_at(p, k).n) : 0;
    if (n1 > 0) {
      product(after);
      bwd_store_dh0<T>(p, j0, U, nk, n1, threads, recurrent);
    }
    if (k < 0) break;
    const LstmStep prev = k ? step_at(p, k - 1) : LstmStep{0, 0};
    bwd_cell_update<T>(p, j0, U, nk, n1, int(prev.n), step_at(p, k).off, prev.off, dc_own, dz_own, threads, recurrent);
    __syncthreads();
    bwd_bias_sum(db_own, dz_own, U, nk, threads);
    grid_barrier(p.barrier, ++barriers);  // publishes step k's dgates
  }
  bwd_bias_store<T>(p, j0, U, db_own, threads);
}

}  // namespace lstm_persistent
}  // namespace pyattn
