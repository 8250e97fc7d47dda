// torch glue for scaled_masked_softmax: argument checks, mask preparation, output
// allocation, CPU/CUDA registration. The params structs (the kernels' [batch, heads, sq,
// sk] view of any leading dims) are filled in scaled_masked_softmax_params.h.
#include <ATen/MemoryOverlap.h>
#include <torch/library.h>

#include "checks.h"
#include "dispatch.h"
#include "pyattn/scaled_masked_softmax.h"
#include "scaled_masked_softmax_params.h"

namespace pyattn {
namespace {

constexpr const char* kOp = "scaled_masked_softmax";

// A mask broadcast to x's shape with last-dim stride 1 (broadcast_mask), in the dtype the
// kernel reads: bool (True = masked out) as it is, floating masks as x's dtype.
at::Tensor prepare_mask(const at::Tensor& x, const at::Tensor& mask) {
  check_same_device(mask, "mask", x, "x", kOp);
  const bool additive = mask.scalar_type() != at::kBool;
  TORCH_CHECK(!additive || at::isFloatingType(mask.scalar_type()), kOp, ": mask has dtype ", mask.scalar_type(),
              ", expected bool (True = masked out) or a floating dtype (added to the scores)");
  bool broadcastable = mask.dim() <= x.dim();
  for (int64_t d = 1; broadcastable && d <= mask.dim(); ++d)
    broadcastable = mask.size(-d) == x.size(-d) || mask.size(-d) == 1;
  TORCH_CHECK(broadcastable, kOp, ": mask of shape ", mask.sizes(), " is not broadcastable to x of shape ", x.sizes());
  return broadcast_mask(additive ? mask.to(x.scalar_type()) : mask, x.sizes());
}

// The params `make` builds over the tensors it captures; when their leading dims do not
// fold, over contiguous copies of the inputs (outputs are contiguous already, so that
// the copies fold).
template <class Make>
auto folded_params(const Make& make, std::initializer_list<at::Tensor*> inputs) {
  auto p = make();
  if (!p) {
    for (at::Tensor* t : inputs)
      if (t->defined()) *t = t->contiguous();
    p = make();
    TORCH_INTERNAL_ASSERT(p);
  }
  return *p;
}

void check_x(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2, kOp, ": x has ", x.dim(), " dims, expected at least 2 (..., sq, sk)");
}

// y = softmax(scale * x + mask) into y (x's shape, contiguous, not overlapping x).
void fwd_into(const at::Tensor& x_in, const std::optional<at::Tensor>& mask_in, double scale, bool causal,
              const at::Tensor& y) {
  to_dtype(x_in, kOp, "x");
  at::Tensor x = last_dim_contiguous(x_in);
  at::Tensor mask = mask_in.has_value() ? prepare_mask(x, *mask_in) : at::Tensor();
  if (x.numel() == 0) return;
  const ScaledMaskedSoftmaxFwdParams p = folded_params(
      [&] { return make_scaled_masked_softmax_fwd_params(x, y, mask, scale, causal); }, {&x, &mask});
  run_kernel(x, kOp, p, &scaled_masked_softmax_fwd_cpu, PYATTN_CUDA_LAUNCHER(scaled_masked_softmax_fwd_cuda));
}

at::Tensor fwd(const at::Tensor& x, const std::optional<at::Tensor>& mask, double scale, bool causal) {
  check_x(x);
  at::Tensor y = empty_output(x.sizes(), x.options());
  fwd_into(x, mask, scale, causal, y);
  return y;
}

// The out= form: a caller that reuses y across calls skips the allocation and, for large
// CPU outputs, the OS zeroing freshly mapped pages on first touch (at 100 MB on the
// 2-core VM, the forward took twice as long into a fresh output).
void fwd_out(const at::Tensor& x, const std::optional<at::Tensor>& mask, double scale, bool causal,
             const at::Tensor& out) {
  check_x(x);
  check_same_as(out, "out", x, "x", kOp);
  TORCH_CHECK(out.is_contiguous(), kOp, ": out must be contiguous");
  TORCH_CHECK(at::get_overlap_status(out, x) == at::MemOverlapStatus::No, kOp,
              ": out must not overlap x (no in-place softmax)");
  fwd_into(x, mask, scale, causal, out);
}

at::Tensor bwd(const at::Tensor& y_in, const at::Tensor& dy_in, double scale) {
  constexpr const char* op = "scaled_masked_softmax backward";
  TORCH_CHECK(y_in.dim() >= 2, op, ": y has ", y_in.dim(), " dims, expected at least 2 (..., sq, sk)");
  to_dtype(y_in, op, "y");
  check_same_as(dy_in, "dy", y_in, "y", op);
  at::Tensor y = last_dim_contiguous(y_in), dy = last_dim_contiguous(dy_in);
  at::Tensor dx = empty_output(y.sizes(), y.options());
  if (y.numel() == 0) return dx;
  const ScaledMaskedSoftmaxBwdParams p =
      folded_params([&] { return make_scaled_masked_softmax_bwd_params(y, dy, dx, scale); }, {&y, &dy});
  run_kernel(y, op, p, &scaled_masked_softmax_bwd_cpu, PYATTN_CUDA_LAUNCHER(scaled_masked_softmax_bwd_cuda));
  return dx;
}

void register_impls(torch::Library& m) {
  m.impl("scaled_masked_softmax_fwd", &fwd);
  m.impl("scaled_masked_softmax_fwd_out", &fwd_out);
  m.impl("scaled_masked_softmax_bwd", &bwd);
}

}  // namespace

PYATTN_IMPL_CPU_AND_CUDA(register_impls)

}  // namespace pyattn
