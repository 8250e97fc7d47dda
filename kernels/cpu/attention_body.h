// attention on the CPU, compiled once per ISA by cpu/isa_regions.h (no guard, no #includes).
// VecF / VecD and the tail helpers come from the region.
//
// Layout: scores are kept transposed, S^T [keys, queries], so that the softmax over keys
// runs down columns with the queries of a block in the vector lanes (running max, sum and
// rescale factors are vectors, no horizontal reductions). Every product is one broadcast-A
// micro-kernel, C[M, N] (+)= A[M, K] B[K, N], with A read through two strides (so A may be
// a matrix or its transpose) and B, C row-major with N a multiple of the vector width:
//   forward   S^T = K Q'^T            O += P V (A = P read through P^T's strides)
//   backward  S^T = K Q'^T, dP^T = V dO^T, dV += P^T dO, dK += dS^T Q, dQ += dS K
// Q' = q * scale * log2(e) so that scores are in base 2: exp(z) = 2^(z log2 e).
// Only Q (and dO) are transposed, once per query block; K and V blocks are used in place
// (fp32) or converted row by row (f16, bf16).
// Dropout (a compile-time DROP, so the p = 0 code is unchanged): per key block, a
// multiplier block M^T [keys, queries] from pyattn/dropout_math.h (integer hash loops
// that vectorise over the query lanes); forward O += (P^T .* M^T)^T V with M in {0, 1}
// and 1/(1-p) folded into the final 1/l; backward M in {0, 1/(1-p)}:
//   dV += (P .* M)^T dO,  dS = P .* (dP .* M - D)  (D = dO . O, O the dropped output).

