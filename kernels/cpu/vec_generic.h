// One-lane float "vector" for the generic (any CPU) path. Included inside an ISA
// namespace by cpu/isa_regions.h: no include guard on purpose, no #includes.
struct VecF {
  static constexpr int W = 1;
  using value_type = float;
  float v;

  static VecF set1(float a) { return {a}; }
  template <class T> static VecF load(const T* p) { return {widen(*p)}; }
  template <class T> void store(T* p) const { *p = narrow<T>(v); }
  // z where mask byte is 0, -inf where it is nonzero.
  static VecF masked_neg_inf(VecF z, const uint8_t* m) { return {*m ? -INFINITY : z.v}; }

  VecF operator+(VecF b) const { return {v + b.v}; }
  VecF operator-(VecF b) const { return {v - b.v}; }
  VecF operator*(VecF b) const { return {v * b.v}; }
  static VecF fmadd(VecF a, VecF b, VecF c) { return {a.v * b.v + c.v}; }
  static VecF max(VecF a, VecF b) { return {a.v > b.v ? a.v : b.v}; }
  VecF operator/(VecF b) const { return {v / b.v}; }
  // a < b ? x : y per lane (false where a or b is NaN).
  static VecF select_lt(VecF a, VecF b, VecF x, VecF y) { return {a.v < b.v ? x.v : y.v}; }
  static VecF exp2(VecF a) { return {fast_exp2(a.v)}; }
  float hsum() const { return v; }
  float hmax() const { return v; }
};
