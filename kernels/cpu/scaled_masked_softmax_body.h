// scaled_masked_softmax on the CPU, compiled once per ISA by cpu/isa_regions.h (no
// guard, no #includes). VecF / VecD and the tail helpers come from the region.
//
// Per row, with z = scale*x + mask (-inf where masked):
//   pass 1 writes u to an fp32 (fp64) scratch row and takes its max; u = z, or, when
//          there is no additive mask and scale > 0, u = x with -inf where masked, so
//          that z = scale*u and the scale joins the log2e multiply of pass 2 (max z =
//          scale * max u). Only this pass reads x and the mask;
//   pass 2 overwrites scratch with e = 2^((u - max u) * scale * log2e) and sums it.
//          u - max is taken before the multiply so that large logits lose no precision
//          (the error stays relative to u - max, not to u);
//   pass 3 writes y = e / sum, with non-temporal stores when y is too large to stay in
//          cache (no read-for-ownership of y's lines: DRAM sees y written once).
// Passes 2 and 3 hit the row in L1/L2, so DRAM sees x and the mask read once and y
// written once. Columns j > i under `causal` are never read.

namespace smsoftmax {

// u for one row, a vector at a time: z = scale * x + mask, or, when kScaleLater, x with
// -inf where masked (the scale is applied in pass 2; never with an additive mask).
template <class V, class T, MaskKind MK, bool kScaleLater>
struct RowScores {
  static_assert(!(kScaleLater && MK == MaskKind::additive), "an additive mask needs z in pass 1");
  using A = typename V::value_type;
  const T* x;
  const void* mask;  // row of the mask: uint8_t (MaskKind::drop: nonzero = masked out) or T (additive)
  V scale;

  V full(int64_t j) const {
    const V xv = V::load(x + j);
    if constexpr (MK == MaskKind::additive) return V::fmadd(xv, scale, V::load(static_cast<const T*>(mask) + j));
    const V z = kScaleLater ? xv : xv * scale;
    if constexpr (MK == MaskKind::drop) return V::masked_neg_inf(z, static_cast<const uint8_t*>(mask) + j);
    return z;
  }
  // Lanes [0, n) of the row from j; the rest -inf.
  V partial(int64_t j, int n) const {
    const V xv = load_partial<V>(x + j, n, A(0));
    V z = kScaleLater ? xv : xv * scale;
    if constexpr (MK == MaskKind::drop) z = masked_neg_inf_partial(z, static_cast<const uint8_t*>(mask) + j, n);
    if constexpr (MK == MaskKind::additive) z = V::fmadd(xv, scale, load_partial<V>(static_cast<const T*>(mask) + j, n, A(0)));
    alignas(64) A tmp[V::W];
    z.store(tmp);
    for (int k = n; k < V::W; ++k) tmp[k] = -std::numeric_limits<A>::infinity();
    return V::load(tmp);
  }
};

template <class T>
void fill_zero(T* y, int64_t n) { std::memset(static_cast<void*>(y), 0, sizeof(T) * size_t(n)); }

// Starts loading the next row's x and mask for columns [j, j + 2W) while this row
// computes (pass 2 makes no DRAM accesses), so that pass 1 of the next row finds them in
// cache instead of waiting on DRAM: the hardware prefetcher runs only a few lines ahead
// of pass 1's short burst of loads. Not on the scalar path (one call per 2 elements).
template <class V, class T, MaskKind MK>
inline void prefetch_next_row(const T* x, const void* mask, int64_t j) {
  if constexpr (V::W > 1) {
    constexpr int kBytes = 2 * V::W * int(sizeof(T));
    for (int b = 0; b < kBytes; b += 64) __builtin_prefetch(reinterpret_cast<const char*>(x + j) + b);
    if constexpr (MK == MaskKind::additive)
      for (int b = 0; b < kBytes; b += 64) __builtin_prefetch(reinterpret_cast<const char*>(static_cast<const T*>(mask) + j) + b);
    if constexpr (MK == MaskKind::drop)
      if (j % 64 < 2 * V::W) __builtin_prefetch(static_cast<const uint8_t*>(mask) + j);
  }
}

// Rows [r0, r1) of the flattened [batch*heads*sq] row index; scratch holds sk + W values.
// `stream`: write y with non-temporal stores where a row is aligned for them.
template <class V, class T, MaskKind MK, bool kScaleLater>
void fwd_rows(const ScaledMaskedSoftmaxFwdParams& p, int64_t r0, int64_t r1, bool stream,
              typename V::value_type* scratch) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  constexpr A kLog2eA = A(kLog2e);
  const int64_t sk = p.sk;
  struct Row {
    const T* x;
    const void* mask;  // uint8_t (drop) or T (additive)
    T* y;
  };
  const auto row_at = [&p](int64_t r) {
    const int64_t i = r % p.sq, bh = r / p.sq, h = bh % p.heads, b = bh / p.heads;
    const int64_t mo = b * p.mask_stride[0] + h * p.mask_stride[1] + i * p.mask_stride[2];
    const void* mask = nullptr;
    if constexpr (MK == MaskKind::drop) mask = static_cast<const uint8_t*>(p.mask) + mo;
    if constexpr (MK == MaskKind::additive) mask = static_cast<const T*>(p.mask) + mo;
    return Row{static_cast<const T*>(p.x) + b * p.x_stride[0] + h * p.x_stride[1] + i * p.x_stride[2], mask,
               static_cast<T*>(p.y) + b * p.y_stride[0] + h * p.y_stride[1] + i * p.y_stride[2]};
  };
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t i = r % p.sq;
    const Row row = row_at(r), next = row_at(r + 1 < r1 ? r + 1 : r);
    T* y = row.y;
    const RowScores<V, T, MK, kScaleLater> z{row.x, row.mask, V::set1(A(p.scale))};
    const int64_t n = p.causal ? std::min(sk, i + 1) : sk;  // columns that can be nonzero
    const int64_t nv = n - n % W;             // columns in full vectors
    const int tail = int(n - nv);
    const int64_t padded = nv + (tail ? W : 0);  // scratch columns written by pass 1