namespace attn {

constexpr int64_t kBQ = 64;  // queries per block (the lanes of S^T), a multiple of every W
constexpr int64_t kBK = 64;  // keys per block (backward)
// Keys per forward block: twice kBK halves the online-softmax rescales and max passes per
// score; measured 6-15% less CPU time at L1024-4096, D64 on AVX2 (the backward, with two
// [keys, queries] blocks live, showed no clear gain).
constexpr int64_t kBKF = 128;

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Register tile: MR rows of C by NR vectors, accumulated over K in registers.
template <class V, int MR, int NR, bool ACC>
inline void gemm_tile(int64_t K, const typename V::value_type* a, int64_t sam, int64_t sak,
                      const typename V::value_type* b, int64_t ldb, typename V::value_type* c, int64_t ldc) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  V acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = ACC ? V::load(c + m * ldc + n * W) : V::set1(A(0));
  for (int64_t k = 0; k < K; ++k) {
    V bv[NR];
    for (int n = 0; n < NR; ++n) bv[n] = V::load(b + k * ldb + n * W);
    for (int m = 0; m < MR; ++m) {
      const V av = V::set1(a[m * sam + k * sak]);
      for (int n = 0; n < NR; ++n) acc[m][n] = V::fmadd(av, bv[n], acc[m][n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n].store(c + m * ldc + n * W);
}

// Tiles sized to the register file, with enough independent accumulators to cover the
// FMA latency: 6 x 64 floats on AVX-512 (24 of 32 zmm), 6 x 16 on AVX2 (12 of 16 ymm).
template <class V>
constexpr int kNR = V::W >= 16 ? 4 : (V::W >= 8 ? 2 : 4);
template <class V>
constexpr int kMR = V::W > 1 ? 6 : 4;

template <class V, int MR, bool ACC>
inline void gemm_rows(int64_t N, int64_t K, const typename V::value_type* a, int64_t sam, int64_t sak,
                      const typename V::value_type* b, int64_t ldb, typename V::value_type* c, int64_t ldc) {
  constexpr int W = V::W, NR = kNR<V>;
  const int64_t nv = N / W;
  int64_t n = 0;
  for (; n + NR <= nv; n += NR) gemm_tile<V, MR, NR, ACC>(K, a, sam, sak, b + n * W, ldb, c + n * W, ldc);
  for (; n < nv; ++n) gemm_tile<V, MR, 1, ACC>(K, a, sam, sak, b + n * W, ldb, c + n * W, ldc);
}

// C[M, N] (+)= A[M, K] B[K, N]: A(m, k) = a[m*sam + k*sak]; B, C row-major; N % W == 0.
template <class V, bool ACC>
void gemm(int64_t M, int64_t N, int64_t K, const typename V::value_type* a, int64_t sam, int64_t sak,
          const typename V::value_type* b, int64_t ldb, typename V::value_type* c, int64_t ldc) {
  constexpr int MR = kMR<V>;
  int64_t m = 0;
  for (; m + MR <= M; m += MR) gemm_rows<V, MR, ACC>(N, K, a + m * sam, sam, sak, b, ldb, c + m * ldc, ldc);
  const auto* ar = a + m * sam;
  auto* cr = c + m * ldc;
  switch (M - m) {
    case 5: gemm_rows<V, 5, ACC>(N, K, ar, sam, sak, b, ldb, cr, ldc); break;
    case 4: gemm_rows<V, 4, ACC>(N, K, ar, sam, sak, b, ldb, cr, ldc); break;
    case 3: gemm_rows<V, 3, ACC>(N, K, ar, sam, sak, b, ldb, cr, ldc); break;
    case 2: gemm_rows<V, 2, ACC>(N, K, ar, sam, sak, b, ldb, cr, ldc); break;
    case 1: gemm_rows<V, 1, ACC>(N, K, ar, sam, sak, b, ldb, cr, ldc); break;
    default: break;
  }
}

// dst[0, n) = src (converted), dst[n, np) = 0.
template <class V, class T>
inline void copy_row(const T* src, int64_t n, int64_t np, typename V::value_type* dst) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  int64_t j = 0;
  for (; j + W <= n; j += W) V::load(src + j).store(dst + j);
  if (j < n) load_partial<V>(src + j, int(n - j), A(0)).store(dst + j);
  for (j = round_up(n, W); j < np; ++j) dst[j] = A(0);
}

// Which keys query i (absolute) may see, from the causal / window / length rules:
// [lo(i), hi(i)), both non-decreasing in i.
struct KeyRange {
  int64_t off, wl, wr, lk;  // lk: keys that exist for this batch item (key_lengths applied)
  int64_t lo(int64_t i) const { return wl >= 0 ? std::min(lk, std::max<int64_t>(0, i + off - wl)) : 0; }
  int64_t hi(int64_t i) const {
    return wr >= 0 ? std::min(lk, std::max<int64_t>(0, i + off + wr + 1)) : lk;
  }
  static KeyRange of(const AttentionShape& s, int64_t b) {
    int64_t lk = s.lk;
    if (s.key_lengths) lk = std::min(lk, std::max<int64_t>(0, s.key_lengths[b]));
    return {s.diag_offset, s.window_left, s.window_right, lk};
  }
};

// Applies every mask to the score block S^T [nk, kBQ] (base-2 units) of queries
// [q0, q0 + nq) and keys [k0, k0 + nk): adds the additive mask, sets dropped entries
// (a MaskKind::keep mask's zeros, the window, key_lengths) to -inf. Lanes >= nq are left
// as they are.
template <class T, class A>
void apply_masks(const AttentionShape& s, const KeyRange& r, int64_t b, int64_t h, int64_t q0, int64_t nq,
                 int64_t k0, int64_t nk, A* st) {
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  if (s.mask_kind != MaskKind::none) {
    const A log2e = A(kLog2e);
    for (int64_t ii = 0; ii < nq; ++ii) {
      const int64_t mo = b * s.mask_stride[0] + h * s.mask_stride[1] + (q0 + ii) * s.mask_stride[2] + k0;
      if (s.mask_kind == MaskKind::keep) {
        const uint8_t* m = static_cast<const uint8_t*>(s.mask) + mo;
        for (int64_t j = 0; j < nk; ++j)
          if (!m[j]) st[j * kBQ + ii] = kNegInf;
      } else {
        const T* m = static_cast<const T*>(s.mask) + mo;
        for (int64_t j = 0; j < nk; ++j) st[j * kBQ + ii] += A(widen(m[j])) * log2e;
      }
    }
  }
  // Structural rules: only blocks on a boundary need per-element work.
  // There, row ii keeps the block's keys [lo, hi) and loses the two ends.
  if (r.lo(q0 + nq - 1) <= k0 && r.hi(q0) >= k0 + nk) return;
  for (int64_t ii = 0; ii < nq; ++ii) {
    const int64_t lo = std::clamp<int64_t>(r.lo(q0 + ii) - k0, 0, nk);
    const int64_t hi = std::clamp<int64_t>(r.hi(q0 + ii) - k0, lo, nk);
    for (int64_t j = 0; j < lo; ++j) st[j * kBQ + ii] = kNegInf;
    for (int64_t j = hi; j < nk; ++j) st[j * kBQ + ii] = kNegInf;
  }
}

// Dropout row keys (dropout_math::row_key, split into 32-bit words) of the query rows
// [q0, q0 + kBQ) of head h in batch item b; rows past lq get keys too (never used).
inline void dropout_rows(const AttentionShape& s, int64_t b, int64_t h, int64_t q0, uint32_t* lo, uint32_t* hi) {
  const uint64_t head = dropout_math::head_key(s.dropout_key[0], s.dropout_key[1], uint64_t(b), uint64_t(h));
  for (int64_t ii = 0; ii < kBQ; ++ii) {
    const uint64_t r = dropout_math::row_key(head, uint64_t(q0 + ii));
    lo[ii] = uint32_t(r);
    hi[ii] = uint32_t(r >> 32);
  }
}

// The multiplier block M^T [nk, kBQ] of keys [k0, k0 + nk) for the rows of `lo`, `hi`:
// `kept` where the element is kept, else 0. The inner loop has a fixed trip count and
// only 32-bit integer lanes, so it vectorises for each ISA region.
template <class A>
void dropout_block(const uint32_t* lo, const uint32_t* hi, uint32_t threshold, int64_t k0, int64_t nk, A kept,
                   A* mt) {
  for (int64_t j = 0; j < nk; ++j) {
    const uint32_t col = uint32_t(k0 + j);
    A* row = mt + j * kBQ;
    for (int64_t ii = 0; ii < kBQ; ++ii) row[ii] = dropout_math::bits(lo[ii], hi[ii], col) >= threshold ? kept : A(0);
  }
}

template <class V>
struct FwdWork {
  using A = typename V::value_type;
  std::vector<A> buf;
  std::vector<uint32_t> rows;  // dropout row keys: low words [kBQ], high words [kBQ]
  A *qt, *kb, *vb, *st, *o, *m, *mold, *l, *shift, *alpha, *mt;
  FwdWork(int64_t d, int64_t dvp, bool drop)
      : buf(size_t(d * kBQ + kBKF * d + kBKF * dvp + kBKF * kBQ + kBQ * dvp + 5 * kBQ + (drop ? kBKF * kBQ : 0))),
        rows(drop ? 2 * kBQ : 0) {
    A* p = buf.data();
    qt = p; p += d * kBQ;
    kb = p; p += kBKF * d;
    vb = p; p += kBKF * dvp;
    st = p; p += kBKF * kBQ;
    o = p; p += kBQ * dvp;
    m = p; p += kBQ;
    mold = p; p += kBQ;
    l = p; p += kBQ;
    shift = p; p += kBQ;
    alpha = p; p += kBQ;
    mt = p;  // [kBKF, kBQ] dropout multipliers, when drop
  }
};

// One block of queries [q0, q0 + kBQ) of head h in batch item b.
template <class V, class T, bool DROP>
void fwd_block(const AttentionFwdParams& p, int64_t b, int64_t h, int64_t q0, FwdWork<V>& w) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  const AttentionShape& s = p.s;
  const int64_t d = s.d, dv = s.dv, dvp = round_up(dv, W);
  const int64_t nq = std::min(kBQ, s.lq - q0), nqp = round_up(nq, W);
  const int64_t hk = h / (s.heads_q / s.heads_kv);
  const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1] + q0 * p.q_stride[2];
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
  T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] + q0 * p.out_stride[2];
  A* lse = static_cast<A*>(p.lse) + (b * s.heads_q + h) * s.lq + q0;
  const KeyRange r = KeyRange::of(s, b);
  const int64_t ks = r.lo(q0), ke = r.hi(q0 + nq - 1);

  // Q'^T [d, kBQ], lanes >= nq zero.
  const A c = A(s.scale) * A(kLog2e);
  for (int64_t dd = 0; dd < d; ++dd)
    for (int64_t ii = nq; ii < nqp; ++ii) w.qt[dd * kBQ + ii] = A(0);
  for (int64_t ii = 0; ii < nq; ++ii)
    for (int64_t dd = 0; dd < d; ++dd) w.qt[dd * kBQ + ii] = A(widen(q[ii * p.q_stride[2] + dd])) * c;
  std::fill(w.o, w.o + nq * dvp, A(0));
  std::fill(w.m, w.m + kBQ, kNegInf);
  std::fill(w.l, w.l + kBQ, A(0));
  if constexpr (DROP) dropout_rows(s, b, h, q0, w.rows.data(), w.rows.data() + kBQ);

  for (int64_t k0 = ks; k0 < ke; k0 += kBKF) {
    const int64_t nk = std::min(kBKF, ke - k0);
    const A* ka = nullptr;
    const A* va = nullptr;
    int64_t kld = d, vld = dvp;
    if constexpr (std::is_same_v<T, A>) {
      ka = k + k0 * p.k_stride[2];
      kld = p.k_stride[2];
    } else {
      for (int64_t j = 0; j < nk; ++j) copy_row<V>(k + (k0 + j) * p.k_stride[2], d, d, w.kb + j * d);
      ka = w.kb;
    }
    if (std::is_same_v<T, A> && dv % W == 0) {
      va = reinterpret_cast<const A*>(v + k0 * p.v_stride[2]);
      vld = p.v_stride[2];
    } else {
      for (int64_t j = 0; j < nk; ++j) copy_row<V>(v + (k0 + j) * p.v_stride[2], dv, dvp, w.vb + j * dvp);
      va = w.vb;
    }

    gemm<V, false>(nk, nqp, d, ka, kld, 1, w.qt, kBQ, w.st, kBQ);  // S^T = K Q'^T
    apply_masks<T>(s, r, b, h, q0, nq, k0, nk, w.st);
    if constexpr (DROP) dropout_block(w.rows.data(), w.rows.data() + kBQ, s.dropout_threshold, k0, nk, A(1), w.mt);

    // Online softmax per query lane: new max, rescale factor, P^T = 2^(S^T - max), sums.
    for (int64_t iv = 0; iv < nqp; iv += W) {
      V mx = V::set1(kNegInf);
      for (int64_t j = 0; j < nk; ++j) mx = V::max(mx, V::load(w.st + j * kBQ + iv));
      mx.store(w.shift + iv);
    }
    for (int64_t ii = 0; ii < nqp; ++ii) {
      const A mnew = std::max(w.m[ii], w.shift[ii]);
      // A lane with nothing seen yet keeps max -inf; shift by 0 so that 2^(-inf - 0) = 0.
      w.mold[ii] = w.m[ii];
      w.m[ii] = mnew;
      w.shift[ii] = mnew == kNegInf ? A(0) : mnew;
      w.alpha[ii] = w.mold[ii] - w.shift[ii];
    }
    for (int64_t iv = 0; iv < nqp; iv += W) V::exp2(V::load(w.alpha + iv)).store(w.alpha + iv);
    for (int64_t ii = 0; ii < nqp; ++ii)  // exactly 1 where the max held (the fast 2^0 is 1 + 1 ulp)
      if (w.mold[ii] == w.m[ii]) w.alpha[ii] = A(1);
    // The sums l take every probability; with DROP, P^T keeps only the kept ones.
    for (int64_t iv = 0; iv < nqp; iv += W) {
      const V sh = V::load(w.shift + iv);
      V sum0 = V::set1(A(0)), sum1 = sum0;
      int64_t j = 0;
      for (; j + 2 <= nk; j += 2) {
        A* s0 = w.st + j * kBQ + iv;
        const V e0 = V::exp2(V::load(s0) - sh), e1 = V::exp2(V::load(s0 + kBQ) - sh);
        if constexpr (DROP) {
          const A* m0 = w.mt + j * kBQ + iv;
          (e0 * V::load(m0)).store(s0);
          (e1 * V::load(m0 + kBQ)).store(s0 + kBQ);
        } else {
          e0.store(s0);
          e1.store(s0 + kBQ);
        }
        sum0 = sum0 + e0;
        sum1 = sum1 + e1;
      }
      if (j < nk) {
        A* s0 = w.st + j * kBQ + iv;
        const V e0 = V::exp2(V::load(s0) - sh);
        if constexpr (DROP)
          (e0 * V::load(w.mt + j * kBQ + iv)).store(s0);
        else
          e0.store(s0);
        sum0 = sum0 + e0;
      }
      V::fmadd(V::load(w.l + iv), V::load(w.alpha + iv), sum0 + sum1).store(w.l + iv);
    }
    for (int64_t ii = 0; ii < nq; ++ii) {
      if (w.alpha[ii] == A(1)) continue;
      const V al = V::set1(w.alpha[ii]);
      for (int64_t dd = 0; dd < dvp; dd += W) (V::load(w.o + ii * dvp + dd) * al).store(w.o + ii * dvp + dd);
    }
    gemm<V, true>(nq, dvp, nk, w.st, 1, kBQ, va, vld, w.o, dvp);  // O += P V
  }

  // out = O / l (times 1/(1-p) with DROP); lse = (max + log2 l) ln 2, natural log.
  // l == 0: nothing attended.
  const A ln2 = A(0.693147180559945309417232121458176568);
  const A oscale = DROP ? A(s.dropout_scale) : A(1);
  const int64_t dvv = dv - dv % W;
  for (int64_t ii = 0; ii < nq; ++ii) {
    const A l = w.l[ii];
    const V inv = V::set1(l > A(0) ? oscale / l : A(0));
    T* orow = out + ii * p.out_stride[2];
    const A* acc = w.o + ii * dvp;
    for (int64_t dd = 0; dd < dvv; dd += W) (V::load(acc + dd) * inv).store(orow + dd);
    if (dvv < dv) store_partial(V::load(acc + dvv) * inv, orow + dvv, int(dv - dvv));
    lse[ii] = l > A(0) ? (w.m[ii] + std::log2(l)) * ln2 : kNegInf;
  }
}

