// Torch extension over the emulated CUDA kernels (emulate.h): builds each op's params
// from CPU tensors, as csrc/ does from CUDA ones, and calls the kernels' own CUDA entry
// points. Used by tests/test_cuda_emulated.py.
#include <torch/extension.h>

#include "emulate.h"
#include "pyattn/attention.h"
#include "pyattn/lstm.h"
#include "pyattn/negative_sampling.h"
#include "pyattn/scaled_masked_softmax.h"

namespace {

using namespace pyattn;

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kDouble: return DType::f64;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default: TORCH_CHECK(false, "unsupported dtype ", t.scalar_type());
  }
}

void strides3(int64_t* dst, const at::Tensor& t) {
  for (int d = 0; d < 3; ++d) dst[d] = t.stride(d);
}

// Rules of pyattn/attention.h. mask: empty, uint8 (nonzero = attend) or q's dtype
// (additive), [B, Hq, Lq, Lk] with broadcast strides; key_lengths: empty or int64 [B].
AttentionShape shape_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                        double scale, int64_t diag_offset, int64_t window_left, int64_t window_right,
                        const at::Tensor& key_lengths, const std::vector<int64_t>& dropout) {
  AttentionShape s{};
  s.dtype = dtype_of(q);
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
    strides3(s.mask_stride, mask);
    s.mask_kind = mask.scalar_type() == at::kByte ? MaskKind::boolean : MaskKind::additive;
  }
  s.key_lengths = key_lengths.numel() > 0 ? key_lengths.data_ptr<int64_t>() : nullptr;
  s.diag_offset = diag_offset;
  s.window_left = window_left;
  s.window_right = window_right;
  s.num_threads = 1;
  // dropout: empty, or {key0, key1, threshold} with the scale 1 / (1 - p) from threshold's p
  s.dropout = !dropout.empty();
  if (s.dropout) {
    s.dropout_key[0] = uint64_t(dropout[0]);
    s.dropout_key[1] = uint64_t(dropout[1]);
    s.dropout_threshold = uint32_t(dropout[2]);
  }
  return s;
}

at::Tensor lse_like(const at::Tensor& q) {
  return at::empty({q.size(0), q.size(1), q.size(2)},
                   q.options().dtype(q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
}

std::vector<at::Tensor> attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& mask, double scale, int64_t diag_offset, int64_t window_left,
                                      int64_t window_right, const at::Tensor& key_lengths,
                                      const std::vector<int64_t>& dropout, double dropout_scale) {
  AttentionFwdParams p{};
  p.s = shape_of(q, k, v, mask, scale, diag_offset, window_left, window_right, key_lengths, dropout);
  p.s.dropout_scale = dropout_scale;
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  at::Tensor lse = lse_like(q);
  p.q = q.data_ptr();
  strides3(p.q_stride, q);
  p.k = k.data_ptr();
  strides3(p.k_stride, k);
  p.v = v.data_ptr();
  strides3(p.v_stride, v);
  p.out = out.data_ptr();
  strides3(p.out_stride, out);
  p.lse = lse.data_ptr();
  attention_fwd_cuda(p, nullptr);
  return {out, lse};
}

// Returns dq, dk, dv and, when want_dmask, dL/dz [B, Hq, Lq, Lk] (else an empty tensor).
std::vector<at::Tensor> attention_bwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& out, const at::Tensor& dout, const at::Tensor& lse,
                                      const at::Tensor& mask, double scale, int64_t diag_offset, int64_t window_left,
                                      int64_t window_right, const at::Tensor& key_lengths,
                                      const std::vector<int64_t>& dropout, double dropout_scale, bool want_dmask) {
  AttentionBwdParams p{};
  p.s = shape_of(q, k, v, mask, scale, diag_offset, window_left, window_right, key_lengths, dropout);
  p.s.dropout_scale = dropout_scale;
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  at::Tensor dmask = want_dmask ? at::zeros({q.size(0), q.size(1), q.size(2), k.size(2)}, q.options())
                                : at::empty({0}, q.options());
  p.q = q.data_ptr();
  strides3(p.q_stride, q);
  p.k = k.data_ptr();
  strides3(p.k_stride, k);
  p.v = v.data_ptr();
  strides3(p.v_stride, v);
  p.out = out.data_ptr();
  strides3(p.out_stride, out);
  p.dout = dout.data_ptr();
  strides3(p.dout_stride, dout);
  p.lse = lse.data_ptr();
  p.dq = dq.data_ptr();
  strides3(p.dq_stride, dq);
  p.dk = dk.data_ptr();
  strides3(p.dk_stride, dk);
  p.dv = dv.data_ptr();
  strides3(p.dv_stride, dv);
  p.dmask = want_dmask ? dmask.data_ptr() : nullptr;
  attention_bwd_cuda(p, nullptr);
  return {dq, dk, dv, dmask};
}

