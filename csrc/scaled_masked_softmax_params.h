// Tensors to the scaled_masked_softmax kernels' params structs
// (pyattn/scaled_masked_softmax.h), used by csrc/scaled_masked_softmax.cpp after its checks
// and by the emulated CUDA tests (tests/cuda_emulation/bindings.cpp). Builders check
// nothing: tensors come checked, of one shape [..., sq, sk] with last-dim stride 1, and
// must stay alive until the kernel has run. The leading dims are folded into the
// kernels' [batch, heads] (dispatch.h); a builder returns nullopt when they do not fold.
#pragma once

#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <optional>

#include "dispatch.h"
#include "params.h"
#include "pyattn/scaled_masked_softmax.h"

namespace pyattn {

// What both structs take alike: the folded view [batch, heads, sq, sk] of t's shape, the
// dtype and the scale.
template <class Params>
void set_softmax_shape(Params* p, const Folded& f, const at::Tensor& t, double scale) {
  p->dtype = dtype_of(t);
  p->batch = f.batch;
  p->heads = f.heads;
  p->sq = t.size(-2);
  p->sk = t.size(-1);
  p->scale = scale;
  p->num_threads = at::get_num_threads();
}

// The (batch, head, row) strides of the k-th tensor folded into f.
inline void set_folded_strides(int64_t* dst, const Folded& f, size_t k) {
  std::copy(f.strides.at(k).begin(), f.strides.at(k).end(), dst);
}

// y = softmax(scale * x + mask), y contiguous. mask: undefined, or x's shape (broadcast
// strides allowed): bool or uint8 (nonzero = masked out, MaskKind::drop) or x's dtype
// (added to the scores).
inline std::optional<ScaledMaskedSoftmaxFwdParams> make_scaled_masked_softmax_fwd_params(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& mask, double scale, bool causal) {
  const Folded f =
      fold_leading_dims(mask.defined() ? std::vector<at::Tensor>{x, y, mask} : std::vector<at::Tensor>{x, y});
  if (!f.ok) return std::nullopt;
  ScaledMaskedSoftmaxFwdParams p{};
  set_softmax_shape(&p, f, x, scale);
  p.x = x.data_ptr();
  p.y = y.data_ptr();
  set_folded_strides(p.x_stride, f, 0);
  set_folded_strides(p.y_stride, f, 1);
  p.mask_kind = MaskKind::none;
  if (mask.defined()) {
    const at::ScalarType mt = mask.scalar_type();
    p.mask = mask.data_ptr();
    set_folded_strides(p.mask_stride, f, 2);
    p.mask_kind = mt == at::kBool || mt == at::kByte ? MaskKind::drop : MaskKind::additive;
  }
  p.causal = causal;
  return p;
}

// dx = scale * y * (dy - sum(dy * y)) from the forward's y; dx contiguous.
inline std::optional<ScaledMaskedSoftmaxBwdParams> make_scaled_masked_softmax_bwd_params(const at::Tensor& y,
                                                                                        const at::Tensor& dy,
                                                                                        const at::Tensor& dx,
                                                                                        double scale) {
  const Folded f = fold_leading_dims({y, dy, dx});
  if (!f.ok) return std::nullopt;
  ScaledMaskedSoftmaxBwdParams p{};
  set_softmax_shape(&p, f, y, scale);
  p.y = y.data_ptr();
  p.dy = dy.data_ptr();
  p.dx = dx.data_ptr();
  set_folded_strides(p.y_stride, f, 0);
  set_folded_strides(p.dy_stride, f, 1);
  set_folded_strides(p.dx_stride, f, 2);
  return p;
}

}  // namespace pyattn