template <class V, class T, bool DROP>
void fwd_typed(const AttentionFwdParams& p, ParallelFor parallel_for) {
  const AttentionShape& s = p.s;
  const int64_t nqb = (s.lq + kBQ - 1) / kBQ;
  // Within a head, the last query blocks first: under causal masks they cost the most.
  run_dynamic(
      s.batch * s.heads_q * nqb, s.num_threads, parallel_for,
      [&] { return FwdWork<V>(s.d, round_up(s.dv, V::W), DROP); },
      [&](int64_t t, FwdWork<V>& w) {
        const int64_t qb = nqb - 1 - t % nqb, bh = t / nqb;
        fwd_block<V, T, DROP>(p, bh / s.heads_q, bh % s.heads_q, qb * kBQ, w);
      });
}

template <class V>
struct BwdWork {
  using A = typename V::value_type;
  std::vector<A> buf;
  std::vector<uint32_t> rows;  // dropout row keys: low words [kBQ], high words [kBQ]
  A *dk, *dv, *qt, *qr, *dot, *dor, *kb, *vb, *st, *dst, *dq, *lse2, *drow, *mt;
  BwdWork(int64_t lk, int64_t d, int64_t dp, int64_t dv, int64_t dvp, bool drop)
      : buf(size_t(lk * dp + lk * dvp + d * kBQ + kBQ * dp + dv * kBQ + kBQ * dvp + kBK * dp + kBK * dv +
                   2 * kBK * kBQ + kBQ * dp + 2 * kBQ + (drop ? kBK * kBQ : 0))),
        rows(drop ? 2 * kBQ : 0) {
    A* p = buf.data();
    this->dk = p; p += lk * dp;
    this->dv = p; p += lk * dvp;
    qt = p; p += d * kBQ;
    qr = p; p += kBQ * dp;
    dot = p; p += dv * kBQ;
    dor = p; p += kBQ * dvp;
    kb = p; p += kBK * dp;
    vb = p; p += kBK * dv;
    st = p; p += kBK * kBQ;
    dst = p; p += kBK * kBQ;
    dq = p; p += kBQ * dp;
    lse2 = p; p += kBQ;
    drow = p; p += kBQ;
    mt = p;  // [kBK, kBQ] dropout multipliers, when drop
  }
};