// x, mask (empty, bool: True = masked out, or x's dtype: additive): [B, H, Sq, Sk], mask
// with broadcast strides allowed.
at::Tensor softmax_fwd(const at::Tensor& x, const at::Tensor& mask, double scale, bool causal) {
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  ScaledMaskedSoftmaxFwdParams p{};
  p.x = x.data_ptr();
  strides3(p.x_stride, x);
  p.y = y.data_ptr();
  strides3(p.y_stride, y);
  p.mask_kind = MaskKind::none;
  at::Tensor m = mask;
  if (mask.numel() > 0) {
    if (mask.scalar_type() == at::kBool) m = mask.to(at::kByte);
    m = m.expand(x.sizes());
    p.mask = m.data_ptr();
    strides3(p.mask_stride, m);
    p.mask_kind = mask.scalar_type() == at::kBool ? MaskKind::boolean : MaskKind::additive;
  }
  p.dtype = dtype_of(x);
  p.batch = x.size(0);
  p.heads = x.size(1);
  p.sq = x.size(2);
  p.sk = x.size(3);
  p.scale = scale;
  p.causal = causal;
  p.num_threads = 1;
  scaled_masked_softmax_fwd_cuda(p, nullptr);
  return y;
}

at::Tensor softmax_bwd(const at::Tensor& y, const at::Tensor& dy, double scale) {
  at::Tensor dx = at::empty_like(y, at::MemoryFormat::Contiguous);
  ScaledMaskedSoftmaxBwdParams p{};
  p.y = y.data_ptr();
  strides3(p.y_stride, y);
  p.dy = dy.data_ptr();
  strides3(p.dy_stride, dy);
  p.dx = dx.data_ptr();
  strides3(p.dx_stride, dx);
  p.dtype = dtype_of(y);
  p.batch = y.size(0);
  p.heads = y.size(1);
  p.sq = y.size(2);
  p.sk = y.size(3);
  p.scale = scale;
  p.num_threads = 1;
  scaled_masked_softmax_bwd_cuda(p, nullptr);
  return dx;
}

// The pointwise LSTM step: gates [n, 4H] (no bias), c [n, H], b_ih / b_hh [4H] or empty.
// Returns (h, c', act).
std::vector<at::Tensor> lstm_fwd(const at::Tensor& gates, const at::Tensor& c, const at::Tensor& b_ih,
                                 const at::Tensor& b_hh) {
  const int64_t n = c.size(0), H = c.size(1);
  at::Tensor act = at::empty({n, 4 * H}, gates.options()), c_out = at::empty_like(c), h = at::empty_like(c);
  LstmFwdParams p{};
  p.gates = gates.data_ptr();
  p.gates_stride = gates.stride(0);
  p.bias[0] = b_ih.numel() ? b_ih.data_ptr() : nullptr;
  p.bias[1] = b_hh.numel() ? b_hh.data_ptr() : nullptr;
  p.act = act.data_ptr();
  p.act_stride = act.stride(0);
  p.c = c.data_ptr();
  p.c_stride = c.stride(0);
  p.c_out = c_out.data_ptr();
  p.c_out_stride = c_out.stride(0);
  p.h_out = h.data_ptr();
  p.h_out_stride = h.stride(0);
  p.dtype = dtype_of(c);
  p.n = n;
  p.hidden = H;
  lstm_fwd_cuda(p, nullptr);
  return {h, c_out, act};
}

