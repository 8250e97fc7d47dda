// torch glue for scaled_masked_softmax: argument checks, mask preparation, output
// allocation, folding to the kernels' [batch, heads, sq, sk] view, CPU/CUDA registration.
#include <ATen/MemoryOverlap.h>
#include <torch/library.h>

#include "dispatch.h"
#include "pyattn/scaled_masked_softmax.h"

namespace pyattn {
namespace {

constexpr const char* kOp = "scaled_masked_softmax";

// A mask broadcast to x's shape with last-dim stride 1 (materialising only the last dim
// when the mask broadcasts along it), in the dtype the kernel reads.
at::Tensor prepare_mask(const at::Tensor& x, const at::Tensor& mask, MaskKind* kind) {
  TORCH_CHECK(mask.device() == x.device(), kOp, ": mask is on ", mask.device(), " but x is on ", x.device());
  if (mask.scalar_type() == at::kBool) {
    *kind = MaskKind::boolean;
  } else {
    TORCH_CHECK(at::isFloatingType(mask.scalar_type()), kOp, ": mask has dtype ", mask.scalar_type(),
                ", expected bool (True = masked out) or a floating dtype (added to the scores)");
    *kind = MaskKind::additive;
  }
  bool broadcastable = mask.dim() <= x.dim();
  for (int64_t d = 1; broadcastable && d <= mask.dim(); ++d)
    broadcastable = mask.size(-d) == x.size(-d) || mask.size(-d) == 1;
  TORCH_CHECK(broadcastable, kOp, ": mask of shape ", mask.sizes(), " is not broadcastable to x of shape ", x.sizes());

  at::Tensor m = *kind == MaskKind::additive ? mask.to(x.scalar_type()) : mask;
  const int64_t sk = x.size(-1);
  if (m.dim() == 0) m = m.reshape({1});
  if (m.size(-1) != sk) {  // broadcast along keys: materialise that dim only
    std::vector<int64_t> shape(m.sizes().begin(), m.sizes().end());
    shape.back() = sk;
    m = m.expand(shape).contiguous();
  } else if (sk > 1 && m.stride(-1) != 1) {
    m = m.contiguous();
  }
  return m.expand(x.sizes());
}

void check_x(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2, kOp, ": x has ", x.dim(), " dims, expected at least 2 (..., sq, sk)");
}

// y = softmax(scale * x + mask) into y (x's shape, contiguous, not overlapping x).
void fwd_into(const at::Tensor& x_in, const std::optional<at::Tensor>& mask_in, double scale, bool causal,
              const at::Tensor& y) {
  const DType dtype = to_dtype(x_in, kOp, "x");
  at::Tensor x = x_in.size(-1) > 1 && x_in.stride(-1) != 1 ? x_in.contiguous() : x_in;
  MaskKind kind = MaskKind::none;
  at::Tensor mask = mask_in.has_value() ? prepare_mask(x, *mask_in, &kind) : at::Tensor();
  if (x.numel() == 0) return;

  Folded f = fold_leading_dims(mask.defined() ? std::vector<at::Tensor>{x, y, mask} : std::vector<at::Tensor>{x, y});
  if (!f.ok) {  // > 2 leading dims that do not merge: fall back to contiguous copies
    x = x.contiguous();
    if (mask.defined()) mask = mask.contiguous();
    f = fold_leading_dims(mask.defined() ? std::vector<at::Tensor>{x, y, mask} : std::vector<at::Tensor>{x, y});
    TORCH_INTERNAL_ASSERT(f.ok);
  }
  ScaledMaskedSoftmaxFwdParams p{};
  p.x = x.data_ptr();
  p.y = y.data_ptr();
  p.mask = mask.defined() ? mask.data_ptr() : nullptr;
  for (int k = 0; k < 3; ++k) {
    p.x_stride[k] = f.strides[0][k];
    p.y_stride[k] = f.strides[1][k];
    p.mask_stride[k] = mask.defined() ? f.strides[2][k] : 0;
  }
  p.mask_kind = kind;
  p.dtype = dtype;
  p.batch = f.batch;
  p.heads = f.heads;
  p.sq = x.size(-2);
  p.sk = x.size(-1);
  p.scale = scale;
  p.causal = causal;
  p.num_threads = at::get_num_threads();
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
  TORCH_CHECK(out.sizes() == x.sizes(), kOp, ": out has shape ", out.sizes(), ", expected x's shape ", x.sizes());
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), kOp, ": out has dtype ", out.scalar_type(), ", expected x's dtype ",
              x.scalar_type());
  TORCH_CHECK(out.device() == x.device(), kOp, ": out is on ", out.device(), " but x is on ", x.device());
  TORCH_CHECK(out.is_contiguous(), kOp, ": out must be contiguous");
  TORCH_CHECK(at::get_overlap_status(out, x) == at::MemOverlapStatus::No, kOp,
              ": out must not overlap x (no in-place softmax)");
  fwd_into(x, mask, scale, causal, out);
}