// Writes n values of acc * f to dst (converted to T).
template <class V, class T>
inline void store_scaled(const typename V::value_type* acc, int64_t n, typename V::value_type f, T* dst) {
  constexpr int W = V::W;
  const V fv = V::set1(f);
  const int64_t nv = n - n % W;
  for (int64_t j = 0; j < nv; j += W) (V::load(acc + j) * fv).store(dst + j);
  if (nv < n) store_partial(V::load(acc + nv) * fv, dst + nv, int(n - nv));
}

// Query block [q0, q0 + kBQ) of head h against the keys in [klo, khi): adds its share
// to w.dk, w.dv and writes its dq rows: to dq (scaled, as T) when dq_part is null, else
// unscaled to dq_part ([lq, dp] rows of this head: a partial sum over this key range).
template <class V, class T, bool DROP>
void bwd_block(const AttentionBwdParams& p, int64_t b, int64_t h, int64_t hk, int64_t q0, int64_t klo, int64_t khi,
               typename V::value_type* dq_part, BwdWork<V>& w) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  constexpr A log2e = A(kLog2e);
  const AttentionShape& s = p.s;
  const int64_t d = s.d, dv = s.dv, dp = round_up(d, W), dvp = round_up(dv, W);
  const int64_t nq = std::min(kBQ, s.lq - q0), nqp = round_up(nq, W);
  const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1] + q0 * p.q_stride[2];
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
  const T* o = static_cast<const T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] + q0 * p.out_stride[2];
  const T* dout = static_cast<const T*>(p.dout) + b * p.dout_stride[0] + h * p.dout_stride[1] + q0 * p.dout_stride[2];
  const A* lse = static_cast<const A*>(p.lse) + (b * s.heads_q + h) * s.lq + q0;
  const A* dlse = p.dlse ? static_cast<const A*>(p.dlse) + (b * s.heads_q + h) * s.lq + q0 : nullptr;
  T* dq = static_cast<T*>(p.dq) + b * p.dq_stride[0] + h * p.dq_stride[1] + q0 * p.dq_stride[2];
  T* dmask = p.dmask ? static_cast<T*>(p.dmask) + ((b * s.heads_q + h) * s.lq + q0) * s.lk : nullptr;
  const KeyRange r = KeyRange::of(s, b);
  const int64_t ks = std::max(klo, r.lo(q0)), ke = std::min(khi, r.hi(q0 + nq - 1));

  std::fill(w.dq, w.dq + nq * dp, A(0));
  if (ks < ke) {
    const A c = A(s.scale) * log2e;
    for (int64_t dd = 0; dd < d; ++dd)
      for (int64_t ii = nq; ii < nqp; ++ii) w.qt[dd * kBQ + ii] = A(0);
    for (int64_t dd = 0; dd < dv; ++dd)
      for (int64_t ii = nq; ii < nqp; ++ii) w.dot[dd * kBQ + ii] = A(0);
    for (int64_t ii = 0; ii < nqp; ++ii) {
      if (ii >= nq) {  // padding lanes: P = 2^(S - inf) = 0
        w.lse2[ii] = std::numeric_limits<A>::infinity();
        w.drow[ii] = A(0);
        continue;
      }
      const T* qrow = q + ii * p.q_stride[2];
      const T* dorow = dout + ii * p.dout_stride[2];
      const T* orow = o + ii * p.out_stride[2];
      copy_row<V>(qrow, d, dp, w.qr + ii * dp);
      copy_row<V>(dorow, dv, dvp, w.dor + ii * dvp);
      for (int64_t dd = 0; dd < d; ++dd) w.qt[dd * kBQ + ii] = w.qr[ii * dp + dd] * c;
      A D = A(0);  // D_i = dO_i . O_i (from the stored, rounded O, as the forward returned it)
      for (int64_t dd = 0; dd < dv; ++dd) {
        w.dot[dd * kBQ + ii] = w.dor[ii * dvp + dd];
        D += w.dor[ii * dvp + dd] * A(widen(orow[dd]));
      }
      // dS = P (dP - D) + dlse P = P (dP - (D - dlse)).
      w.drow[ii] = dlse ? D - dlse[ii] : D;
      // A row with nothing attended has lse -inf and every score -inf: shift by 0.
      w.lse2[ii] = lse[ii] == kNegInf ? A(0) : lse[ii] * log2e;
    }
    if constexpr (DROP) dropout_rows(s, b, h, q0, w.rows.data(), w.rows.data() + kBQ);

    for (int64_t k0 = ks; k0 < ke; k0 += kBK) {
      const int64_t nk = std::min(kBK, ke - k0);
      const A* ka = nullptr;  // K rows, ld kld, padded to dp when used as a B operand
      const A* va = nullptr;
      int64_t kld = dp, vld = dv;
      if (std::is_same_v<T, A> && d % W == 0) {
        ka = reinterpret_cast<const A*>(k + k0 * p.k_stride[2]);
        kld = p.k_stride[2];
      } else {
        for (int64_t j = 0; j < nk; ++j) copy_row<V>(k + (k0 + j) * p.k_stride[2], d, dp, w.kb + j * dp);
        ka = w.kb;
      }
      if constexpr (std::is_same_v<T, A>) {
        va = v + k0 * p.v_stride[2];
        vld = p.v_stride[2];
      } else {
        for (int64_t j = 0; j < nk; ++j) copy_row<V>(v + (k0 + j) * p.v_stride[2], dv, dv, w.vb + j * dv);
        va = w.vb;
      }

      gemm<V, false>(nk, nqp, d, ka, kld, 1, w.qt, kBQ, w.st, kBQ);  // S^T = K Q'^T
      apply_masks<T>(s, r, b, h, q0, nq, k0, nk, w.st);
      gemm<V, false>(nk, nqp, dv, va, vld, 1, w.dot, kBQ, w.dst, kBQ);  // dP^T = V dO^T
      // P^T = 2^(S^T - lse2); dS^T = P^T (dP^T - D), both in place. With DROP, the
      // gradient reaching P is dP .* M, and dV's operand is P .* M (M in {0, 1/(1-p)}).
      if constexpr (DROP)
        dropout_block(w.rows.data(), w.rows.data() + kBQ, s.dropout_threshold, k0, nk, A(s.dropout_scale), w.mt);
      for (int64_t iv = 0; iv < nqp; iv += W) {
        const V l2 = V::load(w.lse2 + iv), dr = V::load(w.drow + iv);
        for (int64_t j = 0; j < nk; ++j) {
          A* sp = w.st + j * kBQ + iv;
          A* dsp = w.dst + j * kBQ + iv;
          const V pv = V::exp2(V::load(sp) - l2);
          if constexpr (DROP) {
            const V mv = V::load(w.mt + j * kBQ + iv);
            (pv * mv).store(sp);
            (pv * (V::load(dsp) * mv - dr)).store(dsp);
          } else {
            pv.store(sp);
            (pv * (V::load(dsp) - dr)).store(dsp);
          }
        }
      }
      if (dmask) {
        for (int64_t ii = 0; ii < nq; ++ii)
          for (int64_t j = 0; j < nk; ++j) dmask[ii * s.lk + k0 + j] = narrow<T>(w.dst[j * kBQ + ii]);
      }
      gemm<V, true>(nk, dvp, nq, w.st, kBQ, 1, w.dor, dvp, w.dv + k0 * dvp, dvp);  // dV += P^T dO
      gemm<V, true>(nk, dp, nq, w.dst, kBQ, 1, w.qr, dp, w.dk + k0 * dp, dp);      // dK += dS^T Q
      gemm<V, true>(nq, dp, nk, w.dst, 1, kBQ, ka, kld, w.dq, dp);                 // dQ += dS K
    }
  }
  if (dq_part)
    std::copy(w.dq, w.dq + nq * dp, dq_part + q0 * dp);
  else
    for (int64_t ii = 0; ii < nq; ++ii) store_scaled<V>(w.dq + ii * dp, d, A(s.scale), dq + ii * p.dq_stride[2]);
}

