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

// ---- fp32 CPU: the recurrent loop of a whole sequence (or one cell step) in one call.
// The recurrent weights come packed for kernels/cpu/packed_gemm.h (lstm_pack_* below);
// steps run in order, each split into tasks of 32 hidden units that compute those units'
// four gate columns (the GEMM) and then their pointwise update while the gates are in
// cache. Threads: `threads` workers share a step's tasks; step s+1 starts once step s
// is done (a spin wait on a counter: one sync per step, no fork per step).

// One step: rows [0, n) of the batch, starting at row `off` of act / c_all / y.
struct LstmStep {
  int64_t off, n;
};

struct LstmSeqFwdParams {
  const float* x;       // [total, C] (a cell: [n0, C]) or nullptr. Given, each step's input
  int64_t x_stride;     //   product is part of its packed GEMM (K = C + H) and act is
  int64_t in_features;  //   overwritten; else act holds x·W_ihᵀ on entry (K = H) and is
                        //   accumulated into
  const float* w_packed;  // lstm_pack_gates(): [W_ih | ] W_hh, gates interleaved per 32 units
  const float* bias;      // [4H] or nullptr: b_ih + b_hh, added in the GEMM
  float* act;             // [total, 4H] out: activated gates (i, f, g, o)
  float* c_all;           // [total, H] out: c of every step
  // Inference (nothing saved for backward): act is one step's scratch [max rows, 4H] (with
  // x given; without, act must hold every step's input product as above) and c_all two
  // steps' [2 * max rows, H], alternating, so both stay in the cache.
  bool scratch;
  float* y;               // [total, H] out: h of every step
  const float* h0;        // [n0, H], row stride h0_stride: state before the first step
  const float* c0;        //   (rows that start later in a packed reverse sequence too)
  int64_t h0_stride, c0_stride;
  float* h_n;             // [n0, H] or nullptr: the final state of each row (the step where
  float* c_n;             //   the row ends); contiguous
  const LstmStep* steps;  // processing order; rows per step may grow or shrink by any amount
  int64_t nsteps, hidden;
  int threads;
};

struct LstmSeqBwdParams {
  const float* w_packed;  // lstm_pack_hh_t(): W_hhᵀ packed, K = 4H, columns H
  const float* dy;        // [total, H] or nullptr (= 0): gradient reaching y
  const float* act;       // [total, 4H] the forward's activated gates
  const float* c_all;     // [total, H] the forward's c; a step's previous c is the previous
  const float* c0;        //   step's row, or row r of c0 [n0, H] (row stride c0_stride) for a
  int64_t c0_stride;      //   row that starts at that step, as in the forward
  float* dgates;          // [total, 4H] out
  float* dbias;           // [4H] or nullptr: accumulated (+=) with the sum of dgates' rows
  float* dh_state;        // [n0, H] in: dh_n; out: dh0 (rows as they start), contiguous
  float* dc_state;        // [n0, H] in: dc_n; out: dc0
  const LstmStep* steps;  // the forward's processing order; run backwards
  int64_t nsteps, hidden;
  int threads;
};

// Packed sizes in floats; pack into `out` (the weights' element strides given).
int64_t lstm_packed_gates_size(int64_t in_features, int64_t hidden);  // in_features 0: W_hh only
void lstm_pack_gates_cpu(const float* w_ih, int64_t ih_s0, int64_t ih_s1, int64_t in_features, const float* w_hh,
                         int64_t hh_s0, int64_t hh_s1, int64_t hidden, float* out, ParallelFor parallel_for);
int64_t lstm_packed_hh_t_size(int64_t hidden);
void lstm_pack_hh_t_cpu(const float* w_hh, int64_t s0, int64_t s1, int64_t hidden, float* out,
                        ParallelFor parallel_for);

void lstm_seq_fwd_cpu(const LstmSeqFwdParams& p, ParallelFor parallel_for);
void lstm_seq_bwd_cpu(const LstmSeqBwdParams& p, ParallelFor parallel_for);

void lstm_fwd_cpu(const LstmFwdParams& p, ParallelFor parallel_for);
void lstm_bwd_cpu(const LstmBwdParams& p, ParallelFor parallel_for);

