// The tensor-core attention forward (kernels/cuda/attention_tc.cu) run on CPU threads
// by emulate.h, as a torch extension for tests/test_attention_tc_emulated.py.
#include <torch/extension.h>

#include "emulate.h"

namespace pyattn::attention_cuda {
namespace {
alignas(128) unsigned char smem[1 << 17];  // the block's dynamic shared memory (blocks run one at a time)
}  // namespace
}  // namespace pyattn::attention_cuda

#include "cuda/attention_tc.cu"

namespace {

using namespace pyattn;
using namespace pyattn::attention_cuda;

void set3(int64_t* dst, const at::Tensor& t) {
  for (int d = 0; d < 3; ++d) dst[d] = t.stride(d);
}

// q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv] (fp16 or bf16, last dim
// contiguous); mask: empty, uint8 [B, Hq, Lq, Lk] (nonzero = attend) or q's dtype
// (additive), broadcast strides allowed; key_lengths: empty or int64 [B].
// Returns (out [B, Hq, Lq, Dv], lse [B, Hq, Lq] fp32).
std::vector<at::Tensor> fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            double scale, int64_t diag_offset, int64_t window_left, int64_t window_right,
                            const at::Tensor& key_lengths, bool dropout, int64_t key0, int64_t key1,
                            int64_t threshold, double dropout_scale) {
  TORCH_CHECK(q.dtype() == at::kHalf || q.dtype() == at::kBFloat16, "fp16 or bf16 only");
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
  AttentionFwdParams p{};
  AttentionShape& s = p.s;
  s.dtype = q.dtype() == at::kHalf ? DType::f16 : DType::bf16;
  s.batch = q.size(0);
  s.heads_q = q.size(1);
  s.heads_kv = k.size(1);
  s.lq = q.size(2);
  s.lk = k.size(2);
  s.d = q.size(3);
  s.dv = v.size(3);
  s.scale = scale;
  s.mask_kind = MaskKind::none;
  if (mask.numel() > 0) {
    s.mask = mask.data_ptr();
    set3(s.mask_stride, mask);
    s.mask_kind = mask.dtype() == at::kByte ? MaskKind::boolean : MaskKind::additive;
  }
  s.key_lengths = key_lengths.numel() > 0 ? key_lengths.data_ptr<int64_t>() : nullptr;
  s.diag_offset = diag_offset;
  s.window_left = window_left;
  s.window_right = window_right;
  s.dropout = dropout;
  s.dropout_key[0] = uint64_t(key0);
  s.dropout_key[1] = uint64_t(key1);
  s.dropout_threshold = uint32_t(threshold);
  s.dropout_scale = dropout_scale;
  p.q = q.data_ptr();
  set3(p.q_stride, q);
  p.k = k.data_ptr();
  set3(p.k_stride, k);
  p.v = v.data_ptr();
  set3(p.v_stride, v);
  p.out = out.data_ptr();
  set3(p.out_stride, out);
  p.lse = lse.data_ptr();

  const dim3 grid(unsigned((s.lq + kBQ - 1) / kBQ), unsigned(s.heads_q), unsigned(s.batch));
  const int64_t dim = std::max(s.d, s.dv);
  TORCH_CHECK(dim <= kTcMaxHeadDim, "head dim above ", kTcMaxHeadDim);
  const auto run = [&](auto t, auto dd, auto drop) {
    using T = decltype(t);
    constexpr int D = decltype(dd)::value;
    static_assert(Smem<D>::bytes <= int(sizeof(smem)));
    emu::launch(grid, kThreadsTc, [&] { fwd_tc_kernel<T, D, decltype(drop)::value>(p); });
  };
  const auto with_drop = [&](auto t, auto dd) {
    if (dropout) run(t, dd, std::true_type{});
    else run(t, dd, std::false_type{});
  };
  const auto with_dim = [&](auto t) {
    if (dim <= 64) with_drop(t, std::integral_constant<int, 64>{});
    else with_drop(t, std::integral_constant<int, 128>{});
  };
  if (s.dtype == DType::f16) with_dim(__half{});
  else with_dim(__nv_bfloat16{});
  return {out, lse};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("fwd", &fwd); }