template <class V, class T, bool DROP>
void bwd_typed(const AttentionBwdParams& p, ParallelFor parallel_for) {
  using A = typename V::value_type;
  const AttentionShape& s = p.s;
  const int64_t group = s.heads_q / s.heads_kv;
  const int64_t dp = round_up(s.d, V::W), dvp = round_up(s.dv, V::W);
  // A task owns one key/value head's keys [klo, khi): their dk, dv accumulate over every
  // query head of the group and every query block, so no two tasks write the same dk, dv.
  // With fewer heads than about two per thread, each head's keys are split into `nsplit`
  // ranges as well; dq then gets one partial sum per range (fp32 scratch, summed after).
  const int64_t nkb = (s.lk + kBK - 1) / kBK, heads = s.batch * s.heads_kv;
  const int64_t want = std::max<int64_t>(1, std::min((2 * std::max(1, s.num_threads) + heads - 1) / heads, nkb));
  const int64_t split_blocks = std::max<int64_t>(1, (nkb + want - 1) / want);  // lk = 0: one empty range
  // Every range non-empty: 5 blocks in 4 wanted ranges are 3 ranges of 2, 2 and 1 blocks.
  const int64_t nsplit = std::max<int64_t>(1, (nkb + split_blocks - 1) / split_blocks);
  const int64_t split_keys = split_blocks * kBK;
  const int64_t part_rows = s.batch * s.heads_q * s.lq;  // one dq partial: [batch, heads_q, lq, dp]
  std::vector<A> dq_parts(nsplit > 1 ? size_t(nsplit * part_rows * dp) : 0);

  run_dynamic(
      heads * nsplit, s.num_threads, parallel_for, [&] { return BwdWork<V>(s.lk, s.d, dp, s.dv, dvp, DROP); },
      [&](int64_t t, BwdWork<V>& w) {
        const int64_t sp = t % nsplit, bh = t / nsplit, b = bh / s.heads_kv, hk = bh % s.heads_kv;
        const int64_t klo = sp * split_keys, khi = std::min(s.lk, klo + split_keys);
        std::fill(w.dk + klo * dp, w.dk + khi * dp, A(0));
        std::fill(w.dv + klo * dvp, w.dv + khi * dvp, A(0));
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
          A* part = nsplit > 1 ? dq_parts.data() + (sp * part_rows + (b * s.heads_q + h) * s.lq) * dp : nullptr;
          for (int64_t q0 = 0; q0 < s.lq; q0 += kBQ) bwd_block<V, T, DROP>(p, b, h, hk, q0, klo, khi, part, w);
        }
        T* dk = static_cast<T*>(p.dk) + b * p.dk_stride[0] + hk * p.dk_stride[1];
        T* dv = static_cast<T*>(p.dv) + b * p.dv_stride[0] + hk * p.dv_stride[1];
        for (int64_t j = klo; j < khi; ++j) {
          store_scaled<V>(w.dk + j * dp, s.d, A(s.scale), dk + j * p.dk_stride[2]);
          store_scaled<V>(w.dv + j * dvp, s.dv, A(1), dv + j * p.dv_stride[2]);
        }
      });
  if (nsplit == 1) return;
  // dq = scale * (sum of the partials), row by row.
  parallel_for(part_rows, 64, [&](int64_t r0, int64_t r1) {
    std::vector<A> row(static_cast<size_t>(dp));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r % s.lq, bh = r / s.lq, h = bh % s.heads_q, b = bh / s.heads_q;
      std::copy(dq_parts.data() + r * dp, dq_parts.data() + (r + 1) * dp, row.begin());
      for (int64_t sp = 1; sp < nsplit; ++sp) {
        const A* src = dq_parts.data() + (sp * part_rows + r) * dp;
        for (int64_t dd = 0; dd < dp; dd += V::W) (V::load(row.data() + dd) + V::load(src + dd)).store(row.data() + dd);
      }
      T* dq = static_cast<T*>(p.dq) + b * p.dq_stride[0] + h * p.dq_stride[1] + i * p.dq_stride[2];
      store_scaled<V>(row.data(), s.d, A(s.scale), dq);
    }
  });
}

