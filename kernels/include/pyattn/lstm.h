// lstm: the fused pointwise part of one LSTM step, forward and backward.
//
// The GEMMs (x·W_ihᵀ, h·W_hhᵀ, the projection and the weight gradients) are done by the
// caller (csrc/lstm.cpp, through ATen); these kernels take the pre-activation gates and
// do everything elementwise in one pass, in torch's gate order i, f, g, o:
//
//   forward   i, f, o = sigmoid(z_i, z_f, z_o); g = tanh(z_g)
//             c' = f·c + i·g;  h = o·tanh(c')
//   backward  dct = dc' + dh·o·(1 - tanh²c')
//             dz_i = dct·g·i(1-i), dz_f = dct·c·f(1-f), dz_g = dct·i(1-g²), dz_o = dh·tanh(c')·o(1-o)
//             dc = dct·f
//
// Every tensor is a matrix of `n` rows (batch) with an element row stride and unit
// column stride; H = hidden. Accumulation is fp32 (fp64 for fp64 tensors). The SIMD
// fp32 sigmoid/tanh are exp2-based (cpu/fast_exp.h; relative error < 5·2^-24); the
// generic CPU path and CUDA use the scalar forms of pyattn/lstm_math.h. Any n, H.
// Semantics are pinned by pyattn/reference/lstm.py (lstm_pointwise_fwd/_bwd).
#pragma once

#include "pyattn/common.h"

namespace pyattn {

struct LstmFwdParams {
  const void* gates;   // [n, 4H] pre-activations z, without the biases below
  int64_t gates_stride;
  const void* bias[2]; // [4H] each, or nullptr: added to every row of z (b_ih, b_hh)
  void* act;           // [n, 4H] out: the activated gates (i, f, g, o), saved for backward;
                       // may alias gates exactly (in place)
  int64_t act_stride;
  const void* c;       // [n, H] previous cell state
  int64_t c_stride;
  void* c_out;         // [n, H] out: c'; may alias c exactly
  int64_t c_out_stride;
  void* h_out;         // [n, H] out: o·tanh(c')
  int64_t h_out_stride;
  DType dtype;         // of every tensor above
  int64_t n, hidden;
};

struct LstmBwdParams {
  const void* dh;      // [n, H] gradient reaching h (after the projection's backward)
  int64_t dh_stride;
  const void* dh2;     // [n, H] or nullptr: a second term added to dh (e.g. dy + the recurrent dh)
  int64_t dh2_stride;
  const void* dc;      // [n, H] gradient reaching c' from later steps, or nullptr (= 0)
  int64_t dc_stride;
  const void* act;     // [n, 4H] the forward's activated gates
  int64_t act_stride;
  const void* c;       // [n, H] the forward's previous cell state
  int64_t c_stride;
  const void* c_new;   // [n, H] the forward's c'
  int64_t c_new_stride;
  void* dgates;        // [n, 4H] out: gradient of the pre-activation gates
  int64_t dgates_stride;
  void* dc_out;        // [n, H] out: gradient of c; may alias dc exactly
  int64_t dc_out_stride;
  DType dtype;
  int64_t n, hidden;
};

void lstm_fwd_cpu(const LstmFwdParams& p, ParallelFor parallel_for);
void lstm_bwd_cpu(const LstmBwdParams& p, ParallelFor parallel_for);

// Launch on `stream`; the caller checks the launch (cudaGetLastError) afterwards.
void lstm_fwd_cuda(const LstmFwdParams& p, cudaStream stream);
void lstm_bwd_cuda(const LstmBwdParams& p, cudaStream stream);

}  // namespace pyattn
