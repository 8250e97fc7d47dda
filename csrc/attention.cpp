// torch glue for attention: argument checks, mask preparation, output allocation, CPU/CUDA
// registration. The ops take 4-d [batch, heads, seq, dim] tensors; pyattn.functional folds
// any other layout into that.
#include <torch/library.h>

#include <tuple>

#include "dispatch.h"
#include "pyattn/attention.h"
#include "pyattn/dropout_math.h"

namespace pyattn {
namespace {

// Last-dim stride 1 (the kernels' only layout requirement), copying only when needed.
at::Tensor unit_last(const at::Tensor& t) { return t.size(-1) > 1 && t.stride(-1) != 1 ? t.contiguous() : t; }

void check_4d(const at::Tensor& t, const char* op, const char* what, const char* dims) {
  TORCH_CHECK(t.dim() == 4, op, ": ", what, " has ", t.dim(), " dims, expected 4 ", dims);
}

// Checks q, k, v and fills the shape fields of s that they determine.
void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const char* op, AttentionShape* s) {
  check_4d(q, op, "query", "(batch, heads, seq_q, dim)");
  check_4d(k, op, "key", "(batch, kv_heads, seq_k, dim)");
  check_4d(v, op, "value", "(batch, kv_heads, seq_k, dim_v)");
  s->dtype = to_dtype(q, op, "query");
  for (const auto& [t, what] : {std::pair<const at::Tensor&, const char*>{k, "key"}, {v, "value"}}) {
    TORCH_CHECK(t.scalar_type() == q.scalar_type(), op, ": ", what, " has dtype ", t.scalar_type(),
                ", expected query's dtype ", q.scalar_type());
    TORCH_CHECK(t.device() == q.device(), op, ": ", what, " is on ", t.device(), " but query is on ", q.device());
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
  s->batch = q.size(0);
  s->heads_q = q.size(1);
  s->heads_kv = k.size(1);
  s->lq = q.size(2);
  s->lk = k.size(2);
  s->d = q.size(3);
  s->dv = v.size(3);
}

// Fills the mask, key-length and window fields of s; returns the tensors that must stay
// alive while the kernel runs (the mask view, the lengths as int64).
// The CUDA kernel's envelope (pyattn/attention.h).
void check_cuda_envelope(const at::Tensor& q, const AttentionShape& s, const char* op) {
  if (!q.is_cuda()) return;
  TORCH_CHECK(s.d <= kAttentionCudaMaxHeadDim && s.dv <= kAttentionCudaMaxHeadDim, op,
              ": on CUDA, head dims up to ", kAttentionCudaMaxHeadDim, " are supported; got query/key dim ", s.d,
              " and value dim ", s.dv);
  TORCH_CHECK(s.batch <= 65535 && s.heads_q <= 65535, op, ": on CUDA, batch and heads must be at most 65535; got ",
              s.batch, " and ", s.heads_q);
}

std::pair<at::Tensor, at::Tensor> prepare_masks(const at::Tensor& q, const std::optional<at::Tensor>& mask_in,
                                                const std::optional<at::Tensor>& lengths_in, double scale,
                                                bool causal, bool bottom_right, int64_t window_left,
                                                int64_t window_right, const char* op, AttentionShape* s) {
  s->scale = scale;
  s->mask = nullptr;
  s->mask_kind = MaskKind::none;
  for (int k = 0; k < 3; ++k) s->mask_stride[k] = 0;
  at::Tensor mask;
  if (mask_in.has_value()) {
    const at::Tensor& m0 = *mask_in;
    TORCH_CHECK(m0.device() == q.device(), op, ": mask is on ", m0.device(), " but query is on ", q.device());
    if (m0.scalar_type() == at::kBool) {
      s->mask_kind = MaskKind::boolean;
    } else {
      TORCH_CHECK(m0.scalar_type() == q.scalar_type(), op, ": mask has dtype ", m0.scalar_type(),
                  ", expected bool (True = attend) or query's dtype ", q.scalar_type(), " (added to the scores)");
      s->mask_kind = MaskKind::additive;
    }
    const std::vector<int64_t> full{s->batch, s->heads_q, s->lq, s->lk};
    bool ok = m0.dim() <= 4;
    for (int64_t d = 1; ok && d <= m0.dim(); ++d) ok = m0.size(-d) == full[4 - d] || m0.size(-d) == 1;
    TORCH_CHECK(ok, op, ": mask of shape ", m0.sizes(), " is not broadcastable to (batch, heads, seq_q, seq_k) = ",
                at::IntArrayRef(full));
    at::Tensor m = m0.dim() == 0 ? m0.reshape({1}) : m0;
    if (m.size(-1) != s->lk) {  // broadcast along keys: materialise that dim only
      std::vector<int64_t> shape(m.sizes().begin(), m.sizes().end());
      shape.back() = s->lk;
      m = m.expand(shape).contiguous();
    } else {
      m = unit_last(m);
    }
    mask = m.expand(full);
    s->mask = mask.data_ptr();
    for (int k = 0; k < 3; ++k) s->mask_stride[k] = mask.stride(k);
  }
  at::Tensor lengths;
  s->key_lengths = nullptr;
  if (lengths_in.has_value()) {
    const at::Tensor& l0 = *lengths_in;
    TORCH_CHECK(l0.dim() == 1 && l0.size(0) == s->batch, op, ": key_lengths has shape ", l0.sizes(),
                ", expected (", s->batch, ",) (one length per batch item)");
    TORCH_CHECK(!at::isFloatingType(l0.scalar_type()) && l0.scalar_type() != at::kBool, op,
                ": key_lengths has dtype ", l0.scalar_type(), ", expected an integer dtype");
    TORCH_CHECK(l0.device() == q.device(), op, ": key_lengths is on ", l0.device(), " but query is on ", q.device());
    lengths = l0.to(at::kLong).contiguous();
    s->key_lengths = lengths.data_ptr<int64_t>();
  }
  TORCH_CHECK(window_left >= -1 && window_right >= -1, op, ": window sizes must be >= 0 (or -1 for unbounded), got (",
              window_left, ", ", window_right, ")");
  s->diag_offset = bottom_right ? s->lk - s->lq : 0;
  s->window_left = window_left;
  s->window_right = causal ? (window_right < 0 ? 0 : std::min<int64_t>(window_right, 0)) : window_right;
  s->num_threads = at::get_num_threads();
  return {mask, lengths};
}

// The dropout key: int64 [2] on the CPU (read here, on the host, also for CUDA inputs).
void read_dropout_seed(const std::optional<at::Tensor>& seed, const char* op, uint64_t* key) {
  TORCH_CHECK(seed.has_value(), op, ": dropout_p > 0 needs dropout_seed (int64 [2] on the CPU)");
  TORCH_CHECK(seed->scalar_type() == at::kLong && seed->numel() == 2 && seed->device().is_cpu(), op,
              ": dropout_seed has dtype ", seed->scalar_type(), ", ", seed->numel(), " elements and device ",
              seed->device(), ", expected int64, 2 elements, cpu (the key drawn from a torch.Generator)");
  const at::Tensor t = seed->contiguous();
  for (int k = 0; k < 2; ++k) key[k] = static_cast<uint64_t>(t.data_ptr<int64_t>()[k]);
}

void check_dropout_p(double p, const char* op) {
  TORCH_CHECK(p >= 0.0 && p <= 1.0, op, ": dropout_p must be in [0, 1], got ", p);
}

// Fills the dropout fields of s. dropout_p = 0 turns dropout off (dropout_seed unused).
void prepare_dropout(double p, const std::optional<at::Tensor>& seed, const char* op, AttentionShape* s) {
  check_dropout_p(p, op);
  s->dropout = p > 0.0;
  s->dropout_key[0] = s->dropout_key[1] = 0;
  s->dropout_threshold = 0;
  s->dropout_scale = 1.0;
  if (!s->dropout) return;
  read_dropout_seed(seed, op, s->dropout_key);
  s->dropout_threshold = dropout_math::threshold(p);
  s->dropout_scale = dropout_math::keep_scale(p);
}

void set_strides(int64_t* dst, const at::Tensor& t) {
  for (int k = 0; k < 3; ++k) dst[k] = t.stride(k);
}

// Pointers and strides of q, k, v and out (the forward's output, for backward), in any of
// the params structs.
template <class Params>
void set_qkv_out(Params* p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out) {
  p->q = q.data_ptr();
  p->k = k.data_ptr();
  p->v = v.data_ptr();
  p->out = out.data_ptr();
  set_strides(p->q_stride, q);
  set_strides(p->k_stride, k);
  set_strides(p->v_stride, v);
  set_strides(p->out_stride, out);
}

at::ScalarType lse_dtype(const at::Tensor& q) { return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

std::tuple<at::Tensor, at::Tensor> fwd(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                       const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& key_lengths,
                                       double scale, bool causal, bool bottom_right, int64_t window_left,
                                       int64_t window_right, double dropout_p,
                                       const std::optional<at::Tensor>& dropout_seed) {
  constexpr const char* op = "attention";
  AttentionFwdParams p{};
  check_qkv(q_in, k_in, v_in, op, &p.s);
  const auto keep = prepare_masks(q_in, mask, key_lengths, scale, causal, bottom_right, window_left, window_right,
                                  op, &p.s);
  prepare_dropout(dropout_p, dropout_seed, op, &p.s);
  const at::Tensor q = unit_last(q_in), k = unit_last(k_in), v = unit_last(v_in);
  at::Tensor out = at::empty({p.s.batch, p.s.heads_q, p.s.lq, p.s.dv}, q.options());
  at::Tensor lse = at::empty({p.s.batch, p.s.heads_q, p.s.lq}, q.options().dtype(lse_dtype(q)));
  if (out.numel() == 0) return {out, lse};
  set_qkv_out(&p, q, k, v, out);
  p.lse = lse.data_ptr();
  check_cuda_envelope(q, p.s, op);
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
  AttentionBwdParams p{};
  check_qkv(q_in, k_in, v_in, op, &p.s);
  const auto keep = prepare_masks(q_in, mask, key_lengths, scale, causal, bottom_right, window_left, window_right,
                                  op, &p.s);
  prepare_dropout(dropout_p, dropout_seed, op, &p.s);
  const std::vector<int64_t> oshape{p.s.batch, p.s.heads_q, p.s.lq, p.s.dv};
  for (const auto& [t, what] : {std::pair<const at::Tensor&, const char*>{dout_in, "grad_out"}, {out_in, "out"}}) {
    TORCH_CHECK(t.sizes() == at::IntArrayRef(oshape), op, ": ", what, " has shape ", t.sizes(), ", expected ",
                at::IntArrayRef(oshape));
    TORCH_CHECK(t.scalar_type() == q_in.scalar_type(), op, ": ", what, " has dtype ", t.scalar_type(),
                ", expected query's dtype ", q_in.scalar_type());
    TORCH_CHECK(t.device() == q_in.device(), op, ": ", what, " is on ", t.device(), " but query is on ",
                q_in.device());
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
  TORCH_CHECK(!mask_grad || p.s.mask_kind == MaskKind::additive, op,
              ": mask_grad needs an additive (floating) mask");
  const at::Tensor q = unit_last(q_in), k = unit_last(k_in), v = unit_last(v_in);
  const at::Tensor out = unit_last(out_in), dout = unit_last(dout_in), lse = lse_in.contiguous();
  at::Tensor dq = at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  at::Tensor dmask = mask_grad ? at::zeros({p.s.batch, p.s.heads_q, p.s.lq, p.s.lk}, q.options())
                               : at::empty({0}, q.options());
  if (dk.numel() == 0 && dq.numel() == 0) return {dq, dk, dv, dmask};
  set_qkv_out(&p, q, k, v, out);
  p.dout = dout.data_ptr();
  p.lse = lse.data_ptr();
  p.dlse = dlse.defined() ? dlse.data_ptr() : nullptr;
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  p.dmask = mask_grad ? dmask.data_ptr() : nullptr;
  set_strides(p.dout_stride, dout);
  set_strides(p.dq_stride, dq);
  set_strides(p.dk_stride, dk);
  set_strides(p.dv_stride, dv);
  check_cuda_envelope(q, p.s, op);
  run_kernel(q, op, p, &attention_bwd_cpu, PYATTN_CUDA_LAUNCHER(attention_bwd_cuda));
  return {dq, dk, dv, dmask};
}

// Inference with the weights (nn.MultiheadAttention, need_weights): (out, weights), the
// weights [batch, heads, lq, lk], or their mean over heads [batch, lq, lk]. No backward.
std::tuple<at::Tensor, at::Tensor> with_weights(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                                const std::optional<at::Tensor>& mask, double scale,
                                                bool average_heads) {
  constexpr const char* op = "attention_with_weights";
  AttentionWeightsParams p{};
  check_qkv(q_in, k_in, v_in, op, &p.s);
  const auto keep = prepare_masks(q_in, mask, std::nullopt, scale, false, false, -1, -1, op, &p.s);
  prepare_dropout(0.0, std::nullopt, op, &p.s);
  const at::Tensor q = unit_last(q_in), k = unit_last(k_in), v = unit_last(v_in);
  at::Tensor out = at::empty({p.s.batch, p.s.heads_q, p.s.lq, p.s.dv}, q.options());
  at::Tensor weights = average_heads ? empty_output({p.s.batch, p.s.lq, p.s.lk}, q.options())
                                     : empty_output({p.s.batch, p.s.heads_q, p.s.lq, p.s.lk}, q.options());
  if (out.numel() == 0) return {out, weights};
  set_qkv_out(&p, q, k, v, out);
  p.weights = weights.data_ptr();
  p.average_heads = average_heads;
  run_kernel(q, op, p, &attention_weights_cpu, nullptr);
  return {out, weights};
}

// x [batch, heads, lq, lk] times the dropout multipliers the fused kernels use for the same
// key: y = x .* Z / (1 - p). Its own backward (register_autograd applies it to dy).
at::Tensor dropout(const at::Tensor& x_in, const at::Tensor& dropout_seed, double dropout_p) {
  constexpr const char* op = "attention_dropout";
  check_4d(x_in, op, "x", "(batch, heads, seq_q, seq_k)");
  check_dropout_p(dropout_p, op);
  AttentionDropoutParams p{};
  p.dtype = to_dtype(x_in, op, "x");
  read_dropout_seed(dropout_seed, op, p.key);
  p.threshold = dropout_math::threshold(dropout_p);
  p.scale = dropout_p > 0.0 ? dropout_math::keep_scale(dropout_p) : 1.0;
  p.batch = x_in.size(0);
  p.heads = x_in.size(1);
  p.lq = x_in.size(2);
  p.lk = x_in.size(3);
  const at::Tensor x = unit_last(x_in);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  p.x = x.data_ptr();
  set_strides(p.x_stride, x);
  p.y = y.data_ptr();
  run_kernel(x, op, p, &attention_dropout_cpu, PYATTN_CUDA_LAUNCHER(attention_dropout_cuda));
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CPU, m) {
  m.impl("attention_fwd", &fwd);
  m.impl("attention_bwd", &bwd);
  m.impl("attention_dropout", &dropout);
  m.impl("attention_with_weights", &with_weights);
}

TORCH_LIBRARY_IMPL(pyattn, CUDA, m) {
  m.impl("attention_fwd", &fwd);
  m.impl("attention_bwd", &bwd);
  m.impl("attention_dropout", &dropout);
}

}  // namespace pyattn
