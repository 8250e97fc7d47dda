// torch glue for attention: argument checks, mask preparation, output allocation, CPU/CUDA
// registration. The ops take 4-d [batch, heads, seq, dim] tensors; pyattn.functional folds
// any other layout into that. The params structs are filled in attention_params.h.
#include <torch/library.h>

#include <tuple>

#include "attention_params.h"
#include "checks.h"
#include "dispatch.h"
#include "pyattn/attention.h"
#include "pyattn/dropout_math.h"

namespace pyattn {
namespace {

// Checks q, k, v against each other (the kernels' shape rules of pyattn/attention.h).
void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const char* op) {
  check_dims(q, 4, op, "query", "(batch, heads, seq_q, dim)");
  check_dims(k, 4, op, "key", "(batch, kv_heads, seq_k, dim)");
  check_dims(v, 4, op, "value", "(batch, kv_heads, seq_k, dim_v)");
  to_dtype(q, op, "query");
  for (const auto& [t, what] : {std::pair<const at::Tensor&, const char*>{k, "key"}, {v, "value"}}) {
    check_like(t, what, q, "query", op);
    TORCH_CHECK(t.size(0) == q.size(0), op, ": ", what, " has batch size ", t.size(0), ", expected query's ",
                q.size(0));
  }
  TORCH_CHECK(k.size(1) == v.size(1) && k.size(2) == v.size(2), op, ": key of shape ", k.sizes(),
              " and value of shape ", v.sizes(), " must agree in kv_heads and seq_k");
  TORCH_CHECK(k.size(3) == q.size(3), op, ": key has dim ", k.size(3), ", expected query's dim ", q.size(3));
  TORCH_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0, op, ": key has ", k.size(1),
              " heads, which must divide query's ", q.size(1), " heads");
  TORCH_CHECK(q.size(3) > 0 && v.size(3) > 0, op, ": query and value need a head dim of at least 1, got ",
              q.size(3), " and ", v.size(3));
}

// The CUDA kernel's envelope (pyattn/attention.h).
void check_cuda_envelope(const at::Tensor& q, const at::Tensor& v, const char* op) {
  if (!q.is_cuda()) return;
  TORCH_CHECK(q.size(3) <= kAttentionCudaMaxHeadDim && v.size(3) <= kAttentionCudaMaxHeadDim, op,
              ": on CUDA, head dims up to ", kAttentionCudaMaxHeadDim, " are supported; got query/key dim ",
              q.size(3), " and value dim ", v.size(3));
  TORCH_CHECK(q.size(0) <= 65535 && q.size(1) <= 65535, op,
              ": on CUDA, batch and heads must be at most 65535; got ", q.size(0), " and ", q.size(1));
}

// Checks the mask, key lengths and window arguments and resolves them into the kernels'
// terms: the mask as a [batch, heads_q, lq, lk] view (broadcast_mask), the lengths as
// int64, and the causal rule as a window bound. q, k: checked by check_qkv.
AttentionMasks prepare_masks(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& mask_in,
                             const std::optional<at::Tensor>& lengths_in, bool causal, bool bottom_right,
                             int64_t window_left, int64_t window_right, const char* op) {
  const int64_t batch = q.size(0), lq = q.size(2), lk = k.size(2);
  AttentionMasks masks;
  if (mask_in.has_value()) {
    const at::Tensor& m0 = *mask_in;
    check_same_device(m0, "mask", q, "query", op);
    TORCH_CHECK(m0.scalar_type() == at::kBool || m0.scalar_type() == q.scalar_type(), op, ": mask has dtype ",
                m0.scalar_type(), ", expected bool (True = attend) or query's dtype ", q.scalar_type(),
                " (added to the scores)");
    const std::vector<int64_t> full{batch, q.size(1), lq, lk};
    bool ok = m0.dim() <= 4;
    for (int64_t d = 1; ok && d <= m0.dim(); ++d) ok = m0.size(-d) == full[4 - d] || m0.size(-d) == 1;
    TORCH_CHECK(ok, op, ": mask of shape ", m0.sizes(), " is not broadcastable to (batch, heads, seq_q, seq_k) = ",
                at::IntArrayRef(full));
    masks.mask = broadcast_mask(m0, full);
  }
  if (lengths_in.has_value()) {
    const at::Tensor& l0 = *lengths_in;
    TORCH_CHECK(l0.dim() == 1 && l0.size(0) == batch, op, ": key_lengths has shape ", l0.sizes(), ", expected (",
                batch, ",) (one length per batch item)");
    TORCH_CHECK(!at::isFloatingType(l0.scalar_type()) && l0.scalar_type() != at::kBool, op,
                ": key_lengths has dtype ", l0.scalar_type(), ", expected an integer dtype");
    check_same_device(l0, "key_lengths", q, "query", op);
    masks.key_lengths = l0.to(at::kLong).contiguous();
  }
  TORCH_CHECK(window_left >= -1 && window_right >= -1, op, ": window sizes must be >= 0 (or -1 for unbounded), got (",
              window_left, ", ", window_right, ")");
  masks.diag_offset = bottom_right ? lk - lq : 0;
  masks.window_left = window_left;
  masks.window_right = causal ? (window_right < 0 ? 0 : std::min<int64_t>(window_right, 0)) : window_right;
  return masks;
}