// y = x .* M (M in {0, scale}) over [batch, heads, lq, lk], a row per task. Scalar: it
// serves the attention weights of nn.MultiheadAttention (need_weights), which torch ops
// compute around it anyway.
template <class A, class T>
void dropout_typed(const AttentionDropoutParams& p, ParallelFor parallel_for) {
  parallel_for(p.batch * p.heads * p.lq, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, p.lk)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const AttentionDropoutRow row = attention_dropout_row(p, r);
                   const T* x = static_cast<const T*>(p.x) + row.x_offset;
                   T* y = static_cast<T*>(p.y) + row.y_offset;
                   for (int64_t j = 0; j < p.lk; ++j) {
                     const A m =
                         dropout_math::bits(row.key_lo, row.key_hi, uint32_t(j)) >= p.threshold ? A(p.scale) : A(0);
                     y[j] = narrow<T>(A(widen(x[j])) * m);
                   }
                 }
               });
}

// ---- attention with its weights (need_weights inference), in row layout ----
// The weights are wanted, so rows of the score matrix are formed in full, each softmaxed
// once. A task is a block of kBQ queries of batch item b, every query head in turn:
//   S [nq, lkp] = Q K'^T           (K'^T [d, lkp]: k * scale * log2 e, transposed once per
//                                   call for each kv head, columns past lk zero)
//   E = 2^(S - row max), l = row sums; weights row = E / l (per head), or
//   wacc [nq, lkp] += E / (l * heads_q), written after the last head (head mean)
//   O [nq, dvp] = E V, out row = O / l.
// S and wacc stay in the cache, so each weight is written to memory once.

