// Tensors to the attention kernels' params structs (pyattn/attention.h): one builder per
// op, used by csrc/attention.cpp after its checks and by the emulated CUDA tests
// (tests/cuda_emulation/bindings.cpp), so both run the same filling. Builders check
// nothing: tensors come checked, with last-dim stride 1 and 4 dims [batch, heads, rows, ·],
// and must stay alive until the kernel has run.
#pragma once

#include <ATen/Parallel.h>
#include <torch/types.h>

#include "params.h"
#include "pyattn/attention.h"

namespace pyattn {

// Which keys each query sees, resolved from an op's arguments (rules in pyattn/attention.h).
struct AttentionMasks {
  // Undefined, or [batch, heads_q, lq, lk] (broadcast strides allowed): bool or uint8
  // (nonzero = attend, MaskKind::keep), or q's dtype (added to the scores).
  at::Tensor mask;
  at::Tensor key_lengths;       // undefined, or int64 [batch], contiguous
  int64_t diag_offset = 0;      // 0: causal top-left aligned; lk - lq: bottom-right
  int64_t window_left = -1;     // -1: unbounded
  int64_t window_right = -1;    // -1: unbounded; 0 for causal
};

// Dropout on the probabilities as the kernels draw it (pyattn/dropout_math.h).
struct DropoutArgs {
  bool on = false;
  uint64_t key[2] = {0, 0};  // the call's key, drawn from a torch.Generator
  uint32_t threshold = 0;    // keep an element iff its bits >= threshold
  double scale = 1.0;        // a kept element's factor: 1 / (1 - p), 0 for p = 1
};

// The shape, masks and dropout shared by every attention params struct.
inline AttentionShape make_attention_shape(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           double scale, const AttentionMasks& masks, const DropoutArgs& dropout) {
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
  if (masks.mask.defined()) {
    const at::ScalarType mt = masks.mask.scalar_type();
    s.mask = masks.mask.data_ptr();
    set_strides(s.mask_stride, masks.mask);
    s.mask_kind = mt == at::kBool || mt == at::kByte ? MaskKind::keep : MaskKind::additive;
  }
  s.key_lengths = masks.key_lengths.defined() ? masks.key_lengths.data_ptr<int64_t>() : nullptr;
  s.diag_offset = masks.diag_offset;
  s.window_left = masks.window_left;
  s.window_right = masks.window_right;
  s.num_threads = at::get_num_threads();
  s.dropout = dropout.on;
  s.dropout_key[0] = dropout.key[0];
  s.dropout_key[1] = dropout.key[1];
  s.dropout_threshold = dropout.threshold;
  s.dropout_scale = dropout.scale;
  return s;
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

// out [batch, heads_q, lq, dv] and lse [batch, heads_q, lq] (contiguous) are written.
inline AttentionFwdParams make_attention_fwd_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const at::Tensor& out, const at::Tensor& lse, double scale,
                                                    const AttentionMasks& masks, const DropoutArgs& dropout) {
  AttentionFwdParams p{};
  p.s = make_attention_shape(q, k, v, scale, masks, dropout);
  set_qkv_out(&p, q, k, v, out);
  p.lse = lse.data_ptr();
  return p;
}

// dq, dk, dv (q's, k's, v's shapes) are written; dlse undefined or lse's shape; dmask
// undefined, or [batch, heads_q, lq, lk] zeros into which dL/dscores is written.
inline AttentionBwdParams make_attention_bwd_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const at::Tensor& out, const at::Tensor& dout,
                                                    const at::Tensor& lse, const at::Tensor& dlse,
                                                    const at::Tensor& dq, const at::Tensor& dk, const at::Tensor& dv,
                                                    const at::Tensor& dmask, double scale,
                                                    const AttentionMasks& masks, const DropoutArgs& dropout) {
  AttentionBwdParams p{};
  p.s = make_attention_shape(q, k, v, scale, masks, dropout);
  set_qkv_out(&p, q, k, v, out);
  p.dout = dout.data_ptr();
  p.lse = lse.data_ptr();
  p.dlse = dlse.defined() ? dlse.data_ptr() : nullptr;
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  p.dmask = dmask.defined() ? dmask.data_ptr() : nullptr;
  set_strides(p.dout_stride, dout);
  set_strides(p.dq_stride, dq);
  set_strides(p.dk_stride, dk);
  set_strides(p.dv_stride, dv);
  return p;
}

// weights: [batch, heads_q, lq, lk], or [batch, lq, lk] when average_heads; masks: the
// mask only (no key lengths or window).
inline AttentionWeightsParams make_attention_weights_params(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v, const at::Tensor& out,
                                                            const at::Tensor& weights, bool average_heads,
                                                            double scale, const AttentionMasks& masks) {
  AttentionWeightsParams p{};
  p.s = make_attention_shape(q, k, v, scale, masks, DropoutArgs{});
  set_qkv_out(&p, q, k, v, out);
  p.weights = weights.data_ptr();
  p.average_heads = average_heads;
  return p;
}

// y = x .* (the keep mask of dropout) * dropout.scale; x, y [batch, heads, lq, lk], y contiguous.
inline AttentionDropoutParams make_attention_dropout_params(const at::Tensor& x, const at::Tensor& y,
                                                            const DropoutArgs& dropout) {
  AttentionDropoutParams p{};
  p.x = x.data_ptr();
  set_strides(p.x_stride, x);
  p.y = y.data_ptr();
  p.key[0] = dropout.key[0];
  p.key[1] = dropout.key[1];
  p.threshold = dropout.threshold;
  p.scale = dropout.scale;
  p.dtype = dtype_of(x);
  p.batch = x.size(0);
  p.heads = x.size(1);
  p.lq = x.size(2);
  p.lk = x.size(3);
  return p;
}

}  // namespace pyattn
