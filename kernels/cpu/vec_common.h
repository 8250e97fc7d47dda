// Helpers shared by every vector type: partial loads/stores through a small stack
// buffer, so each kernel has one code path for full and partial vectors, and the
// dtype -> (vector, storage) type dispatch. Included inside an ISA namespace after its
// VecF / VecD (no guard, no #includes).

template <class V, class T>
struct Types {
  using Vec = V;      // accumulation lanes: VecF (float) or VecD (double)
  using Storage = T;  // element type in memory
};

// Calls f(Types<Vec, Storage>{}) for the tensor dtype: fp32/fp16/bf16 accumulate in
// float lanes, fp64 in double.
template <class F>
void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f(Types<VecF, float>{});
    case DType::f64: return f(Types<VecD, double>{});
    case DType::f16: return f(Types<VecF, f16>{});
    case DType::bf16: return f(Types<VecF, bf16>{});
  }
}

// Lanes [0, n) from p, the rest `fill`.
template <class V, class T>
inline V load_partial(const T* p, int n, typename V::value_type fill) {
  alignas(64) typename V::value_type tmp[V::W];
  for (int k = 0; k < V::W; ++k) tmp[k] = k < n ? widen(p[k]) : fill;
  return V::load(tmp);
}

// Writes lanes [0, n) of v to p.
template <class V, class T>
inline void store_partial(V v, T* p, int n) {
  alignas(64) typename V::value_type tmp[V::W];
  v.store(tmp);
  for (int k = 0; k < n; ++k) p[k] = narrow<T>(tmp[k]);
}

// masked_neg_inf for the first n mask bytes; lanes >= n read as "not masked".
template <class V>
inline V masked_neg_inf_partial(V z, const uint8_t* m, int n) {
  alignas(64) uint8_t tmp[V::W > 16 ? V::W : 16] = {};
  for (int k = 0; k < n; ++k) tmp[k] = m[k];
  return V::masked_neg_inf(z, tmp);
}
