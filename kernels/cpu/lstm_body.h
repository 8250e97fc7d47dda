// lstm pointwise kernels on the CPU, compiled once per ISA by cpu/isa_regions.h (no
// guard, no #includes). VecF / VecD and the tail helpers come from the region.
//
// One pass per row: the four gate blocks of a column chunk are read together, so the
// gates, c and the outputs are each touched once. Rows go to threads in chunks.
//
// fp32 also has the whole recurrent loop here (seq_fwd / seq_bwd, end of file): the
// per-step GEMM on packed weights (cpu/packed_gemm.h, a fragment of this region) fused
// with the pointwise update, on persistent workers synchronised once per step.

#include "cpu/packed_gemm.h"

namespace lstmk {

// ---- activations. fp32 SIMD: exp2-based, with arguments <= 0 only (no overflow, and
// exp2's clamp at -127 gives exact 0 / +-1 saturation); SIMD tails take the same vector
// code. The generic path (one lane, maybe no FMA) and fp64 use pyattn/lstm_math.h, the
// scalar forms the CUDA kernel runs.

constexpr float kTanhSmall = 0.625f;  // below: odd polynomial; above: exp formula
// tanh(a) = a + a^3 * Q(a^2) on [0, 0.625]: least-squares fit in fp64, rounded to fp32;
// max relative error 8.7e-8 evaluated in fp32.
constexpr float kTanhQ0 = -0.3333333134651184f, kTanhQ1 = 0.1333288848400116f, kTanhQ2 = -0.053863704204559326f,
                kTanhQ3 = 0.021044934168457985f, kTanhQ4 = -0.006154325790703297f;

inline VecF vabs(VecF z) { return VecF::max(z, VecF::set1(0.f) - z); }  // NaN stays NaN (second operand)

// log2(e) split in two floats: kLog2eHi + kLog2eLo is log2(e) to ~2^-48.
constexpr float kLog2eHi = float(kLog2e);
constexpr float kLog2eLo = 1.925962989e-08f;
constexpr float kLn2 = 0.6931471805599453f;

// sigmoid(z) = 1 / (1 + e) for z >= 0, e / (1 + e) for z < 0, with e = exp(-|z|).
// For z < 0 the result is about e itself, so e keeps its relative accuracy even for
// large |z|: t = -|z|·log2e is computed as t_hi + t_lo (FMA), e = 2^t_hi · (1 + t_lo·ln2).
// (A template so that the branch not taken is not compiled; VecF only: VecD has its own.)
template <class V>
inline V sigmoid(V z) {
  if constexpr (V::W == 1) {
    return {lstm_math::sigmoid(z.v)};
  } else {
    const V zero = V::set1(0.f), one = V::set1(1.f);
    const V na = zero - vabs(z);
    const V t = na * V::set1(kLog2eHi);
    const V t_lo = V::fmadd(na, V::set1(kLog2eLo), V::fmadd(na, V::set1(kLog2eHi), zero - t));
    const V e_hi = V::exp2(t);
    const V e = V::fmadd(e_hi, t_lo * V::set1(kLn2), e_hi);
    const V s = one / (one + e);
    return V::select_lt(z, zero, e * s, s);
  }
}

// tanh(z) = sign(z) * r(|z|): r(a) = (1 - e) / (1 + e), e = exp(-2a), where that has no
// cancellation (a >= 0.625), the polynomial below it.
template <class V>
inline V tanh(V z) {
  if constexpr (V::W == 1) {
    return {lstm_math::tanh_acc(z.v)};
  } else {
    const V zero = V::set1(0.f), one = V::set1(1.f);
    const V a = vabs(z), a2 = a * a;
    V q = V::set1(kTanhQ4);
    q = V::fmadd(q, a2, V::set1(kTanhQ3));
    q = V::fmadd(q, a2, V::set1(kTanhQ2));
    q = V::fmadd(q, a2, V::set1(kTanhQ1));
    q = V::fmadd(q, a2, V::set1(kTanhQ0));
    const V small = V::fmadd(a * a2, q, a);
    const V e = V::exp2(a * V::set1(-2.f * kLog2eHi));
    const V large = (one - e) / (one + e);
    const V r = V::select_lt(a, V::set1(kTanhSmall), small, large);
    return V::select_lt(z, zero, zero - r, r);
  }
}

inline VecD sigmoid(VecD z) { return {lstm_math::sigmoid(z.v)}; }
inline VecD tanh(VecD z) { return {lstm_math::tanh_acc(z.v)}; }

// Lanes [0, n) of a row (n <= W); the rest read as 0 / are not written.
template <class V, class T>
inline V ld(const T* p, int n) {
  return n == V::W ? V::load(p) : load_partial<V>(p, n, typename V::value_type(0));
}
template <class V, class T>
inline void st(V v, T* p, int n) {
  if (n == V::W) v.store(p);
  else store_partial(v, p, n);
}

// Rows [r0, r1), hidden columns [j0, j1) of every gate (j0 a multiple of V::W).
template <class V, class T>
void fwd_rows(const LstmFwdParams& p, int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
  const int64_t H = p.hidden;
  const T* bias[2] = {static_cast<const T*>(p.bias[0]), static_cast<const T*>(p.bias[1])};
  for (int64_t r = r0; r < r1; ++r) {
    const T* z = static_cast<const T*>(p.gates) + r * p.gates_stride;
    T* act = static_cast<T*>(p.act) + r * p.act_stride;
    const T* c = static_cast<const T*>(p.c) + r * p.c_stride;
    T* c_out = static_cast<T*>(p.c_out) + r * p.c_out_stride;
    T* h_out = static_cast<T*>(p.h_out) + r * p.h_out_stride;
    for (int64_t j = j0; j < j1; j += V::W) {
      const int n = int(std::min<int64_t>(V::W, j1 - j));
      // gate k's pre-activation, biases added
      const auto pre = [&](int64_t k) {
        V v = ld<V>(z + k * H + j, n);
        for (const T* b : bias)
          if (b) v = v + ld<V>(b + k * H + j, n);
        return v;
      };
      // every load of this chunk before any store: act may alias gates, c_out c
      const V i = sigmoid(pre(0)), f = sigmoid(pre(1)), g = tanh(pre(2)), o = sigmoid(pre(3));
      const V cn = V::fmadd(f, ld<V>(c + j, n), i * g);
      st(i, act + j, n);
      st(f, act + H + j, n);
      st(g, act + 2 * H + j, n);
      st(o, act + 3 * H + j, n);
      st(cn, c_out + j, n);
      st(o * tanh(cn), h_out + j, n);
    }
  }
}

// Rows [r0, r1), hidden columns [j0, j1) (j0 a multiple of V::W).
template <class V, class T>
void bwd_rows(const LstmBwdParams& p, int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
  using A = typename V::value_type;
  const int64_t H = p.hidden;
  const V one = V::set1(A(1)), zero = V::set1(A(0));
  for (int64_t r = r0; r < r1; ++r) {
    const T* dh = static_cast<const T*>(p.dh) + r * p.dh_stride;
    const T* dh2 = p.dh2 ? static_cast<const T*>(p.dh2) + r * p.dh2_stride : nullptr;
    const T* dc = p.dc ? static_cast<const T*>(p.dc) + r * p.dc_stride : nullptr;
    const T* act = static_cast<const T*>(p.act) + r * p.act_stride;
    const T* c = static_cast<const T*>(p.c) + r * p.c_stride;
    const T* c_new = static_cast<const T*>(p.c_new) + r * p.c_new_stride;
    T* dz = static_cast<T*>(p.dgates) + r * p.dgates_stride;
    T* dc_out = static_cast<T*>(p.dc_out) + r * p.dc_out_stride;
    for (int64_t j = j0; j < j1; j += V::W) {
      const int n = int(std::min<int64_t>(V::W, j1 - j));
      V dhv = ld<V>(dh + j, n);
      if (dh2) dhv = dhv + ld<V>(dh2 + j, n);
      const V dcv = dc ? ld<V>(dc + j, n) : zero;
      const V i = ld<V>(act + j, n), f = ld<V>(act + H + j, n);
      const V g = ld<V>(act + 2 * H + j, n), o = ld<V>(act + 3 * H + j, n);
      const V tc = tanh(ld<V>(c_new + j, n));
      const V dct = V::fmadd(dhv * o, one - tc * tc, dcv);
      const V cp = ld<V>(c + j, n);
      st(dct * g * i * (one - i), dz + j, n);
      st(dct * cp * f * (one - f), dz + H + j, n);
      st(dct * i * (one - g * g), dz + 2 * H + j, n);
      st(dhv * tc * o * (one - o), dz + 3 * H + j, n);
      st(dct * f, dc_out + j, n);  // after the loads of dc above: dc_out may alias dc
    }
  }
}

// Rows per task: at least ~16k hidden elements, so small steps stay on one thread
// (a fork costs more than the work) and large ones split.
inline int64_t row_grain(int64_t hidden) { return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(hidden, 1)); }

