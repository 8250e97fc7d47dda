// Negative sampling on the CPU, compiled once per ISA by cpu/isa_regions.h (no guard,
// no #includes). Rows are short (dim ~100-300): dot and axpy run full vectors, then a
// scalar tail, so no stack round trip per row.

namespace negsamp {

#if PYATTN_X86
// fp32 lanes narrower than the ISA's VecF, for the ends of rows: dim 100 is 6 x 16 + 4
// floats on AVX-512 (12 x 8 + 4 on AVX2), and those 4 floats ran as scalar code in every
// dot product and row update. Ordinary 8- and 4-lane loads and stores instead made the
// CBOW update 5-8 % faster and skip-gram's window batch 9-12 % (2 threads, dim 100, the
// AVX-512 and AVX2 paths on Zen 4); AVX-512 masked stores had been slower than the scalar
// code there.
struct Lanes8 {
  using R = __m256;
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R set1(float a) { return _mm256_set1_ps(a); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(R v) {
    const __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)));
  }
};
struct Lanes4 {
  using R = __m128;
  static R load(const float* p) { return _mm_loadu_ps(p); }
  static void store(float* p, R v) { _mm_storeu_ps(p, v); }
  static R set1(float a) { return _mm_set1_ps(a); }
  static R mul(R a, R b) { return _mm_mul_ps(a, b); }
  static R fmadd(R a, R b, R c) { return _mm_fmadd_ps(a, b, c); }
  static float hsum(R v) {
    const __m128 u = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)));
  }
};
#endif

// The row's tail [j, d) after the full V vectors: with fp32 operands on x86, runs
// step(Lanes8{}, j) where V is wider than 8 lanes and 8 remain, then step(Lanes4{}, j)
// where 4 remain; returns where the scalar remainder starts.
template <class V, bool kFp32, class Step>
inline int64_t narrow_tail(int64_t j, int64_t d, Step&& step) {
#if PYATTN_X86
  if constexpr (kFp32 && V::W >= 8) {
    if constexpr (V::W > 8)
      if (j + 8 <= d) step(Lanes8{}, j), j += 8;
    if (j + 4 <= d) step(Lanes4{}, j), j += 4;
  }
#endif
  return j;
}

template <class V, class T>
inline typename V::value_type dot(const T* a, const T* b, int64_t d) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  V s0 = V::set1(A(0)), s1 = s0;
  int64_t j = 0;
  for (; j + 2 * W <= d; j += 2 * W) {
    s0 = V::fmadd(V::load(a + j), V::load(b + j), s0);
    s1 = V::fmadd(V::load(a + j + W), V::load(b + j + W), s1);
  }
  for (; j + W <= d; j += W) s0 = V::fmadd(V::load(a + j), V::load(b + j), s0);
  A s = (s0 + s1).hsum();
  j = narrow_tail<V, std::is_same_v<T, float>>(j, d, [&](auto n, int64_t i) {
    using N = decltype(n);
    s += N::hsum(N::mul(N::load(a + i), N::load(b + i)));
  });
  for (; j < d; ++j) s += widen(a[j]) * widen(b[j]);
  return s;
}

// y += alpha * x (x in the accumulation type or storage type; y in its own type).
template <class V, class X, class Y>
inline void axpy(typename V::value_type alpha, const X* x, Y* y, int64_t d) {
  constexpr int W = V::W;
  const V a = V::set1(alpha);
  int64_t j = 0;
  for (; j + W <= d; j += W) V::fmadd(a, V::load(x + j), V::load(y + j)).store(y + j);
  j = narrow_tail<V, std::is_same_v<X, float> && std::is_same_v<Y, float>>(j, d, [&](auto n, int64_t i) {
    using N = decltype(n);
    N::store(y + i, N::fmadd(N::set1(alpha), N::load(x + i), N::load(y + i)));
  });
  for (; j < d; ++j) y[j] = narrow<Y>(widen(y[j]) + alpha * widen(x[j]));
}