template <class V>
struct WeightsWork {
  using A = typename V::value_type;
  std::vector<A> buf;
  A *qr, *s, *o, *wacc, *rinv;
  WeightsWork(int64_t d, int64_t lkp, int64_t dvp, bool average)
      : buf(size_t(kBQ * d + kBQ * lkp + kBQ * dvp + (average ? kBQ * lkp : 0) + kBQ)) {
    A* p = buf.data();
    qr = p; p += kBQ * d;      // query rows [kBQ, d]
    s = p; p += kBQ * lkp;     // scores, then E [kBQ, lkp]
    o = p; p += kBQ * dvp;     // E V [kBQ, dvp]
    rinv = p; p += kBQ;        // 1 / l per row (0 for a row with no key left)
    wacc = p;                  // head mean [kBQ, lkp], when average
  }
};

// Score row z [lkp] of query i (head h, batch item b), base 2, becomes E = 2^(z - max)
// over the keys the masks leave (0 elsewhere and past lk); returns 1 / sum(E), or 0
// when no key is left.
template <class V, class T>
typename V::value_type softmax_row_unnormalised(const AttentionShape& s, const KeyRange& r, int64_t b, int64_t h,
                                                int64_t i, int64_t lkp, typename V::value_type* z) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  const A log2e = A(kLog2e);
  if (s.mask_kind != MaskKind::none) {
    const int64_t mo = b * s.mask_stride[0] + h * s.mask_stride[1] + i * s.mask_stride[2];
    if (s.mask_kind == MaskKind::keep) {
      const uint8_t* m = static_cast<const uint8_t*>(s.mask) + mo;
      for (int64_t j = 0; j < s.lk; ++j)
        if (!m[j]) z[j] = kNegInf;
    } else {
      const T* m = static_cast<const T*>(s.mask) + mo;
      for (int64_t j = 0; j < s.lk; ++j) z[j] += A(widen(m[j])) * log2e;
    }
  }
  const int64_t lo = r.lo(i), hi = std::max(lo, r.hi(i));
  std::fill(z, z + lo, kNegInf);
  std::fill(z + hi, z + lkp, kNegInf);  // also the padding columns
  V mx = V::set1(kNegInf);
  for (int64_t j = 0; j < lkp; j += W) mx = V::max(mx, V::load(z + j));
  const A m = mx.hmax();
  const V shift = V::set1(m == kNegInf ? A(0) : m);  // a row with nothing left: 2^(-inf - 0) = 0
  V sum = V::set1(A(0));
  for (int64_t j = 0; j < lkp; j += W) {
    const V e = V::exp2(V::load(z + j) - shift);
    e.store(z + j);
    sum = sum + e;
  }
  const A l = sum.hsum();
  return l > A(0) ? A(1) / l : A(0);
}