template <class V, class T>
void fwd_typed(const LstmFwdParams& p, ParallelFor parallel_for) {
  parallel_for(p.n, row_grain(p.hidden), [&](int64_t r0, int64_t r1) { fwd_rows<V, T>(p, r0, r1, 0, p.hidden); });
}

template <class V, class T>
void bwd_typed(const LstmBwdParams& p, ParallelFor parallel_for) {
  parallel_for(p.n, row_grain(p.hidden), [&](int64_t r0, int64_t r1) { bwd_rows<V, T>(p, r0, r1, 0, p.hidden); });
}

// ------------------------------------------------- fp32 recurrent loop, fused

inline void cpu_relax() {
#if PYATTN_X86
  _mm_pause();
#endif
}

inline void wait_at_least(const std::atomic<int64_t>& v, int64_t target) {
  for (int spins = 0; v.load(std::memory_order_acquire) < target; ++spins) {
    if (spins < (1 << 12)) cpu_relax();
    else std::this_thread::yield();  // the other thread was descheduled: do not burn its core
  }
}

// Runs task(s, t) for every step s in order and every task t < ntasks of it; step s + 1
// starts after all of step s. Workers are the chunks parallel_for gives us: each runs its
// own contiguous tasks of a step first (the same ones every step, so their weights stay
// in its caches), then claims what others have not started, from the far end. A task is
// claimed by moving its marker from s - 1 to s, so every task runs once, and a worker
// only ever waits for tasks that a running worker has claimed: one thread alone (nested
// parallelism, one thread) still runs everything, just without help.
template <class Task>
void run_steps(int64_t nsteps, int64_t ntasks, int threads, ParallelFor parallel_for, const Task& task) {
  if (nsteps <= 0 || ntasks <= 0) return;
  const int64_t nw = std::max<int64_t>(1, std::min<int64_t>(threads, ntasks));
  std::unique_ptr<std::atomic<int64_t>[]> claimed(new std::atomic<int64_t>[ntasks]);
  for (int64_t t = 0; t < ntasks; ++t) claimed[t].store(-1, std::memory_order_relaxed);
  std::atomic<int64_t> done{0};  // tasks finished, all steps together
  const auto worker = [&](int64_t w0, int64_t w1) {
    const int64_t own0 = w0 * ntasks / nw, own1 = w1 * ntasks / nw;
    const auto try_run = [&](int64_t s, int64_t t) {
      int64_t expect = s - 1;
      if (claimed[t].load(std::memory_order_relaxed) != expect ||
          !claimed[t].compare_exchange_strong(expect, s, std::memory_order_acq_rel))
        return;
      task(s, t);
      done.fetch_add(1, std::memory_order_release);
    };
    for (int64_t s = 0; s < nsteps; ++s) {
      wait_at_least(done, s * ntasks);
      for (int64_t t = own0; t < own1; ++t) try_run(s, t);
      for (int64_t t = ntasks; t-- > 0;)
        if (t < own0 || t >= own1) try_run(s, t);
    }
  };
  if (nw == 1) worker(0, 1);
  else parallel_for(nw, 1, worker);
}