void check_dropout_p(double p, const char* op) {
  TORCH_CHECK(p >= 0.0 && p <= 1.0, op, ": dropout_p must be in [0, 1], got ", p);
}

// Dropout of probability p (already checked) with the key in seed: int64 [2] on the CPU,
// read here, on the host, also for CUDA inputs.
DropoutArgs dropout_args(double p, const at::Tensor& seed, const char* op) {
  TORCH_CHECK(seed.scalar_type() == at::kLong && seed.numel() == 2 && seed.device().is_cpu(), op,
              ": dropout_seed has dtype ", seed.scalar_type(), ", ", seed.numel(), " elements and device ",
              seed.device(), ", expected int64, 2 elements, cpu (the key drawn from a torch.Generator)");
  const at::Tensor t = seed.contiguous();
  DropoutArgs d;
  d.on = p > 0.0;
  for (int k = 0; k < 2; ++k) d.key[k] = static_cast<uint64_t>(t.data_ptr<int64_t>()[k]);
  d.threshold = dropout_math::threshold(p);
  d.scale = d.on ? dropout_math::keep_scale(p) : 1.0;
  return d;
}

// The fused ops' dropout: dropout_p = 0 turns it off (dropout_seed unused).
DropoutArgs prepare_dropout(double p, const std::optional<at::Tensor>& seed, const char* op) {
  check_dropout_p(p, op);
  if (p == 0.0) return DropoutArgs{};
  TORCH_CHECK(seed.has_value(), op, ": dropout_p > 0 needs dropout_seed (int64 [2] on the CPU)");
  return dropout_args(p, *seed, op);
}

at::ScalarType lse_dtype(const at::Tensor& q) { return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

std::tuple<at::Tensor, at::Tensor> fwd(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                       const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& key_lengths,
                                       double scale, bool causal, bool bottom_right, int64_t window_left,
                                       int64_t window_right, double dropout_p,
                                       const std::optional<at::Tensor>& dropout_seed) {
  constexpr const char* op = "attention";
  check_qkv(q_in, k_in, v_in, op);
  const AttentionMasks masks =
      prepare_masks(q_in, k_in, mask, key_lengths, causal, bottom_right, window_left, window_right, op);
  const DropoutArgs dropout = prepare_dropout(dropout_p, dropout_seed, op);
  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(lse_dtype(q)));
  if (out.numel() == 0) return {out, lse};
  check_cuda_envelope(q, v, op);
  const AttentionFwdParams p = make_attention_fwd_params(q, k, v, out, lse, scale, masks, dropout);
  run_kernel(q, op, p, &attention_fwd_cpu, PYATTN_CUDA_LAUNCHER(attention_fwd_cuda));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bwd(
    const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& out_in, const at::Tensor& lse_in, const std::optional<at::Tensor>& dlse_in,
    const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& key_lengths, double scale, bool causal, bool bottom_right, int64_t window_left,
    int64_t window_right, bool mask_grad, double dropout_p, const std::optional<at::Tensor>& dropout_seed) {
  constexpr const char* op = "attention backward";
  check_qkv(q_in, k_in, v_in, op);
  const AttentionMasks masks =
      prepare_masks(q_in, k_in, mask, key_lengths, causal, bottom_right, window_left, window_right, op);
  const DropoutArgs dropout = prepare_dropout(dropout_p, dropout_seed, op);
  const int64_t batch = q_in.size(0), heads_q = q_in.size(1), lq = q_in.size(2), lk = k_in.size(2);
  const std::vector<int64_t> oshape{batch, heads_q, lq, v_in.size(3)};
  for (const auto& [t, what] : {std::pair<const at::Tensor&, const char*>{dout_in, "grad_out"}, {out_in, "out"}}) {
    TORCH_CHECK(t.sizes() == at::IntArrayRef(oshape), op, ": ", what, " has shape ", t.sizes(), ", expected ",
                at::IntArrayRef(oshape));
    check_like(t, what, q_in, "query", op);
  }
  TORCH_CHECK(lse_in.sizes() == at::IntArrayRef(oshape.data(), 3) && lse_in.scalar_type() == lse_dtype(q_in), op,
              ": lse has shape ", lse_in.sizes(), " and dtype ", lse_in.scalar_type(), ", expected ",
              at::IntArrayRef(oshape.data(), 3), " and ", lse_dtype(q_in), " (the forward's lse)");
  at::Tensor dlse;
  if (dlse_in.has_value()) {
    TORCH_CHECK(dlse_in->sizes() == lse_in.sizes() && dlse_in->scalar_type() == lse_in.scalar_type() &&
                    dlse_in->device() == lse_in.device(),
                op, ": dlse has shape ", dlse_in->sizes(), ", dtype ", dlse_in->scalar_type(), " and device ",
                dlse_in->device(), ", expected lse's (", lse_in.sizes(), ", ", lse_in.scalar_type(), ", ",
                lse_in.device(), ")");
    dlse = dlse_in->contiguous();
  }
  TORCH_CHECK(!mask_grad || (masks.mask.defined() && masks.mask.scalar_type() != at::kBool), op,
              ": mask_grad needs an additive (floating) mask");
  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);
  const at::Tensor out = last_dim_contiguous(out_in), dout = last_dim_contiguous(dout_in), lse = lse_in.contiguous();
  at::Tensor dq = at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  at::Tensor dmask = mask_grad ? at::zeros({batch, heads_q, lq, lk}, q.options()) : at::empty({0}, q.options());
  if (dk.numel() == 0 && dq.numel() == 0) return {dq, dk, dv, dmask};
  check_cuda_envelope(q, v, op);
  AttentionBwdParams p = make_attention_bwd_params(q, k, v, out, dout, lse, dlse, dq, dk, dv,
                                                   mask_grad ? dmask : at::Tensor(), scale, masks, dropout);
  // Scratch for the CUDA tensor-core kernels, from torch's allocator (as small as lse).
  at::Tensor row_delta;
  if (q.is_cuda()) {
    row_delta = at::empty({batch, heads_q, lq}, q.options().dtype(at::kFloat));
    p.row_delta = row_delta.data_ptr<float>();
  }
  run_kernel(q, op, p, &attention_bwd_cpu, PYATTN_CUDA_LAUNCHER(attention_bwd_cuda));
  return {dq, dk, dv, dmask};
}