// e += g * u and u += g * h in one pass over u (the target row is read once).
template <class V, class T>
inline void update_target(typename V::value_type g, typename V::value_type* e, const typename V::value_type* h, T* u,
                          int64_t d) {
  constexpr int W = V::W;
  const V gv = V::set1(g);
  int64_t j = 0;
  for (; j + W <= d; j += W) {
    const V uv = V::load(u + j);
    V::fmadd(gv, uv, V::load(e + j)).store(e + j);
    V::fmadd(gv, V::load(h + j), uv).store(u + j);
  }
  j = narrow_tail<V, std::is_same_v<T, float>>(j, d, [&](auto n, int64_t i) {
    using N = decltype(n);
    const auto g_n = N::set1(g), u_n = N::load(u + i);
    N::store(e + i, N::fmadd(g_n, u_n, N::load(e + i)));
    N::store(u + i, N::fmadd(g_n, N::load(h + i), u_n));
  });
  for (; j < d; ++j) {
    const auto uj = widen(u[j]);
    e[j] += g * uj;
    u[j] = narrow<T>(uj + g * h[j]);
  }
}

// y[0:d] (+)= sum_r coef[r * coef_stride] * rows[r][0:d] (kAdd: added to y, else y is
// overwritten): one pass over y for a few rows (the window batch's products with its
// input or target rows).
template <bool kAdd, class V, class T, class Y>
inline void weighted_rows(const typename V::value_type* coef, int64_t coef_stride, const T* const* rows,
                          int64_t count, Y* y, int64_t d) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  int64_t q = 0;
  for (; q + W <= d; q += W) {
    V acc = kAdd ? V::load(y + q) : V::set1(A(0));
    for (int64_t r = 0; r < count; ++r) acc = V::fmadd(V::set1(coef[r * coef_stride]), V::load(rows[r] + q), acc);
    acc.store(y + q);
  }
  q = narrow_tail<V, std::is_same_v<T, float> && std::is_same_v<Y, float>>(q, d, [&](auto n, int64_t i) {
    using N = decltype(n);
    auto acc = kAdd ? N::load(y + i) : N::set1(0.0f);
    for (int64_t r = 0; r < count; ++r) acc = N::fmadd(N::set1(coef[r * coef_stride]), N::load(rows[r] + i), acc);
    N::store(y + i, acc);
  });
  for (; q < d; ++q) {
    A acc = kAdd ? widen(y[q]) : A(0);
    for (int64_t r = 0; r < count; ++r) acc += coef[r * coef_stride] * widen(rows[r][q]);
    y[q] = narrow<Y>(acc);
  }
}

// Exact logistic function through the shared exp2 (fp32: the polynomial of fast_exp.h;
// fp64: std::exp2); the exponent is clamped to +-126 where 2^t is still finite.
template <class A>
inline A sigmoid(A x) {
  A t = -x * A(kLog2e);
  t = t < A(-126) ? A(-126) : (t > A(126) ? A(126) : t);
  return A(1) / (A(1) + scalar_exp2(t));
}

// -log sigmoid(x) = softplus(-x), stable for either sign.
template <class A>
inline A neg_log_sigmoid(A x) {
  return (x < A(0) ? -x : A(0)) + std::log1p(std::exp(-std::fabs(x)));
}

// exp(-|x|) in (0, 1] through the shared exp2; 0 below the smallest normal power of two.
template <class A>
inline A exp_neg_abs(A x) {
  const A t = -std::fabs(x) * A(kLog2e);
  return t < A(std::numeric_limits<A>::min_exponent - 1) ? A(0) : scalar_exp2(t);
}