// Forward: task (s, b, rows) = hidden units [32b, 32b + 32) of step s for a chunk of
// its rows: their gate columns of every gate (+)= bias + [x |] h_prev · packed, then the
// pointwise update of those columns.
inline void seq_fwd(const LstmSeqFwdParams& p, ParallelFor parallel_for) {
  using pgemm::kPanel;
  const int64_t H = p.hidden, G = 4 * H, C = p.x ? p.in_features : 0, K = C + H;
  // Tasks: (unit block, row chunk). Rows are split when there are few unit blocks, so
  // that each worker has ~8 tasks per step to balance with (a worker that starts late,
  // or is descheduled on a shared machine, costs at most one small task), but never
  // into chunks of fewer than two micro-kernel row blocks.
  int64_t nmax = 0;
  for (int64_t s = 0; s < p.nsteps; ++s) nmax = std::max(nmax, p.steps[s].n);
  const int64_t nblk = pgemm::blocks(H);
  const int64_t rsplit = std::max<int64_t>(1, std::min<int64_t>((8 * p.threads + nblk - 1) / nblk, nmax / (2 * pgemm::kMR)));
  const int64_t chunk = ((nmax + rsplit - 1) / rsplit + pgemm::kMR - 1) / pgemm::kMR * pgemm::kMR;
  // First row of step s in act and in c_all: the step's own rows, or (scratch) one
  // buffer for act and two alternating ones for c, reused every step.
  const bool act_scratch = p.scratch && p.x != nullptr;
  const auto act_row = [&](int64_t s) { return act_scratch ? int64_t(0) : p.steps[s].off; };
  const auto c_row = [&](int64_t s) { return p.scratch ? s % 2 * nmax : p.steps[s].off; };
  run_steps(p.nsteps, nblk * rsplit, p.threads, parallel_for, [&](int64_t s, int64_t task) {
    const int64_t b = task / rsplit, lo = task % rsplit * chunk, hi = lo + chunk;
    const LstmStep st = p.steps[s];
    const int64_t j0 = b * kPanel;
    const int ncols = int(std::min<int64_t>(kPanel, H - j0));
    // Rows [0, m1) continue from the previous step's outputs; rows [m1, n) start now,
    // from h0 / c0 (all of them at the first step; more in a packed reverse sequence).
    const int64_t m1 = s == 0 ? 0 : std::min(st.n, p.steps[s - 1].n);
    for (int part = 0; part < 2; ++part) {
      const int64_t r0 = std::max(lo, part ? m1 : 0), r1 = std::min(hi, part ? st.n : m1), m = r1 - r0;
      if (m <= 0) continue;
      const float *hp, *cp;
      int64_t hs, cs;
      if (part == 0) {
        hp = p.y + (p.steps[s - 1].off + r0) * H;
        cp = p.c_all + (c_row(s - 1) + r0) * H;
        hs = cs = H;
      } else {
        hp = p.h0 + r0 * p.h0_stride;
        cp = p.c0 + r0 * p.c0_stride;
        hs = p.h0_stride;
        cs = p.c0_stride;
      }
      pgemm::ASeg seg[2];
      int nseg = 0;
      if (p.x) seg[nseg++] = {p.x + (st.off + r0) * p.x_stride, p.x_stride, C};
      seg[nseg++] = {hp, hs, H};
      float* act = p.act + (act_row(s) + r0) * G;
      for (int64_t g = 0; g < 4; ++g)
        pgemm::gemm_panel(m, seg, nseg, pgemm::panel(p.w_packed, b, g, 4, K), act + g * H + j0, G, ncols,
                          p.x == nullptr, p.bias ? p.bias + g * H + j0 : nullptr);
      LstmFwdParams q{};  // the biases are in already
      q.gates = act;
      q.gates_stride = G;
      q.act = act;
      q.act_stride = G;
      q.c = cp;
      q.c_stride = cs;
      q.c_out = p.c_all + (c_row(s) + r0) * H;
      q.c_out_stride = H;
      q.h_out = p.y + (st.off + r0) * H;
      q.h_out_stride = H;
      q.dtype = DType::f32;
      q.n = m;
      q.hidden = H;
      fwd_rows<VecF, float>(q, 0, m, j0, j0 + ncols);
    }
    // Rows [nn, n) end at this step: their final state.
    const int64_t nn = s + 1 < p.nsteps ? std::min(p.steps[s + 1].n, st.n) : 0;
    if (p.h_n)
      for (int64_t r = std::max(nn, lo); r < std::min(st.n, hi); ++r) {
        std::memcpy(p.h_n + r * H + j0, p.y + (st.off + r) * H + j0, ncols * sizeof(float));
        std::memcpy(p.c_n + r * H + j0, p.c_all + (c_row(s) + r) * H + j0, ncols * sizeof(float));
      }
  });
}