// Inference with the weights (nn.MultiheadAttention, need_weights): (out, weights), the
// weights [batch, heads, lq, lk], or their mean over heads [batch, lq, lk]. No backward.
std::tuple<at::Tensor, at::Tensor> with_weights(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                                const std::optional<at::Tensor>& mask, double scale,
                                                bool average_heads) {
  constexpr const char* op = "attention_with_weights";
  check_qkv(q_in, k_in, v_in, op);
  const AttentionMasks masks = prepare_masks(q_in, k_in, mask, std::nullopt, false, false, -1, -1, op);
  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);
  const int64_t batch = q.size(0), heads_q = q.size(1), lq = q.size(2), lk = k.size(2);
  at::Tensor out = at::empty({batch, heads_q, lq, v.size(3)}, q.options());
  at::Tensor weights = average_heads ? empty_output({batch, lq, lk}, q.options())
                                     : empty_output({batch, heads_q, lq, lk}, q.options());
  if (out.numel() == 0) return {out, weights};
  const AttentionWeightsParams p = make_attention_weights_params(q, k, v, out, weights, average_heads, scale, masks);
  run_kernel(q, op, p, &attention_weights_cpu, nullptr);
  return {out, weights};
}

// x [batch, heads, lq, lk] times the dropout multipliers the fused kernels use for the same
// key: y = x .* Z / (1 - p). Its own backward (register_autograd applies it to dy).
at::Tensor dropout(const at::Tensor& x_in, const at::Tensor& dropout_seed, double dropout_p) {
  constexpr const char* op = "attention_dropout";
  check_dims(x_in, 4, op, "x", "(batch, heads, seq_q, seq_k)");
  check_dropout_p(dropout_p, op);
  to_dtype(x_in, op, "x");
  const DropoutArgs args = dropout_args(dropout_p, dropout_seed, op);
  const at::Tensor x = last_dim_contiguous(x_in);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  const AttentionDropoutParams p = make_attention_dropout_params(x, y, args);
  run_kernel(x, op, p, &attention_dropout_cpu, PYATTN_CUDA_LAUNCHER(attention_dropout_cuda));
  return y;
}

void register_impls(torch::Library& m) {
  m.impl("attention_fwd", &fwd);
  m.impl("attention_bwd", &bwd);
  m.impl("attention_dropout", &dropout);
}

}  // namespace

PYATTN_IMPL_CPU_AND_CUDA(register_impls)
TORCH_LIBRARY_IMPL(pyattn, CPU, m) { m.impl("attention_with_weights", &with_weights); }  // no CUDA kernel

}  // namespace pyattn