template <class V, class T>
struct Updater {
  using A = typename V::value_type;
  const NegSamplingUpdateParams& p;
  std::atomic<int64_t>& bad;
  A* h;  // [dim] scratch: the example's input vector (CBOW mean) in the accumulation type
  A* e;  // [dim] scratch: accumulated gradient for the input side
  int64_t* targets;  // [2, k + 1] scratch: the positive, then the negatives kept (skip-gram: this pair's, the next's)
  int64_t* inputs;   // [window_slots] scratch: a CBOW or window-batch example's valid context ids
  A* grads;          // window batch: [window_slots, k + 1] scratch, g_ij = lr * (label_j - sigmoid(x_ij))
  A* input_grads;    // window batch: [window_slots, dim] scratch, sum_j g_ij w_out[t_j]
  T** rows;          // window batch: [window_slots + k + 1] scratch, the input rows, then the target rows

  T* in_row(int64_t i) const { return static_cast<T*>(p.w_in) + i * p.w_in_stride; }
  T* out_row(int64_t i) const { return static_cast<T*>(p.w_out) + i * p.w_out_stride; }
  // A negative id is an absent one (skipped); an id >= vocab is recorded for the caller to
  // raise. Recording negative ids too would let a later one overwrite a real error.
  bool valid(int64_t i) const {
    if (i >= 0 && i < p.vocab) return true;
    if (i >= p.vocab) bad.store(i, std::memory_order_relaxed);
    return false;
  }
  int64_t negative(int64_t example, int64_t j) const { return draw_negative(p, example, j); }

  void prefetch_row(const T* row) const {
    const char* b = reinterpret_cast<const char*>(row);
    for (int64_t o = 0; o < p.dim * int64_t(sizeof(T)); o += 64) __builtin_prefetch(b + o, 1);
  }

  // Fills out with pos and the example's negatives (a negative equal to pos or out of
  // range skipped) and returns their count. The rows are prefetched (for writing), so the
  // cache misses on random w_out rows overlap instead of queueing behind each dot product.
  int64_t draw_targets(int64_t pos, int64_t example, int64_t* out) const {
    int64_t nt = 0;
    out[nt++] = pos;
    prefetch_row(out_row(pos));
    for (int64_t j = 0; j < p.k; ++j) {
      const int64_t t = negative(example, j);
      if (t == pos || !valid(t)) continue;
      out[nt++] = t;
      prefetch_row(out_row(t));
    }
    return nt;
  }

  // Targets t[0, nt) of one example (the positive first) with h already in place: updates
  // their w_out rows, fills e, returns the loss.
  A run_targets(const int64_t* t, int64_t nt) const {
    const int64_t d = p.dim;
    const A lr = A(p.lr);
    std::fill(e, e + d, A(0));
    A loss = A(0);
    for (int64_t j = 0; j < nt; ++j) {
      T* u = out_row(t[j]);
      const A x = dot<V>(h, u, d);
      const A label = j == 0 ? A(1) : A(0);
      if (p.compute_loss) loss += neg_log_sigmoid(j == 0 ? x : -x);
      if (std::fabs(x) >= A(kNegSamplingMaxLogit)) continue;  // saturated: no update (gensim)
      const A g = lr * (label - sigmoid(x));
      update_target<V>(g, e, h, u, d);
    }
    return loss;
  }

  // A skip-gram pair: center n (valid) and the context in its window slot (valid).
  struct Pair {
    int64_t n, slot, context;
  };
  // The first pair at or after window slot `slot` of center n, among centers [n, n1);
  // n == n1 when there is none. slot > 0 only within a center already found valid.
  Pair next_pair(int64_t n, int64_t slot, int64_t n1) const {
    for (; n < n1; ++n, slot = 0) {
      if (slot == 0 && !valid(p.centers[n])) continue;
      for (; slot < p.window_slots; ++slot) {
        const int64_t o = context_id(p, n, slot);
        if (o >= 0 && valid(o)) return {n, slot, o};
      }
    }
    return {n1, 0, -1};
  }