// Backward through time: phase q = 0..nsteps. Task (q, b), hidden units [32b, 32b + 32):
// first dh_state of those units = dgates of the step done in phase q - 1 · W_hh (the
// recurrent gradient), then that unit block's pointwise backward of step nsteps-1-q.
// A task owns the same columns (of dh_state, dc_state, dbias and each gate of dgates) in
// every phase, and phases are ordered, so nothing it writes is shared with another task.
inline void seq_bwd(const LstmSeqBwdParams& p, ParallelFor parallel_for) {
  using pgemm::kPanel;
  const int64_t H = p.hidden, G = 4 * H;
  run_steps(p.nsteps + 1, pgemm::blocks(H), p.threads, parallel_for, [&](int64_t q, int64_t b) {
    const int64_t j0 = b * kPanel;
    const int ncols = int(std::min<int64_t>(kPanel, H - j0));
    const int64_t s = p.nsteps - 1 - q;  // the step whose pointwise backward this phase does
    // Rows [0, m1) came from the previous step's rows, [m1, n) started at step s (c0).
    const LstmStep step = q < p.nsteps ? p.steps[s] : LstmStep{0, 0};
    const int64_t m1 = s > 0 ? std::min(step.n, p.steps[s - 1].n) : 0;
    if (q > 0) {
      const LstmStep later = p.steps[p.nsteps - q];
      const pgemm::ASeg seg{p.dgates + later.off * G, G, G};
      pgemm::gemm_panel(later.n, &seg, 1, pgemm::panel(p.w_packed, b, 0, 1, G), p.dh_state + j0, H, ncols, false);
    }
    if (q == p.nsteps) return;
    LstmBwdParams r{};
    r.dh = p.dh_state;
    r.dh_stride = H;
    r.dh2 = p.dy ? p.dy + step.off * H : nullptr;
    r.dh2_stride = H;
    r.dc = p.dc_state;
    r.dc_stride = H;
    r.act = p.act + step.off * G;
    r.act_stride = G;
    r.c_new = p.c_all + step.off * H;
    r.c_new_stride = H;
    r.dgates = p.dgates + step.off * G;
    r.dgates_stride = G;
    r.dc_out = p.dc_state;
    r.dc_out_stride = H;
    r.dtype = DType::f32;
    r.n = step.n;
    r.hidden = H;
    // bwd_rows reads row r's previous c at r.c + r·c_stride: one call per source
    if (m1 > 0) {
      r.c = p.c_all + p.steps[s - 1].off * H;
      r.c_stride = H;
      bwd_rows<VecF, float>(r, 0, m1, j0, j0 + ncols);
    }
    if (m1 < step.n) {
      r.c = p.c0;
      r.c_stride = p.c0_stride;
      bwd_rows<VecF, float>(r, m1, step.n, j0, j0 + ncols);
    }
    if (p.dbias) {  // the column sums of this block's dgates, still in L1
      for (int64_t g = 0; g < 4; ++g)
        for (int c = 0; c < ncols; c += VecF::W) {
          const int n = std::min(VecF::W, ncols - c);
          float* db = p.dbias + g * H + j0 + c;
          const float* dz = p.dgates + step.off * G + g * H + j0 + c;
          VecF acc = ld<VecF>(db, n);
          for (int64_t row = 0; row < step.n; ++row) acc = acc + ld<VecF>(dz + row * G, n);
          st(acc, db, n);
        }
    }
  });
}

}  // namespace lstmk