// One block of queries [q0, q0 + kBQ) of batch item b, every head.
template <class V, class T>
void weights_block(const AttentionWeightsParams& p, int64_t b, int64_t q0, const typename V::value_type* kt_all,
                   const typename V::value_type* vt_all, WeightsWork<V>& w) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  const AttentionShape& s = p.s;
  const int64_t d = s.d, dv = s.dv, lk = s.lk, lkp = round_up(lk, W), dvp = round_up(dv, W);
  const int64_t nq = std::min(kBQ, s.lq - q0), group = s.heads_q / s.heads_kv;
  const bool v_in_place = std::is_same_v<T, A> && dv % W == 0;
  const KeyRange r = KeyRange::of(s, b);
  const A head_share = A(1) / A(s.heads_q);
  T* weights = static_cast<T*>(p.weights);
  for (int64_t h = 0; h < s.heads_q; ++h) {
    const int64_t hk = h / group;
    const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1] + q0 * p.q_stride[2];
    for (int64_t ii = 0; ii < nq; ++ii) copy_row<V>(q + ii * p.q_stride[2], d, d, w.qr + ii * d);
    const A* kt = kt_all + (b * s.heads_kv + hk) * d * lkp;
    gemm<V, false>(nq, lkp, d, w.qr, d, 1, kt, lkp, w.s, lkp);  // S = Q K'^T
    for (int64_t ii = 0; ii < nq; ++ii) {
      A* e = w.s + ii * lkp;
      const A inv = softmax_row_unnormalised<V, T>(s, r, b, h, q0 + ii, lkp, e);
      w.rinv[ii] = inv;
      if (!p.average_heads) {
        store_scaled<V>(e, lk, inv, weights + ((b * s.heads_q + h) * s.lq + q0 + ii) * lk);
        continue;
      }
      const V share = V::set1(inv * head_share);
      A* acc = w.wacc + ii * lkp;
      for (int64_t j = 0; j < lkp; j += W)
        (h == 0 ? V::load(e + j) * share : V::fmadd(V::load(e + j), share, V::load(acc + j))).store(acc + j);
    }
    const A* va = v_in_place ? reinterpret_cast<const A*>(static_cast<const T*>(p.v) + b * p.v_stride[0] +
                                                          hk * p.v_stride[1])
                             : vt_all + (b * s.heads_kv + hk) * lk * dvp;
    const int64_t vld = v_in_place ? p.v_stride[2] : dvp;
    gemm<V, false>(nq, dvp, lk, w.s, lkp, 1, va, vld, w.o, dvp);  // O = E V
    T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] + q0 * p.out_stride[2];
    for (int64_t ii = 0; ii < nq; ++ii) store_scaled<V>(w.o + ii * dvp, dv, w.rinv[ii], out + ii * p.out_stride[2]);
  }
  if (p.average_heads)
    for (int64_t ii = 0; ii < nq; ++ii)
      store_scaled<V>(w.wacc + ii * lkp, lk, A(1), weights + (b * s.lq + q0 + ii) * lk);
}

template <class V, class T>
void weights_typed(const AttentionWeightsParams& p, ParallelFor parallel_for) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  const AttentionShape& s = p.s;
  const int64_t d = s.d, lk = s.lk, lkp = round_up(lk, W), dvp = round_up(s.dv, W);
  const bool v_in_place = std::is_same_v<T, A> && s.dv % W == 0;
  // K'^T per kv head [d, lkp], and V converted to [lk, dvp] rows where it is not used in place.
  std::vector<A> kt_all(size_t(s.batch * s.heads_kv * d * lkp));
  std::vector<A> vt_all(v_in_place ? 0 : size_t(s.batch * s.heads_kv * lk * dvp));
  const A c = A(s.scale) * A(kLog2e);
  parallel_for(s.batch * s.heads_kv, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / s.heads_kv, hk = t % s.heads_kv;
      const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
      A* kt = kt_all.data() + t * d * lkp;
      for (int64_t j = 0; j < lk; ++j)
        for (int64_t dd = 0; dd < d; ++dd) kt[dd * lkp + j] = A(widen(k[j * p.k_stride[2] + dd])) * c;
      for (int64_t dd = 0; dd < d; ++dd) std::fill(kt + dd * lkp + lk, kt + (dd + 1) * lkp, A(0));
      if (v_in_place) continue;
      const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
      for (int64_t j = 0; j < lk; ++j) copy_row<V>(v + j * p.v_stride[2], s.dv, dvp, vt_all.data() + (t * lk + j) * dvp);
    }
  });
  const int64_t nqb = (s.lq + kBQ - 1) / kBQ;
  run_dynamic(
      s.batch * nqb, s.num_threads, parallel_for, [&] { return WeightsWork<V>(d, lkp, dvp, p.average_heads); },
      [&](int64_t t, WeightsWork<V>& w) {
        weights_block<V, T>(p, t / nqb, (t % nqb) * kBQ, kt_all.data(), vt_all.data(), w);
      });
}

}  // namespace attn

inline void attention_fwd(const AttentionFwdParams& p, ParallelFor parallel_for) {
  dispatch_dtype(p.s.dtype, [&](auto types) {
    using V = typename decltype(types)::Vec;
    using T = typename decltype(types)::Storage;
    if (p.s.dropout)
      attn::fwd_typed<V, T, true>(p, parallel_for);
    else
      attn::fwd_typed<V, T, false>(p, parallel_for);
  });
}

inline void attention_weights(const AttentionWeightsParams& p, ParallelFor parallel_for) {
  dispatch_dtype(p.s.dtype, [&](auto types) {
    attn::weights_typed<typename decltype(types)::Vec, typename decltype(types)::Storage>(p, parallel_for);
  });
}

inline void attention_bwd(const AttentionBwdParams& p, ParallelFor parallel_for) {
  dispatch_dtype(p.s.dtype, [&](auto types) {
    using V = typename decltype(types)::Vec;
    using T = typename decltype(types)::Storage;
    if (p.s.dropout)
      attn::bwd_typed<V, T, true>(p, parallel_for);
    else
      attn::bwd_typed<V, T, false>(p, parallel_for);
  });
}

inline void attention_dropout(const AttentionDropoutParams& p, ParallelFor parallel_for) {
  dispatch_dtype(p.dtype, [&](auto types) {
    attn::dropout_typed<typename decltype(types)::Vec::value_type, typename decltype(types)::Storage>(p,
                                                                                                        parallel_for);
  });
}