  // Skip-gram over centers [n0, n1): each center's window slots in order, one pair at a
  // time, h = w_in[center] re-read per pair and e added back after it (word2vec.c's
  // order). The next pair's targets are drawn, and all its rows prefetched, before this
  // pair runs, so that its cache misses overlap this pair's work. At dim 100 the update
  // ran 1.2 % faster with 1 thread, 2.2 % with 2 threads on contended vCPUs and within
  // noise on free ones, by the medians (bench/results/word2vec_cpu_placement_2026-12-06.md).
  // Adds each center's loss to *loss.
  void skipgram(int64_t n0, int64_t n1, double* loss) const {
    const int64_t d = p.dim;
    int64_t* cur = targets;
    int64_t* ahead = targets + p.k + 1;
    Pair pair = next_pair(n0, 0, n1);
    int64_t nt = pair.n < n1 ? draw_targets(pair.context, pair.n * p.window_slots + pair.slot, cur) : 0;
    A center_loss = A(0);
    while (pair.n < n1) {
      const Pair next = next_pair(pair.n, pair.slot + 1, n1);
      const int64_t next_nt =
          next.n < n1 ? draw_targets(next.context, next.n * p.window_slots + next.slot, ahead) : 0;
      if (next.n != pair.n && next.n < n1) prefetch_row(in_row(p.centers[next.n]));
      T* hin = in_row(p.centers[pair.n]);
      for (int64_t j = 0; j < d; ++j) h[j] = widen(hin[j]);
      center_loss += run_targets(cur, nt);
      axpy<V>(A(1), e, hin, d);
      if (next.n != pair.n) *loss += double(center_loss), center_loss = A(0);
      std::swap(cur, ahead);
      nt = next_nt;
      pair = next;
    }
  }

  // Skip-gram's window batch (pyattn/negative_sampling.h): the valid contexts are the
  // inputs, the center and k negatives drawn for the window the targets. All logits come
  // from the rows as they stand, then the targets are updated (from the unchanged input
  // rows) and then the inputs (with gradients taken before the targets changed). A row
  // that comes twice gets both updates.
  A window_batch(int64_t n) const {
    const int64_t c = p.centers[n];
    if (!valid(c)) return A(0);
    int64_t m = 0;
    for (int64_t s = 0; s < p.window_slots; ++s) {
      const int64_t o = context_id(p, n, s);
      if (o >= 0 && valid(o)) inputs[m++] = o;
    }
    if (m == 0) return A(0);
    const int64_t nt = draw_targets(c, n, targets);
    T** in = rows;       // [m]
    T** out = rows + m;  // [nt]
    for (int64_t i = 0; i < m; ++i) in[i] = in_row(inputs[i]);
    for (int64_t j = 0; j < nt; ++j) out[j] = out_row(targets[j]);
    const int64_t d = p.dim;
    const A lr = A(p.lr);
    A loss = A(0);
    for (int64_t i = 0; i < m; ++i)  // m * nt independent dot products
      for (int64_t j = 0; j < nt; ++j) {
        const A x = dot<V>(in[i], out[j], d);
        if (p.compute_loss) loss += neg_log_sigmoid(j == 0 ? x : -x);
        const bool saturated = std::fabs(x) >= A(kNegSamplingMaxLogit);  // no update (gensim)
        grads[i * nt + j] = saturated ? A(0) : lr * ((j == 0 ? A(1) : A(0)) - sigmoid(x));
      }
    for (int64_t i = 0; i < m; ++i) weighted_rows<false, V>(grads + i * nt, 1, out, nt, input_grads + i * d, d);
    for (int64_t j = 0; j < nt; ++j) weighted_rows<true, V>(grads + j, nt, in, m, out[j], d);
    for (int64_t i = 0; i < m; ++i) axpy<V>(A(1), input_grads + i * d, in[i], d);
    return loss;
  }

