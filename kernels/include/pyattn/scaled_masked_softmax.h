// scaled_masked_softmax: y = softmax(scale * x + mask) over the last dim, in one pass.
//
// All tensors are viewed as 4-d [batch, heads, sq, sk] with element strides for the
// first three dims and a last-dim stride of 1 (csrc/ folds any leading dims into
// batch/heads and copies only when they cannot be folded). A stride may be 0 where a
// tensor is broadcast (typically a mask shared by heads).
//
// Semantics (pinned by pyattn/reference/scaled_masked_softmax.py):
//   z[j] = scale * x[j] + additive_mask[j], or -inf where drop_mask[j] != 0 or (causal and j > i)
//   y[j] = exp(z[j] - max z) / sum exp(z - max z); a row whose max is -inf gives y = 0.
//   dx[j] = scale * y[j] * (dy[j] - sum_k dy[k] * y[k])
// Accumulation is fp32 (fp64 for fp64 tensors).
#pragma once

#include "pyattn/common.h"

namespace pyattn {

struct ScaledMaskedSoftmaxFwdParams {
  const void* x;         // [batch, heads, sq, sk], dtype
  int64_t x_stride[3];
  void* y;               // [batch, heads, sq, sk], dtype; overwritten; must not alias x or mask
  int64_t y_stride[3];
  const void* mask;      // [batch, heads, sq, sk] (broadcast strides allowed) or nullptr
  int64_t mask_stride[3];
  MaskKind mask_kind;    // none; drop: uint8, nonzero = masked out; or additive: x's dtype
  DType dtype;
  int64_t batch, heads, sq, sk;
  double scale;
  bool causal;           // additionally mask j > i (top-left aligned)
  int num_threads;       // CPU: threads the ParallelFor may use (workers of the dynamic schedule)
};

struct ScaledMaskedSoftmaxBwdParams {
  const void* y;         // [batch, heads, sq, sk], dtype: the forward output
  int64_t y_stride[3];
  const void* dy;        // [batch, heads, sq, sk], dtype
  int64_t dy_stride[3];
  void* dx;              // [batch, heads, sq, sk], dtype; overwritten; may alias dy
  int64_t dx_stride[3];
  DType dtype;
  int64_t batch, heads, sq, sk;
  double scale;
  int num_threads;       // CPU: threads the ParallelFor may use (workers of the dynamic schedule)
};

void scaled_masked_softmax_fwd_cpu(const ScaledMaskedSoftmaxFwdParams& p, ParallelFor parallel_for);
void scaled_masked_softmax_bwd_cpu(const ScaledMaskedSoftmaxBwdParams& p, ParallelFor parallel_for);

// Launch on `stream`; the caller checks the launch (cudaGetLastError) afterwards.
void scaled_masked_softmax_fwd_cuda(const ScaledMaskedSoftmaxFwdParams& p, cudaStream stream);
void scaled_masked_softmax_bwd_cuda(const ScaledMaskedSoftmaxBwdParams& p, cudaStream stream);

}  // namespace pyattn