    // Pass 1: u to scratch and its max (two accumulators hide the max latency).
    V m0 = V::set1(-std::numeric_limits<A>::infinity()), m1 = m0;
    int64_t j = 0;
    for (; j + 2 * W <= nv; j += 2 * W) {
      const V a = z.full(j), c = z.full(j + W);
      a.store(scratch + j);
      c.store(scratch + j + W);
      m0 = V::max(m0, a);
      m1 = V::max(m1, c);
    }
    if (j < nv) {
      const V a = z.full(j);
      a.store(scratch + j);
      m0 = V::max(m0, a);
    }
    if (tail) {
      const V a = z.partial(nv, tail);
      a.store(scratch + nv);
      m1 = V::max(m1, a);
    }
    const A mx = V::max(m0, m1).hmax();
    if (mx == -std::numeric_limits<A>::infinity()) {  // fully masked row: y = 0, no NaN
      fill_zero(y, sk);
      continue;
    }

    // Pass 2: e = 2^((u - max) * scale * log2e) in place, and its sum (-inf lanes give 0).
    const V vmx = V::set1(mx), log2e = V::set1(kScaleLater ? A(p.scale) * kLog2eA : kLog2eA);  // u -> log2 units
    V s0 = V::set1(A(0)), s1 = s0;
    for (j = 0; j + 2 * W <= padded; j += 2 * W) {
      prefetch_next_row<V, T, MK>(next.x, next.mask, j);
      const V a = V::exp2((V::load(scratch + j) - vmx) * log2e);
      const V c = V::exp2((V::load(scratch + j + W) - vmx) * log2e);
      a.store(scratch + j);
      c.store(scratch + j + W);
      s0 = s0 + a;
      s1 = s1 + c;
    }
    if (j < padded) {
      const V a = V::exp2((V::load(scratch + j) - vmx) * log2e);
      a.store(scratch + j);
      s0 = s0 + a;
    }

    // Pass 3: y = e / sum; masked-off causal columns are 0.
    const V inv = V::set1(A(1) / (s0 + s1).hsum());
    if (stream && reinterpret_cast<uintptr_t>(y) % (sizeof(T) * W) == 0) {
      for (j = 0; j < nv; j += W) (V::load(scratch + j) * inv).stream(y + j);
    } else {
      for (j = 0; j < nv; j += W) (V::load(scratch + j) * inv).store(y + j);
    }
    if (tail) store_partial(V::load(scratch + nv) * inv, y + nv, tail);
    if (n < sk) fill_zero(y + n, sk - n);
  }
  if (stream) V::stream_fence();
}

// dx = scale * y * (dy - sum(dy * y)) for rows [r0, r1). dx may alias dy (same index).
template <class V, class T>
void bwd_rows(const ScaledMaskedSoftmaxBwdParams& p, int64_t r0, int64_t r1) {
  using A = typename V::value_type;
  constexpr int W = V::W;
  const int64_t sk = p.sk, nv = sk - sk % W;
  const int tail = int(sk - nv);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t i = r % p.sq, bh = r / p.sq, h = bh % p.heads, b = bh / p.heads;
    const T* y = static_cast<const T*>(p.y) + b * p.y_stride[0] + h * p.y_stride[1] + i * p.y_stride[2];
    const T* dy = static_cast<const T*>(p.dy) + b * p.dy_stride[0] + h * p.dy_stride[1] + i * p.dy_stride[2];
    T* dx = static_cast<T*>(p.dx) + b * p.dx_stride[0] + h * p.dx_stride[1] + i * p.dx_stride[2];

    V d0 = V::set1(A(0)), d1 = d0;
    int64_t j = 0;
    for (; j + 2 * W <= nv; j += 2 * W) {
      d0 = V::fmadd(V::load(y + j), V::load(dy + j), d0);
      d1 = V::fmadd(V::load(y + j + W), V::load(dy + j + W), d1);
    }
    if (j < nv) d0 = V::fmadd(V::load(y + j), V::load(dy + j), d0);
    if (tail) d1 = V::fmadd(load_partial<V>(y + nv, tail, A(0)), load_partial<V>(dy + nv, tail, A(0)), d1);
    const V dot = V::set1((d0 + d1).hsum());
    const V scale = V::set1(A(p.scale));

    for (j = 0; j < nv; j += W) (scale * V::load(y + j) * (V::load(dy + j) - dot)).store(dx + j);
    if (tail) {
      const V yt = load_partial<V>(y + nv, tail, A(0)), dyt = load_partial<V>(dy + nv, tail, A(0));
      store_partial(scale * yt * (dyt - dot), dx + nv, tail);
    }
  }
}

