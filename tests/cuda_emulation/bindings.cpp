// Torch extension over the emulated CUDA kernels (emulate.h): fills each op's params with
// the glue's own builders (csrc/<op>_params.h) from CPU tensors, and calls the kernels'
// own CUDA entry points. Used by tests/test_cuda_emulated.py.
#include <torch/extension.h>

#include "attention_params.h"
#include "emulate.h"
#include "lstm_params.h"
#include "negative_sampling_params.h"
#include "pyattn/attention.h"
#include "pyattn/lstm.h"
#include "pyattn/negative_sampling.h"
#include "pyattn/scaled_masked_softmax.h"
#include "scaled_masked_softmax_params.h"

namespace {

using namespace pyattn;

at::Tensor defined_if_any(const at::Tensor& t) { return t.numel() ? t : at::Tensor(); }

// The masks as test_cuda_emulated.py resolves them: mask empty, uint8 (nonzero = attend)
// or q's dtype (additive), [B, Hq, Lq, Lk] with broadcast strides; key_lengths empty or
// int64 [B]; the causal rule already folded into the window bounds.
AttentionMasks masks_of(const at::Tensor& mask, int64_t diag_offset, int64_t window_left, int64_t window_right,
                        const at::Tensor& key_lengths) {
  AttentionMasks m;
  m.mask = defined_if_any(mask);
  m.key_lengths = defined_if_any(key_lengths);
  m.diag_offset = diag_offset;
  m.window_left = window_left;
  m.window_right = window_right;
  return m;
}

// dropout: empty, or {key0, key1, threshold}; scale 1 / (1 - p) for threshold's p.
DropoutArgs dropout_of(const std::vector<int64_t>& dropout, double scale) {
  DropoutArgs d;
  if (dropout.empty()) return d;
  d.on = true;
  d.key[0] = uint64_t(dropout[0]);
  d.key[1] = uint64_t(dropout[1]);
  d.threshold = uint32_t(dropout[2]);
  d.scale = scale;
  return d;
}

at::Tensor lse_like(const at::Tensor& q) {
  return at::empty({q.size(0), q.size(1), q.size(2)},
                   q.options().dtype(q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
}

std::vector<at::Tensor> attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& mask, double scale, int64_t diag_offset, int64_t window_left,
                                      int64_t window_right, const at::Tensor& key_lengths,
                                      const std::vector<int64_t>& dropout, double dropout_scale) {
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  at::Tensor lse = lse_like(q);
  attention_fwd_cuda(make_attention_fwd_params(q, k, v, out, lse, scale,
                                               masks_of(mask, diag_offset, window_left, window_right, key_lengths),
                                               dropout_of(dropout, dropout_scale)),
                     nullptr);
  return {out, lse};
}

// Returns dq, dk, dv and, when want_dmask, dL/dz [B, Hq, Lq, Lk] (else an empty tensor).
std::vector<at::Tensor> attention_bwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& out, const at::Tensor& dout, const at::Tensor& lse,
                                      const at::Tensor& mask, double scale, int64_t diag_offset, int64_t window_left,
                                      int64_t window_right, const at::Tensor& key_lengths,
                                      const std::vector<int64_t>& dropout, double dropout_scale, bool want_dmask) {
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  at::Tensor dmask = want_dmask ? at::zeros({q.size(0), q.size(1), q.size(2), k.size(2)}, q.options())
                                : at::empty({0}, q.options());
  AttentionBwdParams p = make_attention_bwd_params(q, k, v, out, dout, lse, at::Tensor(), dq, dk, dv,
                                                   want_dmask ? dmask : at::Tensor(), scale,
                                                   masks_of(mask, diag_offset, window_left, window_right, key_lengths),
                                                   dropout_of(dropout, dropout_scale));
  // NaN until written: a D row the tensor-core backward reads but never wrote shows.
  at::Tensor row_delta = at::full({q.size(0), q.size(1), q.size(2)}, NAN, q.options().dtype(at::kFloat));
  p.row_delta = row_delta.data_ptr<float>();
  attention_bwd_cuda(p, nullptr);
  return {dq, dk, dv, dmask};
}

// x, mask (empty, bool: True = masked out, or x's dtype: additive): [B, H, Sq, Sk], mask
// with broadcast strides allowed.
at::Tensor softmax_fwd(const at::Tensor& x, const at::Tensor& mask, double scale, bool causal) {
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  const at::Tensor m = mask.numel() ? mask.expand(x.sizes()) : at::Tensor();
  const auto p = make_scaled_masked_softmax_fwd_params(x, y, m, scale, causal);
  TORCH_CHECK(p, "softmax_fwd: x's leading dims do not fold");
  scaled_masked_softmax_fwd_cuda(*p, nullptr);
  return y;
}

at::Tensor softmax_bwd(const at::Tensor& y, const at::Tensor& dy, double scale) {
  at::Tensor dx = at::empty_like(y, at::MemoryFormat::Contiguous);
  const auto p = make_scaled_masked_softmax_bwd_params(y, dy, dx, scale);
  TORCH_CHECK(p, "softmax_bwd: y's leading dims do not fold");
  scaled_masked_softmax_bwd_cuda(*p, nullptr);
  return dx;
}

// The pointwise LSTM step: gates [n, 4H] (no bias), c [n, H], b_ih / b_hh [4H] or empty.
// Returns (h, c', act).
std::vector<at::Tensor> lstm_fwd(const at::Tensor& gates, const at::Tensor& c, const at::Tensor& b_ih,
                                 const at::Tensor& b_hh) {
  const int64_t n = c.size(0), H = c.size(1);
  at::Tensor act = at::empty({n, 4 * H}, gates.options()), c_out = at::empty_like(c), h = at::empty_like(c);
  lstm_fwd_cuda(make_lstm_fwd_params(gates, act, c, c_out, h, defined_if_any(b_ih), defined_if_any(b_hh)), nullptr);
  return {h, c_out, act};
}

// dh, dc (or empty) [n, H]; act [n, 4H], c, c_new [n, H]. Returns (dgates, dc_prev).
std::vector<at::Tensor> lstm_bwd(const at::Tensor& dh, const at::Tensor& dc, const at::Tensor& act,
                                 const at::Tensor& c, const at::Tensor& c_new) {
  const int64_t n = c.size(0), H = c.size(1);
  at::Tensor dgates = at::empty({n, 4 * H}, c.options()), dc_out = at::empty_like(c);
  lstm_bwd_cuda(make_lstm_bwd_params(dh, at::Tensor(), defined_if_any(dc), act, c, c_new, dgates, dc_out), nullptr);
  return {dgates, dc_out};
}

// The persistent sequence kernels. steps: int64 [nsteps, 2] rows of (offset, rows), in
// processing order, or empty for a dense sequence of `nsteps` steps (reverse: last
// first); act_in [total, 4H] holds x·W_ihᵀ; b_ih / b_hh [4H] or empty; tf32: fp32 may
// take the tensor-core forward. Returns (y, c_all, act, h_n, c_n), or nothing when the
// kernels declined the shape.
std::vector<at::Tensor> lstm_seq_persistent_fwd(const at::Tensor& act_in, const at::Tensor& w_hh,
                                                const at::Tensor& b_ih, const at::Tensor& b_hh, const at::Tensor& h0,
                                                const at::Tensor& c0, const at::Tensor& steps, int64_t nsteps,
                                                bool reverse, bool tf32) {
  const int64_t total = act_in.size(0), H = w_hh.size(1);
  at::Tensor act = act_in.clone(), y = at::empty({total, H}, act.options()), c_all = at::empty_like(y);
  at::Tensor h_n = at::empty_like(h0), c_n = at::empty_like(c0);
  at::Tensor barrier = at::zeros({1}, at::kInt);
  LstmSeqCudaFwdParams p =
      make_lstm_seq_cuda_fwd_params(act, w_hh, defined_if_any(b_ih), defined_if_any(b_hh), h0, c0, y, c_all, h_n,
                                    c_n, defined_if_any(steps), nsteps, reverse, barrier);
  p.tf32 = tf32;
  if (!lstm_seq_fwd_persistent_cuda(p, nullptr)) return {};
  return {y, c_all, act, h_n, c_n};
}

// dy [total, H] or empty; dh_n, dc_n [n0, H]; the forward's act, c_all; tf32 as in the
// forward. Returns (dgates, db, dh0, dc0), or nothing when the kernels declined the shape.
std::vector<at::Tensor> lstm_seq_persistent_bwd(const at::Tensor& dy, const at::Tensor& dh_n, const at::Tensor& dc_n,
                                                const at::Tensor& act, const at::Tensor& c_all, const at::Tensor& c0,
                                                const at::Tensor& w_hh, const at::Tensor& steps, int64_t nsteps,
                                                bool reverse, bool tf32) {
  const int64_t H = w_hh.size(1);
  at::Tensor dgates = at::empty_like(act), db = at::zeros({4 * H}, act.options());
  at::Tensor dh = dh_n.clone(), dc = dc_n.clone();
  at::Tensor barrier = at::zeros({1}, at::kInt);
  LstmSeqCudaBwdParams p = make_lstm_seq_cuda_bwd_params(w_hh, defined_if_any(dy), act, c_all, c0, dgates, db, dh, dc,
                                                         defined_if_any(steps), nsteps, reverse, barrier);
  p.tf32 = tf32;
  if (!lstm_seq_bwd_persistent_cuda(p, nullptr)) return {};
  return {dgates, db, dh, dc};
}

// Skip-gram (contexts [n, slots]; window_batch: its window batch) or CBOW update in place
// of w_in, w_out [V, D] (fp32 or fp64), with explicit negatives (skip-gram [n, slots, k],
// CBOW and window batch [n, k]) or, when `negatives` is empty, k negatives drawn with
// `seed` from `table` (as the op does). max_streams: 0 lets the kernel choose. Returns
// (summed loss, bad index or -1).
std::tuple<double, int64_t> negsamp_update(at::Tensor w_in, at::Tensor w_out, const at::Tensor& centers,
                                           const at::Tensor& contexts, const at::Tensor& negatives,
                                           const at::Tensor& table, int64_t k, double lr, int64_t seed, bool cbow,
                                           int64_t max_streams, bool window_batch) {
  at::Tensor loss = at::zeros({}, at::kDouble), bad = at::zeros({1}, at::kLong);
  NegSamplingUpdateParams p = make_negative_sampling_update_params(
      w_in, w_out, centers, contexts, negatives.numel() ? negatives : at::Tensor(),
      table.numel() ? table : at::Tensor(), k, uint64_t(seed), lr, cbow, true, loss, bad);
  p.max_streams = max_streams;
  p.window_batch = window_batch;
  negative_sampling_update_cuda(p, nullptr);
  return {loss.item<double>(), bad.item<int64_t>()};
}

// The same update with the windows read from the token stream (tokens, sentence, radius
// [N] int64; centers tokens[start:stop]), as sgns_stream_update_ / cbow_stream_update_.
std::tuple<double, int64_t> negsamp_stream_update(at::Tensor w_in, at::Tensor w_out, const at::Tensor& tokens,
                                                  const at::Tensor& sentence, const at::Tensor& radius,
                                                  int64_t start, int64_t stop, int64_t window,
                                                  const at::Tensor& negatives, const at::Tensor& table, int64_t k,
                                                  double lr, int64_t seed, bool cbow, int64_t max_streams,
                                                  bool window_batch) {
  at::Tensor loss = at::zeros({}, at::kDouble), bad = at::zeros({1}, at::kLong);
  NegSamplingUpdateParams p = make_negative_sampling_update_params(
      w_in, w_out, tokens, at::Tensor(), negatives.numel() ? negatives : at::Tensor(),
      table.numel() ? table : at::Tensor(), k, uint64_t(seed), lr, cbow, true, loss, bad);
  set_token_stream(&p, tokens, sentence, radius, start, stop, window);
  p.max_streams = max_streams;
  p.window_batch = window_batch;
  negative_sampling_update_cuda(p, nullptr);
  return {loss.item<double>(), bad.item<int64_t>()};
}

// Per-pair skip-gram loss [b] and its per-example gradients d_h [b, D], d_u [b, 1 + k, D]
// for an upstream gradient dloss [b].
std::vector<at::Tensor> sgns_loss(const at::Tensor& w_in, const at::Tensor& w_out, const at::Tensor& centers,
                                  const at::Tensor& contexts, const at::Tensor& negatives, const at::Tensor& dloss) {
  const int64_t b = centers.size(0), k = negatives.size(1), D = w_in.size(1);
  at::Tensor loss = at::empty({b}, w_in.options()), d_h = at::empty({b, D}, w_in.options());
  at::Tensor d_u = at::empty({b, 1 + k, D}, w_in.options());
  at::Tensor bad = at::full({1}, kSgnsLossNoBadId, at::kLong);
  sgns_loss_cuda(make_sgns_loss_params(w_in, w_out, centers, contexts, negatives, loss, dloss, 0.0, d_h, d_u, bad),
                 nullptr);
  TORCH_CHECK(bad.item<int64_t>() == kSgnsLossNoBadId, "sgns_loss: bad index ", bad.item<int64_t>());
  return {loss, d_h, d_u};
}

void set_compute_capability(int major, int minor) {
  emu::g_cc_major = major;
  emu::g_cc_minor = minor;
}

void set_sm_count(int sms) { emu::g_sm_count = sms; }

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_compute_capability", &set_compute_capability);
  m.def("set_sm_count", &set_sm_count);
  m.def("attention_fwd", &attention_fwd);
  m.def("attention_bwd", &attention_bwd);
  m.def("softmax_fwd", &softmax_fwd);
  m.def("softmax_bwd", &softmax_bwd);
  m.def("lstm_fwd", &lstm_fwd);
  m.def("lstm_bwd", &lstm_bwd);
  m.def("lstm_seq_persistent_fwd", &lstm_seq_persistent_fwd);
  m.def("lstm_seq_persistent_bwd", &lstm_seq_persistent_bwd);
  m.def("negsamp_update", &negsamp_update);
  m.def("negsamp_stream_update", &negsamp_stream_update);
  m.def("sgns_loss", &sgns_loss);
}
