// What the params builders (csrc/<op>_params.h) share: a tensor's data pointer, strides
// and dtype in the plain fields of the kernels' structs. Builders check nothing; an
// undefined tensor stands for an optional argument left out (nullptr, stride 0).
#pragma once

#include <torch/types.h>

#include "checks.h"
#include "pyattn/common.h"

namespace pyattn {

// The kernels' dtype of a tensor the op's checks already passed through to_dtype.
inline DType dtype_of(const at::Tensor& t) { return to_dtype(t, "pyattn", "a tensor"); }

inline void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// A [rows, ·] matrix (unit column stride): its data and row stride.
template <class Ptr>
void set_rows(Ptr* data, int64_t* row_stride, const at::Tensor& t) {
  *data = ptr_or_null(t);
  *row_stride = t.defined() ? t.stride(0) : 0;
}

// A [batch, heads, rows, ·] tensor (unit last-dim stride): its (batch, head, row) strides.
inline void set_strides(int64_t* dst, const at::Tensor& t) {
  for (int k = 0; k < 3; ++k) dst[k] = t.stride(k);
}

}  // namespace pyattn