// dh, dc (or empty) [n, H]; act [n, 4H], c, c_new [n, H]. Returns (dgates, dc_prev).
std::vector<at::Tensor> lstm_bwd(const at::Tensor& dh, const at::Tensor& dc, const at::Tensor& act,
                                 const at::Tensor& c, const at::Tensor& c_new) {
  const int64_t n = c.size(0), H = c.size(1);
  at::Tensor dgates = at::empty({n, 4 * H}, c.options()), dc_out = at::empty_like(c);
  LstmBwdParams p{};
  p.dh = dh.data_ptr();
  p.dh_stride = dh.stride(0);
  p.dc = dc.numel() ? dc.data_ptr() : nullptr;
  p.dc_stride = dc.numel() ? dc.stride(0) : 0;
  p.act = act.data_ptr();
  p.act_stride = act.stride(0);
  p.c = c.data_ptr();
  p.c_stride = c.stride(0);
  p.c_new = c_new.data_ptr();
  p.c_new_stride = c_new.stride(0);
  p.dgates = dgates.data_ptr();
  p.dgates_stride = dgates.stride(0);
  p.dc_out = dc_out.data_ptr();
  p.dc_out_stride = dc_out.stride(0);
  p.dtype = dtype_of(c);
  p.n = n;
  p.hidden = H;
  lstm_bwd_cuda(p, nullptr);
  return {dgates, dc_out};
}

// The persistent sequence kernels. steps: int64 [nsteps, 2] rows of (offset, rows), in
// processing order, or empty for a dense sequence of `nsteps` steps (reverse: last
// first); act_in [total, 4H] holds x·W_ihᵀ; b_ih / b_hh [4H] or empty.
// Returns (y, c_all, act, h_n, c_n), or nothing when the kernel declined the shape.
std::vector<at::Tensor> lstm_seq_persistent_fwd(const at::Tensor& act_in, const at::Tensor& w_hh,
                                                const at::Tensor& b_ih, const at::Tensor& b_hh, const at::Tensor& h0,
                                                const at::Tensor& c0, const at::Tensor& steps, int64_t nsteps,
                                                bool reverse) {
  const int64_t total = act_in.size(0), H = w_hh.size(1), n0 = h0.size(0);
  at::Tensor act = act_in.clone(), y = at::empty({total, H}, act.options()), c_all = at::empty_like(y);
  at::Tensor h_n = at::empty_like(h0), c_n = at::empty_like(c0);
  at::Tensor barrier = at::zeros({1}, at::kInt);
  LstmSeqCudaFwdParams p{};
  p.w_hh = w_hh.data_ptr();
  p.bias[0] = b_ih.numel() ? b_ih.data_ptr() : nullptr;
  p.bias[1] = b_hh.numel() ? b_hh.data_ptr() : nullptr;
  p.act = act.data_ptr();
  p.c_all = c_all.data_ptr();
  p.y = y.data_ptr();
  p.h0 = h0.data_ptr();
  p.c0 = c0.data_ptr();
  p.h_n = h_n.data_ptr();
  p.c_n = c_n.data_ptr();
  p.steps = steps.numel() ? reinterpret_cast<const LstmStep*>(steps.data_ptr<int64_t>()) : nullptr;
  p.reverse = reverse;
  p.nsteps = nsteps;
  p.batch = n0;
  p.hidden = H;
  p.barrier = reinterpret_cast<unsigned*>(barrier.data_ptr<int>());
  p.dtype = dtype_of(act);
  if (!lstm_seq_fwd_persistent_cuda(p, nullptr)) return {};
  return {y, c_all, act, h_n, c_n};
}

// dy [total, H] or empty; dh_n, dc_n [n0, H]; the forward's act, c_all. Returns
// (dgates, db, dh0, dc0), or nothing when the kernel declined the shape.
std::vector<at::Tensor> lstm_seq_persistent_bwd(const at::Tensor& dy, const at::Tensor& dh_n, const at::Tensor& dc_n,
                                                const at::Tensor& act, const at::Tensor& c_all, const at::Tensor& c0,
                                                const at::Tensor& w_hh, const at::Tensor& steps, int64_t nsteps,
                                                bool reverse) {
  const int64_t H = w_hh.size(1);
  at::Tensor dgates = at::empty_like(act), db = at::zeros({4 * H}, act.options());
  at::Tensor dh = dh_n.clone(), dc = dc_n.clone();
  at::Tensor barrier = at::zeros({1}, at::kInt);
  LstmSeqCudaBwdParams p{};
  p.w_hh = w_hh.data_ptr();
  p.dy = dy.numel() ? dy.data_ptr() : nullptr;
  p.act = act.data_ptr();
  p.c_all = c_all.data_ptr();
  p.c0 = c0.data_ptr();
  p.dgates = dgates.data_ptr();
  p.dbias = db.data_ptr();
  p.dh_state = dh.data_ptr();
  p.dc_state = dc.data_ptr();
  p.steps = steps.numel() ? reinterpret_cast<const LstmStep*>(steps.data_ptr<int64_t>()) : nullptr;
  p.reverse = reverse;
  p.nsteps = nsteps;
  p.batch = dh_n.size(0);
  p.hidden = H;
  p.barrier = reinterpret_cast<unsigned*>(barrier.data_ptr<int>());
  p.dtype = dtype_of(act);
  if (!lstm_seq_bwd_persistent_cuda(p, nullptr)) return {};
  return {dgates, db, dh, dc};
}

