// 16-lane float vector on AVX-512 (F, BW, VL, DQ) + F16C. Included inside namespace
// pyattn::cpu::avx512 under a matching target region (no guard, no #includes).
struct VecF {
  static constexpr int W = 16;
  using value_type = float;
  __m512 v;

  static VecF set1(float a) { return {_mm512_set1_ps(a)}; }
  static VecF load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static VecF load(const f16* p) {
    return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
  }
  static VecF load(const bf16* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))};
  }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  void store(f16* p) const {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  void store(bf16* p) const { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_bf16()); }
  // Non-temporal stores, around the caches, for outputs too large to stay cached; p
  // aligned to the stored bytes (64 for float, 32 for f16/bf16). stream_fence() orders
  // them before other threads read the data.
  void stream(float* p) const { _mm512_stream_ps(p, v); }
  void stream(f16* p) const {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  void stream(bf16* p) const { _mm256_stream_si256(reinterpret_cast<__m256i*>(p), to_bf16()); }
  static void stream_fence() { _mm_sfence(); }
  // The 16 lanes as bf16 bit patterns: round to nearest even; NaN lanes keep a quiet NaN.
  __m256i to_bf16() const {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x400000)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
  }
  static VecF masked_neg_inf(VecF z, const uint8_t* m) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(m));
    const __mmask16 masked = _mm_test_epi8_mask(bytes, bytes);  // lane k: m[k] != 0
    return {_mm512_mask_mov_ps(z.v, masked, _mm512_set1_ps(-INFINITY))};
  }

  VecF operator+(VecF b) const { return {_mm512_add_ps(v, b.v)}; }
  VecF operator-(VecF b) const { return {_mm512_sub_ps(v, b.v)}; }
  VecF operator*(VecF b) const { return {_mm512_mul_ps(v, b.v)}; }
  static VecF fmadd(VecF a, VecF b, VecF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  static VecF max(VecF a, VecF b) { return {_mm512_max_ps(a.v, b.v)}; }
  VecF operator/(VecF b) const { return {_mm512_div_ps(v, b.v)}; }
  // a < b ? x : y per lane (false where a or b is NaN).
  static VecF select_lt(VecF a, VecF b, VecF x, VecF y) {
    return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ), y.v, x.v)};
  }

  // 2^t: same algorithm and constants as fast_exp2() in cpu/fast_exp.h.
  static VecF exp2(VecF a) {
    const __m512 t = _mm512_max_ps(_mm512_set1_ps(kExp2Lo), a.v);  // NaN t stays NaN
    const __m512 s = _mm512_add_ps(t, _mm512_set1_ps(kExp2Magic));
    const __m512 f = _mm512_sub_ps(t, _mm512_sub_ps(s, _mm512_set1_ps(kExp2Magic)));
    __m512 p = _mm512_set1_ps(kExp2C5);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C0));
    return {_mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(s), 23)))};
  }
  float hsum() const { return _mm512_reduce_add_ps(v); }
  float hmax() const { return _mm512_reduce_max_ps(v); }
};
