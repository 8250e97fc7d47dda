// One-lane double "vector": fp64 tensors (gradcheck, references) take this path on
// every ISA; exact std::exp, no SIMD. Included inside an ISA namespace (no guard).
struct VecD {
  static constexpr int W = 1;
  using value_type = double;
  double v;

  static VecD set1(double a) { return {a}; }
  static VecD load(const double* p) { return {*p}; }
  void store(double* p) const { *p = v; }
  static VecD masked_neg_inf(VecD z, const uint8_t* m) { return {*m ? -INFINITY : z.v}; }

  VecD operator+(VecD b) const { return {v + b.v}; }
  VecD operator-(VecD b) const { return {v - b.v}; }
  VecD operator*(VecD b) const { return {v * b.v}; }
  static VecD fmadd(VecD a, VecD b, VecD c) { return {a.v * b.v + c.v}; }
  static VecD max(VecD a, VecD b) { return {a.v > b.v ? a.v : b.v}; }
  static VecD exp2(VecD a) { return {std::exp2(a.v)}; }
  double hsum() const { return v; }
  double hmax() const { return v; }
};
