#include "dispatch.h"

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "checks.h"

namespace pyattn {

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const size_t nbytes = t.nbytes();
  if (t.is_cpu() && nbytes >= 2 * kHuge) {
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data_ptr()) + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data_ptr()) + nbytes) & ~(kHuge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint: ignore failure
  }
#endif
  return t;
}

void torch_parallel_for(int64_t n, int64_t grain, const RangeBody& body) {
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { body(begin, end); });
}

at::Tensor broadcast_mask(const at::Tensor& mask, at::IntArrayRef sizes) {
  at::Tensor m = mask.dim() == 0 ? mask.reshape({1}) : mask;
  if (m.size(-1) != sizes.back()) {  // broadcast along keys: materialise that dim only
    std::vector<int64_t> shape(m.sizes().begin(), m.sizes().end());
    shape.back() = sizes.back();
    m = m.expand(shape).contiguous();
  } else {
    m = last_dim_contiguous(m);
  }
  return m.expand(sizes);
}

Folded fold_leading_dims(const std::vector<at::Tensor>& ts) {
  const int64_t lead = ts.at(0).dim() - 2;
  // Leading dims of size > 1, outermost first, with every tensor's stride.
  std::vector<int64_t> sizes;
  std::vector<std::vector<int64_t>> strides;  // [dim][tensor]
  for (int64_t d = 0; d < lead; ++d) {
    if (ts[0].size(d) == 1) continue;
    std::vector<int64_t> s;
    for (const auto& t : ts) s.push_back(t.stride(d));
    // Merge into the previous dim when d steps evenly inside it for every tensor.
    bool merge = !sizes.empty();
    for (size_t k = 0; merge && k < ts.size(); ++k) merge = strides.back()[k] == s[k] * ts[0].size(d);
    if (merge) {
      sizes.back() *= ts[0].size(d);
      strides.back() = s;
    } else {
      sizes.push_back(ts[0].size(d));
      strides.push_back(s);
    }
  }
  Folded f;
  if (sizes.size() > 2) return f;
  while (sizes.size() < 2) {  // pad outer dims of size 1
    sizes.insert(sizes.begin(), 1);
    strides.insert(strides.begin(), std::vector<int64_t>(ts.size(), 0));
  }
  f.ok = true;
  f.batch = sizes[0];
  f.heads = sizes[1];
  for (size_t k = 0; k < ts.size(); ++k) f.strides.push_back({strides[0][k], strides[1][k], ts[k].stride(-2)});
  return f;
}

}  // namespace pyattn