// Rows per task: enough work per task (~32k elements) to amortise taking it.
inline int64_t row_grain(int64_t sk) { return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(sk, 1)); }

// Calls rows(r0, r1, work) over every row in blocks of row_grain rows, on a dynamic
// schedule: these kernels are memory-bound and fault in fresh output pages, so the
// threads' speeds differ and a fixed split would leave one waiting.
template <class MakeWork, class Rows>
void for_row_blocks(int64_t rows_total, int64_t sk, int threads, ParallelFor parallel_for, MakeWork make_work,
                    Rows rows) {
  const int64_t grain = row_grain(sk), blocks = (rows_total + grain - 1) / grain;
  run_dynamic(blocks, threads, parallel_for, make_work, [&](int64_t t, auto& work) {
    rows(t * grain, std::min(rows_total, (t + 1) * grain), work);
  });
}

// Outputs of at least this many bytes are written around the caches: they cannot all
// be in cache when the caller reads them, and skipping the read-for-ownership of their
// lines saves a third of the DRAM traffic.
constexpr int64_t kStreamMinBytes = int64_t(16) << 20;

// A worker's scratch row of n values, 64-byte aligned so that no vector access splits a
// cache line (malloc alone gives 16).
template <class A>
struct ScratchRow {
  std::vector<A> buf;
  explicit ScratchRow(int64_t n) : buf(size_t(n) + 64 / sizeof(A)) {}
  A* data() {
    const uintptr_t a = (reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63);
    return reinterpret_cast<A*>(a);
  }
};

template <class V, class T, MaskKind MK, bool kScaleLater>
void fwd_all(const ScaledMaskedSoftmaxFwdParams& p, ParallelFor parallel_for) {
  using A = typename V::value_type;
  const bool stream = p.batch * p.heads * p.sq * p.sk * int64_t(sizeof(T)) >= kStreamMinBytes;
  for_row_blocks(
      p.batch * p.heads * p.sq, p.sk, p.num_threads, parallel_for, [&] { return ScratchRow<A>(p.sk + V::W); },
      [&](int64_t r0, int64_t r1, ScratchRow<A>& scratch) {
        fwd_rows<V, T, MK, kScaleLater>(p, r0, r1, stream, scratch.data());
      });
}

}  // namespace smsoftmax

inline void scaled_masked_softmax_fwd(const ScaledMaskedSoftmaxFwdParams& p, ParallelFor parallel_for) {
  dispatch_dtype(p.dtype, [&](auto types) {
    using V = typename decltype(types)::Vec;
    using T = typename decltype(types)::Storage;
    const bool later = p.scale > 0;  // max(scale * u) = scale * max(u) needs scale > 0
    switch (p.mask_kind) {
      case MaskKind::none:
        return later ? smsoftmax::fwd_all<V, T, MaskKind::none, true>(p, parallel_for)
                     : smsoftmax::fwd_all<V, T, MaskKind::none, false>(p, parallel_for);
      case MaskKind::drop:
        return later ? smsoftmax::fwd_all<V, T, MaskKind::drop, true>(p, parallel_for)
                     : smsoftmax::fwd_all<V, T, MaskKind::drop, false>(p, parallel_for);
      case MaskKind::additive: return smsoftmax::fwd_all<V, T, MaskKind::additive, false>(p, parallel_for);
      case MaskKind::keep: throw std::invalid_argument("scaled_masked_softmax reads MaskKind::drop, not keep");
    }
  });
}

inline void scaled_masked_softmax_bwd(const ScaledMaskedSoftmaxBwdParams& p, ParallelFor parallel_for) {
  dispatch_dtype(p.dtype, [&](auto types) {
    using V = typename decltype(types)::Vec;
    using T = typename decltype(types)::Storage;
    smsoftmax::for_row_blocks(
        p.batch * p.heads * p.sq, p.sk, p.num_threads, parallel_for, [] { return 0; },
        [&](int64_t r0, int64_t r1, int) { smsoftmax::bwd_rows<V, T>(p, r0, r1); });
  });
}