// ---- CUDA: the recurrent loop of a whole sequence in one persistent kernel. Each
// block keeps a slice of W_hh in shared memory for the whole sequence; the blocks meet
// at a grid barrier after each step. Same steps and semantics as LstmSeqFwdParams /
// LstmSeqBwdParams, without a projection; every tensor contiguous, of `dtype`, on the
// device (steps and barrier too). The launch's host side does not wait for the device
// (no copies), so it can be captured.
//   batch <= kLstmPersistentMaxBatch: CUDA-core kernels, forward and backward, every
//     dtype (cuda/lstm_persistent.cu);
//   up to kLstmPersistentMmaMaxBatch: tensor-core kernels (mma.sync), forward and
//     backward, fp16 and bf16, and fp32 as TF32 when `tf32` is set
//     (cuda/lstm_persistent_mma.cu); compute capability 8.0 or newer, H·sizeof(dtype) a
//     multiple of 16.
constexpr int kLstmPersistentMaxBatch = 8;       // rows per step (n0) of the CUDA-core kernels
constexpr int kLstmPersistentMmaMaxBatch = 256;  // of the tensor-core kernels

struct LstmSeqCudaFwdParams {
  const void* w_hh;       // [4H, H]
  const void* bias[2];    // [4H] each, or nullptr: b_ih, b_hh
  void* act;              // [total, 4H]: x·W_ihᵀ on entry, the activated gates on exit
  void* c_all;            // [total, H] out: c of every step
  void* y;                // [total, H] out: h of every step
  const void* h0;         // [n0, H] state before the first step (and of rows that start
  const void* c0;         //   later in a packed reverse sequence)
  void* h_n;              // [n0, H] out: the final state of each row
  void* c_n;
  const LstmStep* steps;  // processing order, on the device; or nullptr for a dense
  bool reverse;           //   sequence: `batch` rows per step, time t = s (reverse: T-1-s)
  int64_t nsteps, batch, hidden;  // batch = n0, the most rows of any step
  unsigned* barrier;      // one counter for the grid barrier (the launch zeroes it)
  DType dtype;
  bool tf32;              // fp32 may run its recurrent product as TF32 on tensor cores
};

struct LstmSeqCudaBwdParams {
  const void* w_hh;       // [4H, H]
  const void* dy;         // [total, H] or nullptr (= 0): gradient reaching y
  const void* act;        // [total, 4H] the forward's activated gates
  const void* c_all;      // [total, H] the forward's c
  const void* c0;         // [n0, H]
  void* dgates;           // [total, 4H] out
  void* dbias;            // [4H] or nullptr: accumulated (+=) with the sum of dgates' rows
  void* dh_state;         // [n0, H] in: dh_n; out: dh0
  void* dc_state;         // [n0, H] in: dc_n; out: dc0
  const LstmStep* steps;  // the forward's processing order (or nullptr and reverse, as
  bool reverse;           //   in the forward); run backwards
  int64_t nsteps, batch, hidden;
  unsigned* barrier;
  DType dtype;
  bool tf32;              // as in LstmSeqCudaFwdParams
};

// Launch on `stream` and return true, or return false without launching when no
// kernel applies (a batch or dtype none takes, no step, W_hh's slices too big for
// shared memory, blocks that could not all be resident, no cooperative launch on this
// device): the caller then runs its per-step loop. Both pick their kernel by batch; the
// _mma_ ones are the tensor-core kernels alone.
bool lstm_seq_fwd_persistent_cuda(const LstmSeqCudaFwdParams& p, cudaStream stream);
bool lstm_seq_bwd_persistent_cuda(const LstmSeqCudaBwdParams& p, cudaStream stream);
bool lstm_seq_fwd_persistent_mma_cuda(const LstmSeqCudaFwdParams& p, cudaStream stream);
bool lstm_seq_bwd_persistent_mma_cuda(const LstmSeqCudaBwdParams& p, cudaStream stream);

// Launch on `stream`; the caller checks the launch (cudaGetLastError) afterwards.
void lstm_fwd_cuda(const LstmFwdParams& p, cudaStream stream);
void lstm_bwd_cuda(const LstmBwdParams& p, cudaStream stream);

}  // namespace pyattn
