// attention: out = softmax(scale * q k^T + mask) v, fused (flash-style: key blocks with an
// online softmax; the [lq, lk] score matrix is never materialised), and its backward.
//
// Tensors are 4-d with element strides for (batch, head, row); the last dim has stride 1:
//   q    [batch, heads_q,  lq, d]        out  [batch, heads_q, lq, dv]
//   k    [batch, heads_kv, lk, d]        lse  [batch, heads_q, lq], contiguous, fp32 (fp64 for fp64)
//   v    [batch, heads_kv, lk, dv]
// heads_kv divides heads_q; query head h reads key/value head h / (heads_q / heads_kv).
// A stride may be 0 (broadcast), except for the tensors a kernel writes.
//
// Semantics (pinned by pyattn/reference/attention.py): z[i, j] = scale * q_i . k_j (+ mask),
// and key j is dropped (z = -inf) when any of these rules it out:
//   mask (keep)      mask[i, j] == 0   (MaskKind::keep, nonzero = attend: the SDPA
//                                       convention, unlike scaled_masked_softmax's drop)
//   window           j < i + diag_offset - window_left  (window_left >= 0)
//                    j > i + diag_offset + window_right (window_right >= 0; causal is 0)
//   key_lengths      j >= key_lengths[b]
// An additive mask (the dtype of q) is added to z; values below about -2.3e38 act as -inf
// (the kernels fold log2(e) into the scores).
// lse[i] = log sum_j exp(z[i, j]) (natural log); out_i = sum_j exp(z[i, j] - lse[i]) v_j.
// A row with no key left gives out = 0, lse = -inf and zero gradients.
// Dropout (when s.dropout): out_i = scale_p * sum_j Z_ij exp(z[i, j] - lse[i]) v_j with the
// keep mask Z of pyattn/dropout_math.h and scale_p = 1 / (1 - p); lse is the un-dropped one.
// Accumulation is fp32 (fp64 for fp64); f16/bf16 inputs are converted on load.
#pragma once

#include "pyattn/common.h"
#include "pyattn/dropout_math.h"

