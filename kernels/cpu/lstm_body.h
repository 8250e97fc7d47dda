// lstm pointwise kernels on the CPU, compiled once per ISA by cpu/isa_regions.h (no
// guard, no #includes). VecF / VecD and the tail helpers come from the region.
//
// One pass per row: the four gate blocks of a column chunk are read together, so the
// gates, c and the outputs are each touched once. Rows go to threads in chunks.

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

// log2(e) split in two: kLog2e + kLog2eLo is log2(e) to ~2^-48.
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
    const V t = na * V::set1(kLog2e);
    const V t_lo = V::fmadd(na, V::set1(kLog2eLo), V::fmadd(na, V::set1(kLog2e), zero - t));
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
    const V e = V::exp2(a * V::set1(-2.f * kLog2e));
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

template <class V, class T>
void fwd_rows(const LstmFwdParams& p, int64_t r0, int64_t r1) {
  const int64_t H = p.hidden;
  const T* bias[2] = {static_cast<const T*>(p.bias[0]), static_cast<const T*>(p.bias[1])};
  for (int64_t r = r0; r < r1; ++r) {
    const T* z = static_cast<const T*>(p.gates) + r * p.gates_stride;
    T* act = static_cast<T*>(p.act) + r * p.act_stride;
    const T* c = static_cast<const T*>(p.c) + r * p.c_stride;
    T* c_out = static_cast<T*>(p.c_out) + r * p.c_out_stride;
    T* h_out = static_cast<T*>(p.h_out) + r * p.h_out_stride;
    for (int64_t j = 0; j < H; j += V::W) {
      const int n = int(std::min<int64_t>(V::W, H - j));
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

template <class V, class T>
void bwd_rows(const LstmBwdParams& p, int64_t r0, int64_t r1) {
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
    for (int64_t j = 0; j < H; j += V::W) {
      const int n = int(std::min<int64_t>(V::W, H - j));
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
  parallel_for(p.n, row_grain(p.hidden), [&](int64_t r0, int64_t r1) { fwd_rows<V, T>(p, r0, r1); });
}

template <class V, class T>
void bwd_typed(const LstmBwdParams& p, ParallelFor parallel_for) {
  parallel_for(p.n, row_grain(p.hidden), [&](int64_t r0, int64_t r1) { bwd_rows<V, T>(p, r0, r1); });
}

}  // namespace lstmk

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
