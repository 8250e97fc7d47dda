// Argument checks at the ops' boundary, shared by every csrc/<op>.cpp: each failure is a
// TORCH_CHECK whose message names the op and the argument and says what was expected and
// what came (tests match those words). Header-only, so that the params builders built
// on it (csrc/params.h) also serve the emulation bindings (tests/cuda_emulation).
#pragma once

#include <torch/types.h>

#include "pyattn/common.h"

namespace pyattn {

// The kernels' dtype for a floating torch dtype; `what` names the argument for errors.
inline DType to_dtype(const at::Tensor& t, const char* op, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kDouble: return DType::f64;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default:
      TORCH_CHECK(false, op, ": ", what, " has dtype ", t.scalar_type(),
                  ", expected a floating dtype (float32, float64, float16 or bfloat16)");
  }
}

// t with last-dim stride 1, the kernels' only layout requirement: t itself, or a
// contiguous copy only when its last dim (of size > 1) is strided.
inline at::Tensor last_dim_contiguous(const at::Tensor& t) {
  return t.size(-1) > 1 && t.stride(-1) != 1 ? t.contiguous() : t;
}

// t has `dims` dims; `layout` names them, e.g. "(batch, heads, seq, dim)".
inline void check_dims(const at::Tensor& t, int64_t dims, const char* op, const char* what, const char* layout) {
  TORCH_CHECK(t.dim() == dims, op, ": ", what, " has ", t.dim(), " dims, expected ", dims, " ", layout);
}

// t has shape `want`; `layout` names the dims, e.g. "(batch, hidden_size)".
inline void check_shape(const at::Tensor& t, at::IntArrayRef want, const char* op, const char* what,
                        const char* layout) {
  TORCH_CHECK(t.sizes() == want, op, ": ", what, " has shape ", t.sizes(), ", expected ", want, " ", layout);
}

// t is on ref's device.
inline void check_same_device(const at::Tensor& t, const char* what, const at::Tensor& ref, const char* ref_what,
                              const char* op) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", what, " is on ", t.device(), " but ", ref_what, " is on ",
              ref.device());
}

// t has ref's dtype and is on ref's device.
inline void check_like(const at::Tensor& t, const char* what, const at::Tensor& ref, const char* ref_what,
                       const char* op) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", what, " has dtype ", t.scalar_type(), ", expected ",
              ref_what, "'s dtype ", ref.scalar_type());
  check_same_device(t, what, ref, ref_what, op);
}

// t has ref's shape, dtype and device (a gradient or an output buffer for ref).
inline void check_same_as(const at::Tensor& t, const char* what, const at::Tensor& ref, const char* ref_what,
                          const char* op) {
  TORCH_CHECK(t.sizes() == ref.sizes(), op, ": ", what, " has shape ", t.sizes(), ", expected ", ref_what,
              "'s shape ", ref.sizes());
  check_like(t, what, ref, ref_what, op);
}

}  // namespace pyattn
