// torch glue for packed_gemm: out = (c or 0) + a · bᵀ on pyattn's packed fp32 CPU GEMM
// (b packed per call). It exists so that the micro-kernel the LSTM runs every step is
// tested over many shapes on its own (tests/test_packed_gemm.py).
#include <torch/library.h>

#include "checks.h"
#include "dispatch.h"
#include "pyattn/packed_gemm.h"

namespace pyattn {
namespace {

constexpr const char* kOp = "packed_gemm";

at::Tensor packed_gemm(const at::Tensor& a_in, const at::Tensor& b, const std::optional<at::Tensor>& c) {
  check_dims(a_in, 2, kOp, "a", "(m, k)");
  check_dims(b, 2, kOp, "b", "(n, k)");
  TORCH_CHECK(a_in.size(1) == b.size(1), kOp, ": a has shape ", a_in.sizes(), " and b ", b.sizes(),
              ", expected the same k (a [m, k], b [n, k])");
  for (const auto& [t, name] : {std::pair{&a_in, "a"}, std::pair{&b, "b"}}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, kOp, ": ", name, " has dtype ", t->scalar_type(), ", expected float32");
    TORCH_CHECK(t->is_cpu(), kOp, ": ", name, " is on ", t->device(), ", expected the CPU");
  }
  const int64_t m = a_in.size(0), n = b.size(0), k = a_in.size(1);
  const at::Tensor a = last_dim_contiguous(a_in);
  at::Tensor out;
  if (c.has_value()) {
    check_shape(*c, {m, n}, kOp, "c", "(m, n)");
    TORCH_CHECK(c->scalar_type() == at::kFloat && c->is_cpu(), kOp, ": c must be float32 on the CPU, got ",
                c->scalar_type(), " on ", c->device());
    out = c->contiguous().clone();
  } else {
    out = at::empty({m, n}, a.options());
  }
  if (m == 0 || n == 0) return out;
  PackedGemmParams p{};
  p.a = a.data_ptr<float>();
  p.lda = a.stride(0);
  p.b = b.data_ptr<float>();
  p.b_stride_n = b.stride(0);
  p.b_stride_k = b.stride(1);
  p.out = out.data_ptr<float>();
  p.ldo = out.stride(0);
  p.m = m;
  p.n = n;
  p.k = k;
  p.accumulate = c.has_value();
  packed_gemm_cpu(p, &torch_parallel_for);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CPU, m) { m.impl("packed_gemm", &packed_gemm); }

}  // namespace pyattn