// Skip-gram (contexts [n, slots]) or CBOW update in place of w_in, w_out [V, D] (fp32 or
// fp64) with explicit negatives (skip-gram [n, slots, k], CBOW [n, k]). Returns
// (summed loss, bad index or -1).
std::tuple<double, int64_t> negsamp_update(at::Tensor w_in, at::Tensor w_out, const at::Tensor& centers,
                                           const at::Tensor& contexts, const at::Tensor& negatives, double lr,
                                           bool cbow) {
  double loss = 0;
  int64_t bad = 0;
  NegSamplingUpdateParams p{};
  p.w_in = w_in.data_ptr();
  p.w_in_stride = w_in.stride(0);
  p.w_out = w_out.data_ptr();
  p.w_out_stride = w_out.stride(0);
  p.dtype = dtype_of(w_in);
  p.vocab = w_in.size(0);
  p.dim = w_in.size(1);
  p.centers = centers.data_ptr<int64_t>();
  p.contexts = contexts.data_ptr<int64_t>();
  p.n = centers.size(0);
  p.window_slots = contexts.size(1);
  p.negatives = negatives.data_ptr<int64_t>();
  p.k = negatives.size(-1);
  p.lr = lr;
  p.cbow = cbow;
  p.compute_loss = true;
  p.loss = &loss;
  p.bad_index = &bad;
  negative_sampling_update_cuda(p, nullptr);
  return {loss, bad};
}

// Per-pair skip-gram loss [b] and its per-example gradients d_h [b, D], d_u [b, 1 + k, D]
// for an upstream gradient dloss [b].
std::vector<at::Tensor> sgns_loss(const at::Tensor& w_in, const at::Tensor& w_out, const at::Tensor& centers,
                                  const at::Tensor& contexts, const at::Tensor& negatives, const at::Tensor& dloss) {
  const int64_t b = centers.size(0), k = negatives.size(1), D = w_in.size(1);
  at::Tensor loss = at::empty({b}, w_in.options()), d_h = at::empty({b, D}, w_in.options());
  at::Tensor d_u = at::empty({b, 1 + k, D}, w_in.options());
  int64_t bad = 0;
  SgnsLossParams p{};
  p.w_in = w_in.data_ptr();
  p.w_in_stride = w_in.stride(0);
  p.w_out = w_out.data_ptr();
  p.w_out_stride = w_out.stride(0);
  p.dtype = dtype_of(w_in);
  p.vocab = w_in.size(0);
  p.dim = D;
  p.centers = centers.data_ptr<int64_t>();
  p.contexts = contexts.data_ptr<int64_t>();
  p.negatives = negatives.data_ptr<int64_t>();
  p.b = b;
  p.k = k;
  p.loss = loss.data_ptr();
  p.dloss = dloss.data_ptr();
  p.d_h = d_h.data_ptr();
  p.d_u = d_u.data_ptr();
  p.bad_index = &bad;
  sgns_loss_cuda(p, nullptr);
  TORCH_CHECK(bad == -1, "sgns_loss: bad index ", bad);
  return {loss, d_h, d_u};
}

void set_compute_capability(int major, int minor) {
  emu::g_cc_major = major;
  emu::g_cc_minor = minor;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_compute_capability", &set_compute_capability);
  m.def("attention_fwd", &attention_fwd);
  m.def("attention_bwd", &attention_bwd);
  m.def("softmax_fwd", &softmax_fwd);
  m.def("softmax_bwd", &softmax_bwd);
  m.def("lstm_fwd", &lstm_fwd);
  m.def("lstm_bwd", &lstm_bwd);
  m.def("lstm_seq_persistent_fwd", &lstm_seq_persistent_fwd);
  m.def("lstm_seq_persistent_bwd", &lstm_seq_persistent_bwd);
  m.def("negsamp_update", &negsamp_update);
  m.def("sgns_loss", &sgns_loss);
}