at::Tensor bwd(const at::Tensor& y, const at::Tensor& dy_in, double scale) {
  constexpr const char* op = "scaled_masked_softmax backward";
  TORCH_CHECK(y.dim() >= 2, op, ": y has ", y.dim(), " dims, expected at least 2 (..., sq, sk)");
  const DType dtype = to_dtype(y, op, "y");
  TORCH_CHECK(dy_in.sizes() == y.sizes(), op, ": dy has shape ", dy_in.sizes(), ", expected y's shape ", y.sizes());
  TORCH_CHECK(dy_in.scalar_type() == y.scalar_type(), op, ": dy has dtype ", dy_in.scalar_type(), ", expected y's dtype ",
              y.scalar_type());
  TORCH_CHECK(dy_in.device() == y.device(), op, ": dy is on ", dy_in.device(), " but y is on ", y.device());
  at::Tensor yc = y.size(-1) > 1 && y.stride(-1) != 1 ? y.contiguous() : y;
  at::Tensor dy = dy_in.size(-1) > 1 && dy_in.stride(-1) != 1 ? dy_in.contiguous() : dy_in;
  at::Tensor dx = empty_output(y.sizes(), y.options());
  if (y.numel() == 0) return dx;

  Folded f = fold_leading_dims({yc, dy, dx});
  if (!f.ok) {
    yc = yc.contiguous();
    dy = dy.contiguous();
    f = fold_leading_dims({yc, dy, dx});
    TORCH_INTERNAL_ASSERT(f.ok);
  }
  ScaledMaskedSoftmaxBwdParams p{};
  p.y = yc.data_ptr();
  p.dy = dy.data_ptr();
  p.dx = dx.data_ptr();
  for (int k = 0; k < 3; ++k) {
    p.y_stride[k] = f.strides[0][k];
    p.dy_stride[k] = f.strides[1][k];
    p.dx_stride[k] = f.strides[2][k];
  }
  p.dtype = dtype;
  p.batch = f.batch;
  p.heads = f.heads;
  p.sq = y.size(-2);
  p.sk = y.size(-1);
  p.scale = scale;
  p.num_threads = at::get_num_threads();
  run_kernel(y, op, p, &scaled_masked_softmax_bwd_cpu, PYATTN_CUDA_LAUNCHER(scaled_masked_softmax_bwd_cuda));
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CPU, m) {
  m.impl("scaled_masked_softmax_fwd", &fwd);
  m.impl("scaled_masked_softmax_fwd_out", &fwd_out);
  m.impl("scaled_masked_softmax_bwd", &bwd);
}

TORCH_LIBRARY_IMPL(pyattn, CUDA, m) {
  m.impl("scaled_masked_softmax_fwd", &fwd);
  m.impl("scaled_masked_softmax_fwd_out", &fwd_out);
  m.impl("scaled_masked_softmax_bwd", &bwd);
}

}  // namespace pyattn
