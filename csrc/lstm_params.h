// Tensors to the LSTM kernels' params structs (pyattn/lstm.h), used by csrc/lstm.cpp
// after its checks and by the emulated CUDA tests (tests/cuda_emulation/bindings.cpp).
// Builders check nothing: tensors come checked, as [rows, ·] matrices with unit column
// stride (contiguous where pyattn/lstm.h says so), and, like `steps`, must stay alive
// until the kernel has run. An undefined tensor stands for an optional one left out.
// H = hidden size, n0 = the batch (rows of the first step), total = rows of x.
#pragma once

#include <ATen/Parallel.h>
#include <torch/types.h>

#include <vector>

#include "params.h"
#include "pyattn/lstm.h"

namespace pyattn {

// The pointwise step forward on gates' n rows: gates [n, 4H] (x·W_ihᵀ + h·W_hhᵀ) and c
// [n, H] in; act [n, 4H] (may be gates), c_out [n, H] (may be c) and h_out [n, H] out;
// b_ih, b_hh [4H] or undefined.
inline LstmFwdParams make_lstm_fwd_params(const at::Tensor& gates, const at::Tensor& act, const at::Tensor& c,
                                          const at::Tensor& c_out, const at::Tensor& h_out, const at::Tensor& b_ih,
                                          const at::Tensor& b_hh) {
  LstmFwdParams p{};
  set_rows(&p.gates, &p.gates_stride, gates);
  p.bias[0] = ptr_or_null(b_ih);
  p.bias[1] = ptr_or_null(b_hh);
  set_rows(&p.act, &p.act_stride, act);
  set_rows(&p.c, &p.c_stride, c);
  set_rows(&p.c_out, &p.c_out_stride, c_out);
  set_rows(&p.h_out, &p.h_out_stride, h_out);
  p.dtype = dtype_of(gates);
  p.n = gates.size(0);
  p.hidden = c.size(1);
  return p;
}

// The pointwise step backward on act's n rows: dh [n, H], dh2 (added to dh) and dc [n, H]
// or undefined, the forward's act [n, 4H], c and c_new [n, H] in; dgates [n, 4H] and
// dc_out [n, H] (may be dc) out.
inline LstmBwdParams make_lstm_bwd_params(const at::Tensor& dh, const at::Tensor& dh2, const at::Tensor& dc,
                                          const at::Tensor& act, const at::Tensor& c, const at::Tensor& c_new,
                                          const at::Tensor& dgates, const at::Tensor& dc_out) {
  LstmBwdParams p{};
  set_rows(&p.dh, &p.dh_stride, dh);
  set_rows(&p.dh2, &p.dh2_stride, dh2);
  set_rows(&p.dc, &p.dc_stride, dc);
  set_rows(&p.act, &p.act_stride, act);
  set_rows(&p.c, &p.c_stride, c);
  set_rows(&p.c_new, &p.c_new_stride, c_new);
  set_rows(&p.dgates, &p.dgates_stride, dgates);
  set_rows(&p.dc_out, &p.dc_out_stride, dc_out);
  p.dtype = dtype_of(act);
  p.n = act.size(0);
  p.hidden = c.size(1);
  return p;
}

// Workers for the fp32 CPU loop: torch's threads, one when already inside a parallel region.
inline int lstm_loop_threads() { return at::in_parallel_region() ? 1 : at::get_num_threads(); }

// The fp32 CPU loop over `steps` (a cell is one step of all n0 rows), every tensor fp32.
// x [total, C] with w_packed = lstm_pack_gates_cpu([W_ih | W_hh]): the input product is
// part of each step's GEMM; or x undefined with w_packed = W_hh packed alone and act
// holding x·W_ihᵀ on entry. bias: b_ih + b_hh [4H] or undefined. act [total, 4H] and
// c_all, y [total, H] out, or act and c_all per-step scratch when `scratch` (LstmSeqFwdParams);
// h0, c0 [n0, H] in; h_n, c_n [n0, H] contiguous out, or undefined.
inline LstmSeqFwdParams make_lstm_seq_fwd_params(const at::Tensor& x, const at::Tensor& w_packed,
                                                 const at::Tensor& bias, const at::Tensor& act,
                                                 const at::Tensor& c_all, bool scratch, const at::Tensor& y,
                                                 const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& h_n,
                                                 const at::Tensor& c_n, const std::vector<LstmStep>& steps) {
  LstmSeqFwdParams p{};
  if (x.defined()) {
    p.x = x.data_ptr<float>();
    p.x_stride = x.stride(0);
    p.in_features = x.size(1);
  }
  p.w_packed = w_packed.data_ptr<float>();
  p.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
  p.act = act.data_ptr<float>();
  p.c_all = c_all.data_ptr<float>();
  p.scratch = scratch;
  p.y = y.data_ptr<float>();
  p.h0 = h0.data_ptr<float>();
  p.c0 = c0.data_ptr<float>();
  p.h0_stride = h0.stride(0);
  p.c0_stride = c0.stride(0);
  p.h_n = h_n.defined() ? h_n.data_ptr<float>() : nullptr;
  p.c_n = c_n.defined() ? c_n.data_ptr<float>() : nullptr;
  p.steps = steps.data();
  p.nsteps = int64_t(steps.size());
  p.hidden = c0.size(1);
  p.threads = lstm_loop_threads();
  return p;
}

// The fp32 CPU backward loop over the forward's `steps`: w_packed_t = lstm_pack_hh_t_cpu(W_hh);
// dy [total, H] or undefined; the forward's act [total, 4H], c_all [total, H] and c0
// [n0, H]; dgates [total, 4H] out; dbias [4H] (accumulated) or undefined; dh_state,
// dc_state [n0, H] contiguous: dh_n, dc_n in, dh0, dc0 out.
inline LstmSeqBwdParams make_lstm_seq_bwd_params(const at::Tensor& w_packed_t, const at::Tensor& dy,
                                                 const at::Tensor& act, const at::Tensor& c_all,
                                                 const at::Tensor& c0, const at::Tensor& dgates,
                                                 const at::Tensor& dbias, const at::Tensor& dh_state,
                                                 const at::Tensor& dc_state, const std::vector<LstmStep>& steps) {
  LstmSeqBwdParams p{};
  p.w_packed = w_packed_t.data_ptr<float>();
  p.dy = dy.defined() ? dy.data_ptr<float>() : nullptr;
  p.act = act.data_ptr<float>();
  p.c_all = c_all.data_ptr<float>();
  p.c0 = c0.data_ptr<float>();
  p.c0_stride = c0.stride(0);
  p.dgates = dgates.data_ptr<float>();
  p.dbias = dbias.defined() ? dbias.data_ptr<float>() : nullptr;
  p.dh_state = dh_state.data_ptr<float>();
  p.dc_state = dc_state.data_ptr<float>();
  p.steps = steps.data();
  p.nsteps = int64_t(steps.size());
  p.hidden = c0.size(1);
  p.threads = lstm_loop_threads();
  return p;
}

// What both persistent CUDA kernels' params share. steps: int64 [nsteps, 2] (off, n) on
// the device, or undefined for a dense sequence of nsteps steps of `batch` rows (reverse:
// last first); barrier: one int32 counter on the device (the launch zeroes it).
template <class Params>
void set_persistent_loop(Params* p, const at::Tensor& steps, int64_t nsteps, bool reverse, int64_t batch,
                         int64_t hidden, const at::Tensor& barrier, const at::Tensor& like) {
  p->steps = steps.defined() ? static_cast<const LstmStep*>(steps.data_ptr()) : nullptr;
  p->reverse = reverse;
  p->nsteps = nsteps;
  p->batch = batch;
  p->hidden = hidden;
  p->barrier = static_cast<unsigned*>(barrier.data_ptr());
  p->dtype = dtype_of(like);
}

// The persistent CUDA forward, every tensor contiguous: act [total, 4H] holds x·W_ihᵀ on
// entry and the activated gates on exit; w_hh [4H, H]; b_ih, b_hh [4H] or undefined;
// h0, c0 [n0, H] in; y, c_all [total, H] and h_n, c_n [n0, H] out. steps, nsteps,
// reverse, barrier: set_persistent_loop.
inline LstmSeqCudaFwdParams make_lstm_seq_cuda_fwd_params(const at::Tensor& act, const at::Tensor& w_hh,
                                                          const at::Tensor& b_ih, const at::Tensor& b_hh,
                                                          const at::Tensor& h0, const at::Tensor& c0,
                                                          const at::Tensor& y, const at::Tensor& c_all,
                                                          const at::Tensor& h_n, const at::Tensor& c_n,
                                                          const at::Tensor& steps, int64_t nsteps, bool reverse,
                                                          const at::Tensor& barrier) {
  LstmSeqCudaFwdParams p{};
  p.w_hh = w_hh.data_ptr();
  p.bias[0] = ptr_or_null(b_ih);
  p.bias[1] = ptr_or_null(b_hh);
  p.act = act.data_ptr();
  p.c_all = c_all.data_ptr();
  p.y = y.data_ptr();
  p.h0 = h0.data_ptr();
  p.c0 = c0.data_ptr();
  p.h_n = h_n.data_ptr();
  p.c_n = c_n.data_ptr();
  set_persistent_loop(&p, steps, nsteps, reverse, h0.size(0), w_hh.size(1), barrier, act);
  return p;
}

// The persistent CUDA backward, every tensor contiguous: dy [total, H] or undefined; the
// forward's act [total, 4H], c_all [total, H], c0 [n0, H]; w_hh [4H, H]; dgates [total, 4H]
// out; dbias [4H] (accumulated) or undefined; dh_state, dc_state [n0, H]: dh_n, dc_n in,
// dh0, dc0 out. steps, nsteps, reverse, barrier: set_persistent_loop.
inline LstmSeqCudaBwdParams make_lstm_seq_cuda_bwd_params(const at::Tensor& w_hh, const at::Tensor& dy,
                                                          const at::Tensor& act, const at::Tensor& c_all,
                                                          const at::Tensor& c0, const at::Tensor& dgates,
                                                          const at::Tensor& dbias, const at::Tensor& dh_state,
                                                          const at::Tensor& dc_state, const at::Tensor& steps,
                                                          int64_t nsteps, bool reverse, const at::Tensor& barrier) {
  LstmSeqCudaBwdParams p{};
  p.w_hh = w_hh.data_ptr();
  p.dy = ptr_or_null(dy);
  p.act = act.data_ptr();
  p.c_all = c_all.data_ptr();
  p.c0 = c0.data_ptr();
  p.dgates = dgates.data_ptr();
  p.dbias = ptr_or_null(dbias);
  p.dh_state = dh_state.data_ptr();
  p.dc_state = dc_state.data_ptr();
  set_persistent_loop(&p, steps, nsteps, reverse, dh_state.size(0), w_hh.size(1), barrier, act);
  return p;
}

}  // namespace pyattn