  A cbow(int64_t n) const {
    const int64_t c = p.centers[n];
    if (!valid(c)) return A(0);
    const int64_t d = p.dim;
    int64_t count = 0;
    for (int64_t s = 0; s < p.window_slots; ++s) {
      const int64_t o = context_id(p, n, s);
      if (o < 0 || !valid(o)) continue;
      inputs[count++] = o;
      prefetch_row(in_row(o));
    }
    if (count == 0) return A(0);
    prefetch_row(out_row(c));
    std::fill(h, h + d, A(0));
    for (int64_t i = 0; i < count; ++i) axpy<V>(A(1), in_row(inputs[i]), h, d);
    const A inv = A(1) / A(count);
    for (int64_t j = 0; j < d; ++j) h[j] *= inv;
    const A loss = run_targets(targets, draw_targets(c, n, targets));
    for (int64_t i = 0; i < count; ++i) axpy<V>(A(1), e, in_row(inputs[i]), d);  // undivided, as gensim/word2vec.c
    return loss;
  }
};

template <class V, class T>
void update(const NegSamplingUpdateParams& p, ParallelFor parallel_for) {
  using A = typename V::value_type;
  std::atomic<int64_t> bad{-1};
  std::mutex mu;
  double total = 0.0;
  // Examples are handed out in small chunks from a shared counter rather than as one
  // fixed range per thread: examples differ in cost (window sizes), and on a busy
  // machine a thread that is descheduled would otherwise hold up the whole call.
  // With one thread the chunks run in order, so the result is the sequential one.
  // Chunks stay long (1/16 of the call): threads working on neighbouring text write the
  // same rows of frequent words, and their cache lines then bounce between cores
  // (chunks of 32 examples cost ~25% more CPU time than two halves).
  const int64_t kChunk = std::max<int64_t>(32, p.n / 16);
  std::atomic<int64_t> next{0};
  parallel_for((p.n + kChunk - 1) / kChunk, 1, [&](int64_t, int64_t) {
    const int64_t batch_elems = p.window_batch ? p.window_slots * (p.k + 1 + p.dim) : 0;
    std::vector<A> scratch(size_t(2 * p.dim + batch_elems));
    std::vector<int64_t> targets(size_t(2 * (p.k + 1))), inputs(size_t(p.window_slots));
    std::vector<T*> rows(p.window_batch ? size_t(p.window_slots + p.k + 1) : 0);
    A* grads = scratch.data() + 2 * p.dim;
    const Updater<V, T> u{p,
                          bad,
                          scratch.data(),
                          scratch.data() + p.dim,
                          targets.data(),
                          inputs.data(),
                          grads,
                          grads + p.window_slots * (p.k + 1),
                          rows.data()};
    double local = 0.0;
    for (int64_t n0 = next.fetch_add(kChunk); n0 < p.n; n0 = next.fetch_add(kChunk)) {
      const int64_t n1 = std::min(p.n, n0 + kChunk);
      if (!p.cbow && !p.window_batch)
        u.skipgram(n0, n1, &local);
      else
        for (int64_t n = n0; n < n1; ++n) local += double(p.cbow ? u.cbow(n) : u.window_batch(n));
    }
    const std::lock_guard<std::mutex> lock(mu);
    total += local;
  });
  *p.loss = total;
  *p.bad_index = bad.load();
}

// y[0:d] = alpha * x[0:d], y overwritten and never read: sgns_loss writes its gradients
// once, ~ (k + 2) * dim values per example (11 MB for a 4096 x (1 + 5) batch at dim 100),
// and ordinary stores would first read every destination line from memory. fp32 on x86
// uses 16-byte non-temporal stores from the first 16-byte boundary on: gradient rows
// start every dim * 4 bytes, and with 16-byte granularity a row of a dim divisible by 4
// has no partial stores at either end (full-vector granularity would split lines between
// ordinary and non-temporal stores, which measured slower). The caller fences (sfence)
// before the data is handed on.
template <class V, class T>
inline void scale_to_streaming(typename V::value_type alpha, const T* x, T* y, int64_t d) {
  int64_t i = 0;
#if PYATTN_X86
  if constexpr (std::is_same_v<T, float>) {
    for (; i < d && (reinterpret_cast<uintptr_t>(y + i) & 15) != 0; ++i) y[i] = alpha * x[i];
    const __m128 a = _mm_set1_ps(alpha);
    for (; i + 4 <= d; i += 4) _mm_stream_ps(y + i, _mm_mul_ps(a, _mm_loadu_ps(x + i)));
  }
#endif
  for (; i < d; ++i) y[i] = narrow<T>(alpha * widen(x[i]));
}

