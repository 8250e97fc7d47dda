// 8-lane float vector on AVX2 + FMA + F16C. Included inside namespace
// pyattn::cpu::avx2 under a target("avx2,fma,f16c") region (no guard, no #includes).
struct VecF {
  static constexpr int W = 8;
  using value_type = float;
  __m256 v;

  static VecF set1(float a) { return {_mm256_set1_ps(a)}; }
  static VecF load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static VecF load(const f16* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
  }
  static VecF load(const bf16* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
  }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  void store(f16* p) const {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  void store(bf16* p) const { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), to_bf16()); }
  // Non-temporal stores, around the caches, for outputs too large to stay cached; p
  // aligned to the stored bytes (32 for float, 16 for f16/bf16). stream_fence() orders
  // them before other threads read the data.
  void stream(float* p) const { _mm256_stream_ps(p, v); }
  void stream(f16* p) const {
    _mm_stream_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  void stream(bf16* p) const { _mm_stream_si128(reinterpret_cast<__m128i*>(p), to_bf16()); }
  static void stream_fence() { _mm_sfence(); }
  // The 8 lanes as bf16 bit patterns: round to nearest even; NaN lanes keep a quiet NaN.
  __m128i to_bf16() const {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
    r = _mm256_srli_epi32(r, 16);
    // Pack 32->16 works per 128-bit lane; gather lanes 0 and 2 into the low half.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    return _mm256_castsi256_si128(packed);
  }
  static VecF masked_neg_inf(VecF z, const uint8_t* m) {
    const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m)));
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(bytes, _mm256_setzero_si256()));
    return {_mm256_blendv_ps(_mm256_set1_ps(-INFINITY), z.v, keep)};
  }

  VecF operator+(VecF b) const { return {_mm256_add_ps(v, b.v)}; }
  VecF operator-(VecF b) const { return {_mm256_sub_ps(v, b.v)}; }
  VecF operator*(VecF b) const { return {_mm256_mul_ps(v, b.v)}; }
  static VecF fmadd(VecF a, VecF b, VecF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static VecF max(VecF a, VecF b) { return {_mm256_max_ps(a.v, b.v)}; }
  VecF operator/(VecF b) const { return {_mm256_div_ps(v, b.v)}; }
  // a < b ? x : y per lane (false where a or b is NaN).
  static VecF select_lt(VecF a, VecF b, VecF x, VecF y) {
    return {_mm256_blendv_ps(y.v, x.v, _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ))};
  }

  // 2^t: same algorithm and constants as fast_exp2() in cpu/fast_exp.h.
  static VecF exp2(VecF a) {
    const __m256 t = _mm256_max_ps(_mm256_set1_ps(kExp2Lo), a.v);  // NaN t stays NaN
    const __m256 s = _mm256_add_ps(t, _mm256_set1_ps(kExp2Magic));
    const __m256 f = _mm256_sub_ps(t, _mm256_sub_ps(s, _mm256_set1_ps(kExp2Magic)));
    __m256 p = _mm256_set1_ps(kExp2C5);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C0));
    return {_mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(s), 23)))};
  }
  float hsum() const {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  float hmax() const {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};
