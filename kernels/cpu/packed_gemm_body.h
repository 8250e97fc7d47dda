// packed_gemm op on the CPU (pyattn/packed_gemm.h), compiled once per ISA by
// cpu/isa_regions.h (no guard; needs <memory>): b packed per call, then one task per
// 32-column panel of the micro-kernel in cpu/packed_gemm.h.

#include "cpu/packed_gemm.h"

inline void packed_gemm(const PackedGemmParams& p, ParallelFor parallel_for) {
  const pgemm::PackSrc src{p.b, p.b_stride_n, p.b_stride_k, p.k};
  std::unique_ptr<float[]> packed(new float[std::max<int64_t>(1, pgemm::packed_floats(1, p.n, p.k))]);
  pgemm::pack(&src, 1, 1, p.n, packed.get(), parallel_for);
  const pgemm::ASeg seg{p.a, p.lda, p.k};
  // at least ~0.5 MFLOP per task: small products stay on one thread
  const int64_t per_panel = std::max<int64_t>(1, p.m * p.k * pgemm::kPanel);
  parallel_for(pgemm::blocks(p.n), std::max<int64_t>(1, (int64_t(1) << 19) / per_panel), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int ncols = int(std::min<int64_t>(pgemm::kPanel, p.n - b * pgemm::kPanel));
      pgemm::gemm_panel(p.m, &seg, 1, pgemm::panel(packed.get(), b, 0, 1, p.k), p.out + b * pgemm::kPanel, p.ldo,
                        ncols, p.accumulate);
    }
  });
}