// sgns_loss, forward and backward in one routine: per example, the 1 + k logits
// x_j = h . u_j (h = w_in[centers[b]], u_0 = w_out[contexts[b]], u_j = w_out[negatives[b, j-1]]),
// then the loss and/or the row gradients d_u[b, j] = g_j h and d_h[b] = sum_j g_j u_j with
// g_j = f_b * d loss[b] / d x_j. The rows are random in tables much larger than the
// caches, so reading them is most of the cost: computing the gradients in the same pass
// as the loss (forward with gradients) reads every row once per training step, and the
// rows of the examples ahead are prefetched.
template <class V, class T>
struct LossExample {
  using A = typename V::value_type;
  const SgnsLossParams& p;
  std::atomic<int64_t>& bad;
  const T** u;  // [1 + k] scratch: the example's output rows
  A* g;         // [1 + k] scratch: f_b * d loss / d x_j

  const T* in_row(int64_t i) const { return static_cast<const T*>(p.w_in) + i * p.w_in_stride; }
  const T* out_row(int64_t i) const { return static_cast<const T*>(p.w_out) + i * p.w_out_stride; }
  int64_t target(int64_t b, int64_t j) const { return j == 0 ? p.contexts[b] : p.negatives[b * p.k + j - 1]; }
  bool in_range(int64_t i) const { return i >= 0 && i < p.vocab; }
  void record(int64_t i) const { bad.store(i, std::memory_order_relaxed); }  // any id outside [0, vocab)

  void prefetch(int64_t b) const {
    const int64_t bytes = p.dim * int64_t(sizeof(T));
    auto fetch = [&](const T* row) {
      const char* c = reinterpret_cast<const char*>(row);
      for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o);
      __builtin_prefetch(c + bytes - 1);  // rows need not start on a cache line
    };
    if (in_range(p.centers[b])) fetch(in_row(p.centers[b]));
    for (int64_t j = 0; j <= p.k; ++j)
      if (in_range(target(b, j))) fetch(out_row(target(b, j)));
  }

  // Returns loss[b] (0 when !want_loss); writes dh [dim] and du [1 + k, dim] unless null.
  // An out-of-range id is recorded in bad and gives loss 0 and zero gradients.
  A run(int64_t b, bool want_loss, A f, T* dh, T* du) const {
    const int64_t d = p.dim, nt = p.k + 1;
    bool ok = in_range(p.centers[b]);
    if (!ok) record(p.centers[b]);
    for (int64_t j = 0; ok && j < nt; ++j) {
      if (!in_range(target(b, j))) ok = false, record(target(b, j));
      else u[j] = out_row(target(b, j));
    }
    if (!ok) {
      if (du) std::fill(dh, dh + d, T(0)), std::fill(du, du + nt * d, T(0));
      return A(0);
    }
    const T* h = in_row(p.centers[b]);
    // With z_j = x_0 for the positive and -x_j for a negative, loss = sum_j softplus(-z_j)
    // = sum_j max(-z_j, 0) + log(prod_j (1 + e_j)), e_j = exp(-|z_j|) in (0, 1]: one log
    // per example rather than one per logit (libm's log1p cost more than the dot
    // products). q = prod_j (1 + e_j) - 1 is built as q += e_j + q * e_j, sums of
    // positive terms only, so it keeps full relative precision when all e_j are tiny.
    A loss = A(0), q = A(0);
    for (int64_t j = 0; j < nt; ++j) {
      const A x = dot<V>(h, u[j], d);
      const A z = j == 0 ? x : -x;
      const A e = exp_neg_abs(z);
      if (want_loss) {
        loss += z < A(0) ? -z : A(0);
        q += e + q * e;
      }
      if (du) {
        // d softplus(-z) / dz = -sigmoid(-z), and dz/dx = +-1
        const A sig_neg_z = (z >= A(0) ? e : A(1)) / (A(1) + e);
        g[j] = f * (j == 0 ? -sig_neg_z : sig_neg_z);
      }
    }
    if (want_loss) loss += std::log1p(q);
    if (du) {
      for (int64_t j = 0; j < nt; ++j) scale_to_streaming<V>(g[j], h, du + j * d, d);
      constexpr int W = V::W;
      int64_t i = 0;
      for (; i + W <= d; i += W) {
        V acc = V::set1(A(0));
        for (int64_t j = 0; j < nt; ++j) acc = V::fmadd(V::set1(g[j]), V::load(u[j] + i), acc);
        acc.store(dh + i);
      }
      for (; i < d; ++i) {
        A acc = A(0);
        for (int64_t j = 0; j < nt; ++j) acc += g[j] * widen(u[j][i]);
        dh[i] = narrow<T>(acc);
      }
    }
    return loss;
  }
};