namespace pyattn {

struct AttentionShape {
  DType dtype;
  int64_t batch, heads_q, heads_kv, lq, lk, d, dv;
  double scale;
  const void* mask;            // [batch, heads_q, lq, lk] (broadcast strides allowed) or nullptr
  int64_t mask_stride[3];      // batch, head, query row; key stride is 1
  MaskKind mask_kind;          // none; keep: uint8, nonzero = attend; or additive: dtype
  const int64_t* key_lengths;  // [batch] or nullptr
  int64_t diag_offset;         // 0: top-left aligned; lk - lq: bottom-right aligned
  int64_t window_left;         // < 0: unbounded
  int64_t window_right;        // < 0: unbounded; 0 for causal
  int num_threads;             // threads the ParallelFor may use (sizes the work split)
  // Dropout on the probabilities (pyattn/dropout_math.h); the rest is unused when false.
  bool dropout;
  uint64_t dropout_key[2];     // the call's key, drawn from a torch.Generator
  uint32_t dropout_threshold;  // keep (b, h, i, j) iff bits >= threshold
  double dropout_scale;        // a kept probability's factor: 1 / (1 - p), 0 for p = 1
};

struct AttentionFwdParams {
  AttentionShape s;
  const void* q; int64_t q_stride[3];
  const void* k; int64_t k_stride[3];
  const void* v; int64_t v_stride[3];
  void* out; int64_t out_stride[3];  // overwritten; must not alias the inputs
  void* lse;                         // [batch, heads_q, lq] contiguous; overwritten
};

struct AttentionBwdParams {
  AttentionShape s;
  const void* q; int64_t q_stride[3];
  const void* k; int64_t k_stride[3];
  const void* v; int64_t v_stride[3];
  const void* out; int64_t out_stride[3];    // the forward's output
  const void* dout; int64_t dout_stride[3];  // [batch, heads_q, lq, dv]
  const void* lse;                           // the forward's lse, contiguous
  const void* dlse;                          // nullptr, or dL/dlse, contiguous, lse's dtype: adds dlse_i * P_ij
                                             // to dL/dz_ij (d lse_i / d z_ij = P_ij)
  void* dq; int64_t dq_stride[3];            // all grads overwritten, no aliasing
  void* dk; int64_t dk_stride[3];            // [batch, heads_kv, lk, d]
  void* dv; int64_t dv_stride[3];            // [batch, heads_kv, lk, dv]
  void* dmask;  // nullptr, or [batch, heads_q, lq, lk] contiguous, dtype, zero-filled by the
                // caller: dL/dz at every attended (i, j) is written (additive-mask grad)
  float* row_delta;  // CUDA: [batch, heads_q, lq] fp32 scratch the tensor-core backward
                     // overwrites (each row's D, computed once); nullptr: it is not used
};

// y = x * Z * scale_p with the mask the fused kernels use for the same key and threshold:
// the attention weights that nn.MultiheadAttention returns, dropped as its output was.
// Linear and diagonal, so it is its own backward.
struct AttentionDropoutParams {
  DType dtype;
  int64_t batch, heads, lq, lk;
  uint64_t key[2];
  uint32_t threshold;
  double scale;
  const void* x; int64_t x_stride[3];  // [batch, heads, lq, lk], key stride 1
  void* y;                             // [batch, heads, lq, lk] contiguous; overwritten, no aliasing
};

// Row r (batch, head and query flattened) of attention_dropout: the two halves of its
// keep mask's hash key and where the row starts in x (strided) and in y (contiguous).
// The CPU and CUDA kernels share it, so both draw the same mask.
struct AttentionDropoutRow {
  uint32_t key_lo, key_hi;
  int64_t x_offset, y_offset;  // elements
};
PYATTN_HD AttentionDropoutRow attention_dropout_row(const AttentionDropoutParams& p, int64_t r) {
  const int64_t i = r % p.lq, bh = r / p.lq, h = bh % p.heads, b = bh / p.heads;
  const uint64_t rk = dropout_math::row_key(dropout_math::head_key(p.key[0], p.key[1], uint64_t(b), uint64_t(h)),
                                            uint64_t(i));
  return {uint32_t(rk), uint32_t(rk >> 32), b * p.x_stride[0] + h * p.x_stride[1] + i * p.x_stride[2], r * p.lk};
}

// Attention that also returns the weights, for inference with need_weights
// (nn.MultiheadAttention): P = softmax(scale * q k^T + mask) row by row, out = P v, and
//   weights [batch, heads_q, lq, lk] = P               (average_heads false)
//   weights [batch, lq, lk] = mean over query heads of P (average_heads true)
// without an autograd backward. s: mask only (no key_lengths, window or dropout: the
// shape's other fields must say so). A row with no key left gives P = 0 and out = 0.
// Scratch: K' = k * scale * log2(e) transposed, [batch * heads_kv, d, lk rounded up to
// the vector width], allocated by the kernel (O(L d), like k).
struct AttentionWeightsParams {
  AttentionShape s;
  const void* q; int64_t q_stride[3];
  const void* k; int64_t k_stride[3];
  const void* v; int64_t v_stride[3];
  void* out; int64_t out_stride[3];  // overwritten; must not alias the inputs
  void* weights;                     // contiguous, dtype; overwritten
  bool average_heads;
};

void attention_fwd_cpu(const AttentionFwdParams& p, ParallelFor parallel_for);
void attention_weights_cpu(const AttentionWeightsParams& p, ParallelFor parallel_for);
void attention_bwd_cpu(const AttentionBwdParams& p, ParallelFor parallel_for);
void attention_dropout_cpu(const AttentionDropoutParams& p, ParallelFor parallel_for);

// CUDA: kernels/cuda/attention.cu (version 1: one thread per row; every dtype) and
// kernels/cuda/attention_mma_fwd.cu and attention_mma_bwd.cu (fp16 / bf16 forward and
// backward on tensor cores with mma.sync, sm_80+, d and dv up to 256 forward, 128
// backward), chosen inside attention_fwd_cuda / attention_bwd_cuda.
// Envelope, checked by csrc/: head dims d, dv <= kAttentionCudaMaxHeadDim; batch and
// heads <= 65535 (grid y and z). Launch on `stream`; the caller checks the launch.
constexpr int kAttentionCudaMaxHeadDim = 256;
void attention_fwd_cuda(const AttentionFwdParams& p, cudaStream stream);
void attention_bwd_cuda(const AttentionBwdParams& p, cudaStream stream);
void attention_dropout_cuda(const AttentionDropoutParams& p, cudaStream stream);

}  // namespace pyattn