inline void lstm_seq_fwd(const LstmSeqFwdParams& p, ParallelFor parallel_for) { lstmk::seq_fwd(p, parallel_for); }
inline void lstm_seq_bwd(const LstmSeqBwdParams& p, ParallelFor parallel_for) { lstmk::seq_bwd(p, parallel_for); }

inline void lstm_fwd(const LstmFwdParams& p, ParallelFor parallel_for) {
  switch (p.dtype) {
    case DType::f32: return lstmk::fwd_typed<VecF, float>(p, parallel_for);
    case DType::f64: return lstmk::fwd_typed<VecD, double>(p, parallel_for);
    case DType::f16: return lstmk::fwd_typed<VecF, f16>(p, parallel_for);
    case DType::bf16: return lstmk::fwd_typed<VecF, bf16>(p, parallel_for);
  }
}

inline void lstm_bwd(const LstmBwdParams& p, ParallelFor parallel_for) {
  switch (p.dtype) {
    case DType::f32: return lstmk::bwd_typed<VecF, float>(p, parallel_for);
    case DType::f64: return lstmk::bwd_typed<VecD, double>(p, parallel_for);
    case DType::f16: return lstmk::bwd_typed<VecF, f16>(p, parallel_for);
    case DType::bf16: return lstmk::bwd_typed<VecF, bf16>(p, parallel_for);
  }
}