// p.loss (if set) gets the losses; p.d_h and p.d_u (both set or both null) get the
// gradients for the upstream gradient f_b = p.dloss[b] (backward) or p.grad_scale
// (forward with gradients).
template <class V, class T>
void loss_pass(const SgnsLossParams& p, ParallelFor parallel_for) {
  using A = typename V::value_type;
  std::atomic<int64_t> bad{kSgnsLossNoBadId};
  const int64_t d = p.dim, nt = p.k + 1;
  const bool grads = p.d_u != nullptr;
  // Prefetch distance in examples: ~64 cache lines of rows in flight (one example ahead
  // at dim 100 fp32, where an example's 7 rows span ~50 lines; more for short rows).
  const int64_t lines = (nt + 1) * ((d * int64_t(sizeof(T)) + 63) / 64 + 1);
  const int64_t ahead = std::clamp<int64_t>(64 / lines, 1, 8);
  parallel_for(p.b, 64, [&](int64_t b0, int64_t b1) {
    std::vector<const T*> u(static_cast<size_t>(nt));
    std::vector<A> g(static_cast<size_t>(nt));
    const LossExample<V, T> ex{p, bad, u.data(), g.data()};
    for (int64_t b = b0; b < std::min(b1, b0 + ahead); ++b) ex.prefetch(b);
    for (int64_t b = b0; b < b1; ++b) {
      if (b + ahead < b1) ex.prefetch(b + ahead);
      const A f = !grads ? A(0) : p.dloss ? widen(static_cast<const T*>(p.dloss)[b]) : A(p.grad_scale);
      const A l = ex.run(b, p.loss != nullptr, f, grads ? static_cast<T*>(p.d_h) + b * d : nullptr,
                         grads ? static_cast<T*>(p.d_u) + b * nt * d : nullptr);
      if (p.loss) static_cast<T*>(p.loss)[b] = narrow<T>(l);
    }
#if PYATTN_X86
    _mm_sfence();  // scale_to_streaming's non-temporal stores, before the gradients are handed on
#endif
  });
  *p.bad_index = bad.load();
}

// fp32 and fp64 tables (the update and the loss are fp32- or fp64-accumulated).
template <class F>
void dispatch_f32_f64(DType dtype, F&& f) {
  if (dtype == DType::f64) return f(Types<VecD, double>{});
  return f(Types<VecF, float>{});
}

}  // namespace negsamp

inline void negative_sampling_update(const NegSamplingUpdateParams& p, ParallelFor pf) {
  negsamp::dispatch_f32_f64(p.dtype, [&](auto t) {
    using Ty = decltype(t);
    negsamp::update<typename Ty::Vec, typename Ty::Storage>(p, pf);
  });
}

inline void sgns_loss(const SgnsLossParams& p, ParallelFor pf) {
  negsamp::dispatch_f32_f64(p.dtype, [&](auto t) {
    using Ty = decltype(t);
    negsamp::loss_pass<typename Ty::Vec, typename Ty::Storage>(p, pf);
  });
}
