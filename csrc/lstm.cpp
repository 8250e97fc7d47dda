// torch glue for the LSTM ops: argument checks, the GEMMs, the time loop, and the fused
// pointwise kernels (kernels/cpu/lstm_body.h) for everything elementwise. The params
// structs are filled in lstm_params.h.
//
// The GEMMs are arranged so that only the recurrent product is per step: the input
// product of every step is one GEMM before the loop, and the weight gradients are GEMMs
// over all steps after the backward loop; those big ones go through ATen (MKL / oneDNN
// on the CPU, cuBLAS on the GPU). The per-step recurrent product:
//   - fp32 on the CPU without a projection: our packed GEMM (kernels/cpu/packed_gemm.h)
//     on W_hh packed once per call, fused with the pointwise update, the whole time loop
//     in one kernel call (lstm_seq_fwd_cpu / _bwd_cpu). The cell packs [W_ih | W_hh] per
//     call, or takes them packed (lstm_cell_pack; nn.LSTMCell keeps a packed copy).
//   - CUDA without a projection: one persistent kernel for the whole loop, which keeps
//     W_hh in shared memory, when the device can hold all its blocks at once: up to
//     kLstmPersistentMaxBatch (8) rows on CUDA cores (kernels/cuda/lstm_persistent.cu),
//     up to kLstmPersistentMmaMaxBatch (256) rows on tensor cores
//     (lstm_persistent_mma.cu: fp16, bf16, and fp32 as TF32 when TF32 is allowed, else
//     as 3xTF32, see Fp32Mode);
//   - otherwise (CPU fp64 / bf16, projections, larger CUDA batches, fp64 CUDA batches
//     past 8): at::addmm_ per step and the pointwise kernels.
//
// Shapes (H hidden, P = proj_size or H, C input, N batch, `total` rows of x):
//   x [T, N, C] (total = T·N) or, with batch_sizes, packed [total, C] (PackedSequence.data)
//   h0 [N, P], c0 [N, H], w_ih [4H, C], w_hh [4H, P], b_ih / b_hh [4H], w_hr [P, H]
#include <ATen/Context.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "dispatch.h"
#include "lstm_params.h"
#include "pyattn/lstm.h"

namespace pyattn {
namespace {

constexpr const char* kCell = "lstm_cell";
constexpr const char* kSeq = "lstm_seq";
constexpr const char* kSeqBwd = "lstm_seq backward";

// Whether torch lets cuDNN's RNNs use TF32. Context::allowTF32CuDNN has had three
// signatures: no argument (the legacy flag), a std::string op, and (torch 2.10 on) a
// std::optional<Float32Op>; each torch has one, so its member pointer picks the call.
inline bool rnn_tf32_with(bool (at::Context::*allow)() const) { return (at::globalContext().*allow)(); }

template <class Op>
bool rnn_tf32_with(bool (at::Context::*allow)(Op) const) {
  using Arg = std::decay_t<Op>;
  if constexpr (std::is_same_v<Arg, std::string>) {
    return (at::globalContext().*allow)("rnn");
  } else {
    return (at::globalContext().*allow)(Arg::value_type::RNN);  // std::optional<at::Float32Op>
  }
}

// fp32 on CUDA follows torch's RNN precision setting, as nn.LSTM does through cuDNN:
// torch.backends.cudnn.allow_tf32 (or torch.backends.cudnn.rnn.fp32_precision), True by
// default. Our kernels read it (tf32): TF32 tensor-core products when allowed, else
// fp32 accuracy (CUDA cores up to 8 rows; 3xTF32 on tensor cores past them, the
// arithmetic of torch's own fp32 SDPA, whose error against fp64 stays fp32's, see
// tests/test_cuda_emulated.py). The ATen GEMMs follow cuBLAS's own flag
// (torch.backends.cuda.matmul.allow_tf32, False by default), so where the RNN setting
// forbids TF32 they run under NoTF32Guard. Where it allows TF32 and cuBLAS's flag does
// not, the GEMMs stay strict fp32: more exact than asked, never less.
struct Fp32Mode {
  explicit Fp32Mode(const at::Tensor& x) {
    if (!x.is_cuda() || x.scalar_type() != at::kFloat) return;
    tf32 = rnn_tf32_with(&at::Context::allowTF32CuDNN);
    if (!tf32) strict.emplace();
  }
  bool tf32 = false;
  std::optional<at::NoTF32Guard> strict;
};

// The weights' sizes, checked against each other: (H, P).
struct Dims {
  int64_t hidden, proj;
};

Dims check_weights(const char* op, const at::Tensor& x, int64_t in_features, const at::Tensor& w_ih,
                   const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                   const std::optional<at::Tensor>& w_hr) {
  to_dtype(x, op, "x");
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0, op, ": w_ih has shape ", w_ih.sizes(),
              ", expected [4*hidden_size, input_size]");
  const int64_t H = w_ih.size(0) / 4;
  TORCH_CHECK(w_ih.size(1) == in_features, op, ": x has ", in_features, " features but w_ih has shape ", w_ih.sizes(),
              ", expected [", 4 * H, ", ", in_features, "] (input_size mismatch)");
  check_like(w_ih, "w_ih", x, "x", op);
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == 4 * H, op, ": w_hh has shape ", w_hh.sizes(), ", expected [", 4 * H,
              ", hidden_size or proj_size]");
  check_like(w_hh, "w_hh", x, "x", op);
  const int64_t P = w_hh.size(1);
  if (w_hr.has_value()) {
    check_shape(*w_hr, {P, H}, op, "w_hr", "[proj_size, hidden_size]");
    check_like(*w_hr, "w_hr", x, "x", op);
    TORCH_CHECK(P < H, op, ": proj_size ", P, " must be smaller than hidden_size ", H);
  } else {
    TORCH_CHECK(P == H, op, ": w_hh has shape ", w_hh.sizes(), ", expected [", 4 * H, ", ", H,
                "] (no w_hr, so h has hidden_size features)");
  }
  for (const auto* b : {&b_ih, &b_hh}) {
    if (!b->has_value()) continue;
    const char* name = b == &b_ih ? "b_ih" : "b_hh";
    check_shape(**b, {4 * H}, op, name, "[4*hidden_size]");
    check_like(**b, name, x, "x", op);
  }
  return {H, P};
}

// t has shape `want` and x's dtype and device: the state and saved tensors of one call.
void check_state(const at::Tensor& t, at::IntArrayRef want, const char* op, const char* what, const char* layout,
                 const at::Tensor& x) {
  check_shape(t, want, op, what, layout);
  check_like(t, what, x, "x", op);
}

// b_ih + b_hh (either may be missing; undefined without both), for the fused loop.
at::Tensor bias_sum(const at::Tensor& b_ih, const at::Tensor& b_hh) {
  if (b_ih.defined() && b_hh.defined()) return b_ih + b_hh;
  return b_ih.defined() ? b_ih.contiguous() : b_hh.defined() ? b_hh.contiguous() : at::Tensor();
}

// The fused fp32 loop applies (see the top of the file).
bool fused_cpu(const at::Tensor& x, bool proj) { return x.is_cpu() && x.scalar_type() == at::kFloat && !proj; }

// Whether the fused loop computes each step's input product x_t·W_ihᵀ in the same
// packed GEMM as h·W_hhᵀ (K = C + H), instead of one ATen GEMM over all steps first.
// Measured (2 cores, AVX2, 512 KiB L2 per core): T100 N64 C256 H256 forward ~5% faster
// fused (2 MiB of packed weights): it skips writing and re-reading the [T·N, 4H] input
// product through memory. T50 N32 C512 H512 (8 MiB) was a few % slower fused on one
// thread, a tie on two: [W_ih | W_hh] is read again every step (2 FLOP per row per 4
// bytes), so it takes enough rows and a matrix that stays close in the cache hierarchy.
bool fuse_input(int64_t batch, int64_t in_features, int64_t hidden) {
  return batch >= 16 && 16 * hidden * (in_features + hidden) <= (int64_t(4) << 20);
}

// [W_ih | W_hh] (w_ih undefined: W_hh only) packed for lstm_seq_fwd_cpu, fp32 CPU.
at::Tensor pack_gates(const at::Tensor& w_ih, const at::Tensor& w_hh) {
  const int64_t H = w_hh.size(0) / 4, C = w_ih.defined() ? w_ih.size(1) : 0;
  at::Tensor out = at::empty({lstm_packed_gates_size(C, H)}, w_hh.options());
  lstm_pack_gates_cpu(C ? w_ih.data_ptr<float>() : nullptr, C ? w_ih.stride(0) : 0, C ? w_ih.stride(1) : 0, C,
                      w_hh.data_ptr<float>(), w_hh.stride(0), w_hh.stride(1), H, out.data_ptr<float>(),
                      &torch_parallel_for);
  return out;
}

// Runs the pointwise forward on gates' rows. act may be gates itself; c_out may be c.
void pointwise_fwd(const char* op, const at::Tensor& gates, const at::Tensor& act, const at::Tensor& c,
                   const at::Tensor& c_out, const at::Tensor& h_out, const at::Tensor& b_ih, const at::Tensor& b_hh) {
  if (gates.size(0) == 0) return;
  run_kernel(gates, op, make_lstm_fwd_params(gates, act, c, c_out, h_out, b_ih, b_hh), &lstm_fwd_cpu,
             PYATTN_CUDA_LAUNCHER(lstm_fwd_cuda));
}

// Pointwise backward; dh2 and dc may be undefined; dc_out may be dc.
void pointwise_bwd(const char* op, const at::Tensor& dh, const at::Tensor& dh2, const at::Tensor& dc,
                   const at::Tensor& act, const at::Tensor& c, const at::Tensor& c_new, const at::Tensor& dgates,
                   const at::Tensor& dc_out) {
  if (act.size(0) == 0) return;
  run_kernel(act, op, make_lstm_bwd_params(dh, dh2, dc, act, c, c_new, dgates, dc_out), &lstm_bwd_cpu,
             PYATTN_CUDA_LAUNCHER(lstm_bwd_cuda));
}

at::Tensor opt_or_undef(const std::optional<at::Tensor>& t) {
  return t.has_value() ? last_dim_contiguous(*t) : at::Tensor();
}

// ------------------------------------------------------------------------------ cell

std::tuple<at::Tensor, at::Tensor, at::Tensor> cell_fwd(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c_in,
                                                        const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                        const std::optional<at::Tensor>& b_ih,
                                                        const std::optional<at::Tensor>& b_hh,
                                                        const std::optional<at::Tensor>& w_packed) {
  const Fp32Mode mode(x);
  check_dims(x, 2, kCell, "x", "(batch, input_size)");
  const Dims d = check_weights(kCell, x, x.size(1), w_ih, w_hh, b_ih, b_hh, std::nullopt);
  const int64_t N = x.size(0);
  check_state(h, {N, d.hidden}, kCell, "h", "(batch, hidden_size)", x);
  check_state(c_in, {N, d.hidden}, kCell, "c", "(batch, hidden_size)", x);
  at::Tensor c_new = at::empty({N, d.hidden}, x.options());
  at::Tensor h_new = at::empty({N, d.hidden}, x.options());
  if (fused_cpu(x, false)) {
    const int64_t C = x.size(1), H = d.hidden;
    at::Tensor packed;
    if (w_packed.has_value()) {
      packed = *w_packed;
      TORCH_CHECK(packed.dim() == 1 && packed.numel() == lstm_packed_gates_size(C, H) &&
                      packed.scalar_type() == at::kFloat && packed.is_cpu() && packed.is_contiguous(),
                  kCell, ": w_packed has shape ", packed.sizes(), " and dtype ", packed.scalar_type(),
                  ", expected a contiguous float32 CPU tensor of ", lstm_packed_gates_size(C, H),
                  " elements from lstm_cell_pack(w_ih, w_hh)");
    } else {
      packed = pack_gates(w_ih, w_hh);
    }
    const at::Tensor xr = last_dim_contiguous(x), hr = last_dim_contiguous(h), cr = last_dim_contiguous(c_in);
    const at::Tensor bias = bias_sum(opt_or_undef(b_ih), opt_or_undef(b_hh));
    at::Tensor act = at::empty({N, 4 * H}, x.options());
    // One step of all N rows (none for an empty batch).
    const std::vector<LstmStep> steps = N > 0 ? std::vector<LstmStep>{{0, N}} : std::vector<LstmStep>{};
    lstm_seq_fwd_cpu(make_lstm_seq_fwd_params(xr, packed, bias, act, c_new, false, h_new, hr, cr, at::Tensor(),
                                              at::Tensor(), steps),
                     &torch_parallel_for);
    return {h_new, c_new, act};
  }
  at::Tensor gates = at::mm(x, w_ih.t());  // [N, 4H]; becomes the activations in place
  gates.addmm_(h, w_hh.t());
  pointwise_fwd(kCell, gates, gates, last_dim_contiguous(c_in), c_new, h_new, opt_or_undef(b_ih), opt_or_undef(b_hh));
  return {h_new, c_new, gates};
}

// [W_ih | W_hh] packed for lstm_cell_fwd's w_packed (fp32, CPU).
at::Tensor cell_pack(const at::Tensor& w_ih, const at::Tensor& w_hh) {
  constexpr const char* op = "lstm_cell_pack";
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0, op, ": w_ih has shape ", w_ih.sizes(),
              ", expected [4*hidden_size, input_size]");
  const int64_t H = w_ih.size(0) / 4;
  check_shape(w_hh, {4 * H, H}, op, "w_hh", "[4*hidden_size, hidden_size]");
  TORCH_CHECK(w_ih.scalar_type() == at::kFloat && w_ih.is_cpu(), op, ": w_ih is ", w_ih.scalar_type(), " on ",
              w_ih.device(), "; packed weights are for float32 on the CPU");
  check_like(w_hh, "w_hh", w_ih, "w_ih", op);
  return pack_gates(w_ih, w_hh);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> cell_bwd(
    const std::optional<at::Tensor>& dh_in, const std::optional<at::Tensor>& dc_in, const at::Tensor& x,
    const at::Tensor& h, const at::Tensor& c, const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& act,
    const at::Tensor& c_new, bool has_bias) {
  constexpr const char* op = "lstm_cell backward";
  const Fp32Mode mode(x);
  check_dims(x, 2, op, "x", "(batch, input_size)");
  const Dims d = check_weights(op, x, x.size(1), w_ih, w_hh, std::nullopt, std::nullopt, std::nullopt);
  const int64_t N = x.size(0), H = d.hidden;
  check_state(h, {N, H}, op, "h", "(batch, hidden_size)", x);
  check_state(c, {N, H}, op, "c", "(batch, hidden_size)", x);
  check_state(act, {N, 4 * H}, op, "act", "(batch, 4*hidden_size)", x);
  check_state(c_new, {N, H}, op, "c_new", "(batch, hidden_size)", x);
  at::Tensor dh = dh_in.has_value() ? last_dim_contiguous(*dh_in) : at::zeros({N, H}, x.options());
  check_state(dh, {N, H}, op, "dh", "(batch, hidden_size)", x);
  at::Tensor dc;
  if (dc_in.has_value()) {
    dc = last_dim_contiguous(*dc_in);
    check_state(dc, {N, H}, op, "dc", "(batch, hidden_size)", x);
  }
  at::Tensor dgates = at::empty({N, 4 * H}, x.options());
  at::Tensor dc_prev = at::empty({N, H}, x.options());
  pointwise_bwd(op, dh, at::Tensor(), dc, last_dim_contiguous(act), last_dim_contiguous(c),
                last_dim_contiguous(c_new), dgates, dc_prev);
  at::Tensor db = has_bias ? dgates.sum(0) : at::empty({0}, x.options());
  return {at::mm(dgates, w_ih), at::mm(dgates, w_hh), dc_prev, at::mm(dgates.t(), x), at::mm(dgates.t(), h), db};
}

// -------------------------------------------------------------------------- sequence

// Whether the persistent CUDA loop may take this sequence, with at most max_batch rows
// (it may still decline, see lstm_seq_fwd_persistent_cuda); x decides the device.
// PYATTN_LSTM_PERSISTENT=0 in the environment turns it off (read once), to compare with
// the per-step loop.
bool persistent_cuda(const at::Tensor& x, bool proj, int64_t batch, const std::vector<LstmStep>& steps,
                     int64_t max_batch) {
  static const bool enabled = [] {
    const char* e = std::getenv("PYATTN_LSTM_PERSISTENT");
    return e == nullptr || std::string(e) != "0";
  }();
  return enabled && x.is_cuda() && !proj && !steps.empty() && batch <= max_batch;
}

// The device side of a persistent kernel's loop: a PackedSequence's steps as int64
// [nsteps, 2] (off, n) on x's device (a dense sequence needs none: the kernel derives its
// steps, so it makes no host-to-device copy), and the grid barrier's counter.
struct PersistentLoop {
  at::Tensor steps, barrier;
};

PersistentLoop persistent_loop(const at::Tensor& x, const std::vector<LstmStep>& steps, bool packed) {
  static_assert(sizeof(LstmStep) == 2 * sizeof(int64_t), "LstmStep is an (off, n) pair of int64");
  PersistentLoop loop;
  if (packed) {
    at::Tensor t = at::empty({int64_t(steps.size()), 2}, at::TensorOptions().dtype(at::kLong));
    std::memcpy(t.data_ptr<int64_t>(), steps.data(), steps.size() * sizeof(LstmStep));
    loop.steps = t.to(x.device());
  }
  loop.barrier = at::empty({1}, x.options().dtype(at::kInt));  // zeroed by the launch
  return loop;
}

// The steps in processing order (reverse: t = T-1 first). Checks batch_sizes.
std::vector<LstmStep> make_steps(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& batch_sizes,
                                 int64_t N, bool reverse) {
  std::vector<LstmStep> steps;
  if (!batch_sizes.has_value()) {
    for (int64_t t = 0; t < x.size(0); ++t) steps.push_back({t * N, N});
  } else {
    const at::Tensor& bs = *batch_sizes;
    TORCH_CHECK(bs.dim() == 1 && bs.scalar_type() == at::kLong && bs.is_cpu(), op,
                ": batch_sizes must be a 1-d int64 CPU tensor (PackedSequence.batch_sizes), got ", bs.scalar_type(),
                " of shape ", bs.sizes(), " on ", bs.device());
    const at::Tensor bsc = bs.contiguous();
    const int64_t* b = bsc.data_ptr<int64_t>();
    int64_t off = 0;
    for (int64_t t = 0; t < bsc.numel(); ++t) {
      TORCH_CHECK(b[t] > 0 && b[t] <= (t ? b[t - 1] : N), op, ": batch_sizes must be positive and non-increasing with ",
                  "batch_sizes[0] == h0.size(0) == ", N, "; got ", bs);
      steps.push_back({off, b[t]});
      off += b[t];
    }
    TORCH_CHECK(off == x.size(0), op, ": batch_sizes sum to ", off, " but x has ", x.size(0), " rows");
    TORCH_CHECK(bsc.numel() == 0 || b[0] == N, op, ": batch_sizes[0] is ", bsc.numel() ? b[0] : 0,
                " but h0 has batch size ", N);
  }
  if (reverse) std::reverse(steps.begin(), steps.end());
  return steps;
}

// What lstm_seq_fwd and lstm_seq_bwd take alike, once checked, in the kernels' layout.
struct Seq {
  at::Tensor x;                 // [total, C]
  at::Tensor h0, c0;            // [N, P], [N, H], last-dim stride 1
  at::Tensor w_ih, w_hh, w_hr;  // w_hr undefined without a projection
  std::vector<LstmStep> steps;  // processing order
  bool packed = false, reverse = false;
  int64_t N = 0, H = 0, P = 0;
};

// Fills s from op's arguments, whose checks passed (make_steps checks batch_sizes).
void set_seq(Seq* s, const char* op, const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
             const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
             const std::optional<at::Tensor>& batch_sizes, bool reverse, const Dims& d) {
  s->packed = batch_sizes.has_value();
  s->reverse = reverse;
  s->N = h0.size(0);
  s->H = d.hidden;
  s->P = d.proj;
  s->steps = make_steps(op, x, batch_sizes, s->N, reverse);
  s->x = x.reshape({s->packed ? x.size(0) : x.size(0) * s->N, x.size(-1)});
  s->h0 = last_dim_contiguous(h0);
  s->c0 = last_dim_contiguous(c0);
  s->w_ih = w_ih;
  s->w_hh = w_hh;
  s->w_hr = w_hr.has_value() ? *w_hr : at::Tensor();
}

// One lstm_seq_fwd call: inputs checked, then outputs allocated.
struct SeqFwd : Seq {
  at::Tensor b_ih, b_hh;  // [4H], undefined when absent
  at::Tensor act;         // [total, 4H]: x·W_ihᵀ on entry (unless fused with x), the gates on exit;
  at::Tensor c_all;       //   act and c_all per-step scratch in fused inference (seq_fwd_fused)
  at::Tensor y;           // [total, P]
  at::Tensor h_pre;       // [total, H] with a projection (h before it), else empty
  at::Tensor h_n, c_n;    // [N, P], [N, H]
};

SeqFwd seq_fwd_inputs(const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& c0_in,
                      const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih_in,
                      const std::optional<at::Tensor>& b_hh_in, const std::optional<at::Tensor>& w_hr,
                      const std::optional<at::Tensor>& batch_sizes, bool reverse) {
  const bool packed = batch_sizes.has_value();
  TORCH_CHECK(x_in.dim() == (packed ? 2 : 3), kSeq, ": x has ", x_in.dim(), " dims, expected ",
              packed ? "2 (sum(batch_sizes), input_size) with batch_sizes" : "3 (seq_len, batch, input_size)");
  const Dims d = check_weights(kSeq, x_in, x_in.size(-1), w_ih, w_hh, b_ih_in, b_hh_in, w_hr);
  const int64_t H = d.hidden, P = d.proj;
  TORCH_CHECK(h0_in.dim() == 2, kSeq, ": h0 has shape ", h0_in.sizes(), ", expected (batch, ", P, ")");
  const int64_t N = h0_in.size(0);
  if (!packed)
    TORCH_CHECK(N == x_in.size(1), kSeq, ": h0 has batch size ", N, " but x has batch size ", x_in.size(1));
  check_state(h0_in, {N, P}, kSeq, "h0", "(batch, proj_size or hidden_size)", x_in);
  check_state(c0_in, {N, H}, kSeq, "c0", "(batch, hidden_size)", x_in);
  SeqFwd f;
  set_seq(&f, kSeq, x_in, h0_in, c0_in, w_ih, w_hh, w_hr, batch_sizes, reverse, d);
  f.b_ih = opt_or_undef(b_ih_in);
  f.b_hh = opt_or_undef(b_hh_in);
  return f;
}

// fp32 CPU, no projection: the whole loop in lstm_seq_fwd_cpu, on W_hh packed (with W_ih
// too when fuse_x: act is then not an input). scratch: act and c_all are per-step scratch.
void seq_fwd_fused(const SeqFwd& f, bool fuse_x, bool scratch) {
  const at::Tensor x = fuse_x ? last_dim_contiguous(f.x) : at::Tensor();
  const at::Tensor packed = pack_gates(fuse_x ? f.w_ih : at::Tensor(), f.w_hh);
  const at::Tensor bias = bias_sum(f.b_ih, f.b_hh);
  lstm_seq_fwd_cpu(make_lstm_seq_fwd_params(x, packed, bias, f.act, f.c_all, scratch, f.y, f.h0, f.c0, f.h_n, f.c_n,
                                            f.steps),
                   &torch_parallel_for);
}

// CUDA, no projection, at most kLstmPersistentMmaMaxBatch rows: the whole loop in one
// persistent kernel (fp32 past 8 rows as TF32 with tf32, else as 3xTF32). Returns
// false, having run nothing, when the kernels decline.
bool seq_fwd_persistent(const SeqFwd& f, bool tf32) {
  const at::Tensor w = f.w_hh.contiguous(), h0 = f.h0.contiguous(), c0 = f.c0.contiguous();
  const PersistentLoop loop = persistent_loop(f.x, f.steps, f.packed);
  LstmSeqCudaFwdParams p =
      make_lstm_seq_cuda_fwd_params(f.act, w, f.b_ih, f.b_hh, h0, c0, f.y, f.c_all, f.h_n, f.c_n, loop.steps,
                                    int64_t(f.steps.size()), f.reverse, loop.barrier);
  p.tf32 = tf32;
  return try_cuda_kernel(f.x, p, PYATTN_CUDA_LAUNCHER(lstm_seq_fwd_persistent_cuda));
}

// Everything else: at::addmm_ per step for the recurrent product, then the pointwise
// kernel (and the projection's GEMM).
void seq_fwd_per_step(const SeqFwd& f) {
  const std::vector<LstmStep>& steps = f.steps;
  const bool proj = f.w_hr.defined();
  at::Tensor hbuf, cbuf;  // previous state assembled from two sources (reverse, packed)
  const at::Tensor w_hh_t = f.w_hh.t(), w_hr_t = proj ? f.w_hr.t() : at::Tensor();
  for (size_t s = 0; s < steps.size(); ++s) {
    const auto [off, n] = steps[s];
    // The previous h and c of rows [0, n): the previous step's outputs for the rows it
    // had, h0 / c0 for rows starting now.
    at::Tensor h_prev, c_prev;
    if (s == 0) {
      h_prev = f.h0.narrow(0, 0, n);
      c_prev = f.c0.narrow(0, 0, n);
    } else if (n <= steps[s - 1].n) {
      h_prev = f.y.narrow(0, steps[s - 1].off, n);
      c_prev = f.c_all.narrow(0, steps[s - 1].off, n);
    } else {
      const int64_t pn = steps[s - 1].n, poff = steps[s - 1].off;
      if (!hbuf.defined()) {
        hbuf = at::empty({f.N, f.P}, f.y.options());
        cbuf = at::empty({f.N, f.H}, f.y.options());
      }
      hbuf.narrow(0, 0, pn).copy_(f.y.narrow(0, poff, pn));
      hbuf.narrow(0, pn, n - pn).copy_(f.h0.narrow(0, pn, n - pn));
      cbuf.narrow(0, 0, pn).copy_(f.c_all.narrow(0, poff, pn));
      cbuf.narrow(0, pn, n - pn).copy_(f.c0.narrow(0, pn, n - pn));
      h_prev = hbuf.narrow(0, 0, n);
      c_prev = cbuf.narrow(0, 0, n);
    }
    at::Tensor gates = f.act.narrow(0, off, n);
    gates.addmm_(h_prev, w_hh_t);
    at::Tensor y_s = f.y.narrow(0, off, n), c_s = f.c_all.narrow(0, off, n);
    pointwise_fwd(kSeq, gates, gates, c_prev, c_s, proj ? f.h_pre.narrow(0, off, n) : y_s, f.b_ih, f.b_hh);
    if (proj) at::mm_out(y_s, f.h_pre.narrow(0, off, n), w_hr_t);
    // Rows [next n, n) end here: their final state.
    const int64_t nn = s + 1 < steps.size() ? std::min(steps[s + 1].n, n) : 0;
    if (nn < n) {
      f.h_n.narrow(0, nn, n - nn).copy_(y_s.narrow(0, nn, n - nn));
      f.c_n.narrow(0, nn, n - nn).copy_(c_s.narrow(0, nn, n - nn));
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> seq_fwd(
    const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& c0_in, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& batch_sizes, bool reverse,
    bool need_backward) {
  const Fp32Mode mode(x_in);
  SeqFwd f = seq_fwd_inputs(x_in, h0_in, c0_in, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse);
  const auto opts = x_in.options();
  const int64_t total = f.x.size(0), N = f.N, H = f.H, P = f.P;
  const bool proj = f.w_hr.defined();
  // Every step's input product (ATen), then, in place, the activations. The fused loop
  // with a batch of 16 or more does the input product per step itself (fuse_x).
  // Without backward (inference) the fused loop keeps act and c in per-step scratch
  // (LstmSeqFwdParams::scratch): no [total, ·] buffers to fault in and write back.
  const bool fused = fused_cpu(f.x, proj);
  const bool fuse_x = fused && fuse_input(N, f.x.size(1), H);
  const bool scratch = !need_backward && fused;
  int64_t nmax = 0;
  for (const LstmStep& st : f.steps) nmax = std::max(nmax, st.n);
  f.act = fuse_x ? at::empty({scratch ? nmax : total, 4 * H}, opts) : at::mm(f.x, w_ih.t());
  f.c_all = at::empty({scratch ? 2 * nmax : total, H}, opts);
  f.y = at::empty({total, P}, opts);
  f.h_pre = proj ? at::empty({total, H}, opts) : at::empty({0}, opts);
  f.h_n = at::empty({N, P}, opts);
  f.c_n = at::empty({N, H}, opts);

  if (f.steps.empty()) {  // no step: the state passes through
    f.h_n.copy_(f.h0);
    f.c_n.copy_(f.c0);
  } else if (fused) {
    seq_fwd_fused(f, fuse_x, scratch);
  } else if (!(persistent_cuda(f.x, proj, N, f.steps, kLstmPersistentMmaMaxBatch) &&
                 seq_fwd_persistent(f, mode.tf32))) {
    seq_fwd_per_step(f);
  }
  // What backward would need is not returned (distinct empty tensors: outputs must not alias).
  const auto saved = [&](const at::Tensor& t) { return need_backward ? t : at::empty({0}, opts); };
  return {f.y.reshape(f.packed ? at::IntArrayRef{total, P} : at::IntArrayRef{x_in.size(0), N, P}), f.h_n, f.c_n,
          saved(f.act), saved(f.c_all), saved(f.h_pre)};
}

// One lstm_seq_bwd call: inputs checked (the forward's outputs contiguous), then
// gradients allocated.
struct SeqBwd : Seq {
  at::Tensor y, act, c_all;  // the forward's, [total, P], [total, 4H], [total, H]
  at::Tensor h_pre;          // the forward's: [total, H] with a projection, else empty
  at::Tensor dy;             // [total, P] or undefined
  bool has_bias = false;
  at::Tensor dh_state, dc_state;  // [N, P], [N, H]: dh_n, dc_n in; dh0, dc0 out
  at::Tensor dgates;              // [total, 4H] out
  at::Tensor dh_tot;              // [total, P] with a projection: dy + the recurrent dh per step
  at::Tensor db;                  // [4H] zeros (accumulated by the whole-loop kernels), or empty
};

SeqBwd seq_bwd_inputs(const std::optional<at::Tensor>& dy_in, const at::Tensor& x_in, const at::Tensor& h0_in,
                      const at::Tensor& c0_in, const at::Tensor& w_ih, const at::Tensor& w_hh,
                      const std::optional<at::Tensor>& w_hr, const at::Tensor& y_in, const at::Tensor& act_in,
                      const at::Tensor& c_all_in, const at::Tensor& h_pre_in,
                      const std::optional<at::Tensor>& batch_sizes, bool reverse, bool has_bias) {
  constexpr const char* op = kSeqBwd;
  const bool packed = batch_sizes.has_value();
  TORCH_CHECK(x_in.dim() == (packed ? 2 : 3), op, ": x has ", x_in.dim(), " dims, expected ", packed ? 2 : 3);
  const Dims d = check_weights(op, x_in, x_in.size(-1), w_ih, w_hh, std::nullopt, std::nullopt, w_hr);
  const int64_t H = d.hidden, P = d.proj, N = h0_in.size(0);
  const int64_t total = packed ? x_in.size(0) : x_in.size(0) * N;
  const bool proj = w_hr.has_value();
  check_shape(h0_in, {N, P}, op, "h0", "(batch, proj_size or hidden_size)");
  check_shape(c0_in, {N, H}, op, "c0", "(batch, hidden_size)");
  TORCH_CHECK(y_in.numel() == total * P, op, ": y has shape ", y_in.sizes(), ", expected ", total, " rows of ", P);
  check_shape(act_in, {total, 4 * H}, op, "act", "(rows, 4*hidden_size)");
  check_shape(c_all_in, {total, H}, op, "c_all", "(rows, hidden_size)");
  check_shape(h_pre_in, proj ? at::IntArrayRef{total, H} : at::IntArrayRef{0}, op, "h_pre", "(rows, hidden_size)");
  for (const auto& [t, what] : {std::pair<const at::Tensor&, const char*>{h0_in, "h0"}, {c0_in, "c0"}, {y_in, "y"},
                                {act_in, "act"}, {c_all_in, "c_all"}, {h_pre_in, "h_pre"}})
    check_like(t, what, x_in, "x", op);
  SeqBwd g;
  set_seq(&g, op, x_in, h0_in, c0_in, w_ih, w_hh, w_hr, batch_sizes, reverse, d);
  g.y = y_in.reshape({total, P}).contiguous();
  g.act = act_in.contiguous();
  g.c_all = c_all_in.contiguous();
  g.h_pre = h_pre_in;
  if (dy_in.has_value()) {
    TORCH_CHECK(dy_in->numel() == total * P, op, ": dy has shape ", dy_in->sizes(), ", expected y's ", y_in.sizes());
    check_like(*dy_in, "dy", x_in, "x", op);
    g.dy = dy_in->reshape({total, P}).contiguous();
  }
  g.has_bias = has_bias;
  return g;
}

// fp32 CPU, no projection: the whole loop in lstm_seq_bwd_cpu on W_hhᵀ packed.
void seq_bwd_fused(const SeqBwd& g) {
  const at::Tensor packed_t = at::empty({lstm_packed_hh_t_size(g.H)}, g.x.options());
  lstm_pack_hh_t_cpu(g.w_hh.data_ptr<float>(), g.w_hh.stride(0), g.w_hh.stride(1), g.H, packed_t.data_ptr<float>(),
                     &torch_parallel_for);
  lstm_seq_bwd_cpu(make_lstm_seq_bwd_params(packed_t, g.dy, g.act, g.c_all, g.c0, g.dgates,
                                            g.has_bias ? g.db : at::Tensor(), g.dh_state, g.dc_state, g.steps),
                   &torch_parallel_for);
}

// CUDA, no projection, at most kLstmPersistentMmaMaxBatch rows: the whole loop in one
// persistent kernel (fp32 past 8 rows as TF32 with tf32, else as 3xTF32). Returns
// false, having run nothing, when the kernels decline.
bool seq_bwd_persistent(const SeqBwd& g, bool tf32) {
  const at::Tensor w = g.w_hh.contiguous(), c0 = g.c0.contiguous();
  const PersistentLoop loop = persistent_loop(g.x, g.steps, g.packed);
  LstmSeqCudaBwdParams p = make_lstm_seq_cuda_bwd_params(
      w, g.dy, g.act, g.c_all, c0, g.dgates, g.has_bias ? g.db : at::Tensor(), g.dh_state, g.dc_state, loop.steps,
      int64_t(g.steps.size()), g.reverse, loop.barrier);
  p.tf32 = tf32;
  return try_cuda_kernel(g.x, p, PYATTN_CUDA_LAUNCHER(lstm_seq_bwd_persistent_cuda));
}

// Everything else, backwards through the steps: the pointwise backward (after the
// projection's), then dh of the previous step = dgates · W_hh. c_prev [total, H]: each
// row's previous c.
void seq_bwd_per_step(const SeqBwd& g, const at::Tensor& c_prev) {
  for (size_t k = g.steps.size(); k-- > 0;) {
    const auto [off, n] = g.steps[k];
    at::Tensor dhs = g.dh_state.narrow(0, 0, n), dcs = g.dc_state.narrow(0, 0, n);
    const at::Tensor dg = g.dgates.narrow(0, off, n);
    const at::Tensor dy_s = g.dy.defined() ? g.dy.narrow(0, off, n) : at::Tensor();
    const at::Tensor act_s = g.act.narrow(0, off, n), c_prev_s = c_prev.narrow(0, off, n);
    const at::Tensor c_s = g.c_all.narrow(0, off, n);
    if (g.w_hr.defined()) {
      at::Tensor dt = g.dh_tot.narrow(0, off, n);
      if (dy_s.defined()) at::add_out(dt, dy_s, dhs);
      else dt.copy_(dhs);
      pointwise_bwd(kSeqBwd, at::mm(dt, g.w_hr), at::Tensor(), dcs, act_s, c_prev_s, c_s, dg, dcs);
    } else {
      pointwise_bwd(kSeqBwd, dhs, dy_s, dcs, act_s, c_prev_s, c_s, dg, dcs);
    }
    at::mm_out(dhs, dg, g.w_hh);  // the recurrent gradient for the previous step (or dh0)
  }
}

// Row r of step s came after row prev[r] of cat(outputs, initial state): the previous
// step's row, or row total + b of the initial state for a row starting at s. int64
// [total] on `device`, for index_select.
at::Tensor previous_rows(const std::vector<LstmStep>& steps, int64_t total, const at::Device& device) {
  at::Tensor prev_idx = at::empty({total}, at::TensorOptions().dtype(at::kLong));
  int64_t* pi = prev_idx.data_ptr<int64_t>();
  for (size_t s = 0; s < steps.size(); ++s) {
    const auto [off, n] = steps[s];
    const int64_t pn = s ? steps[s - 1].n : 0, poff = s ? steps[s - 1].off : 0;
    for (int64_t b = 0; b < n; ++b) pi[off + b] = b < pn ? poff + b : total + b;
  }
  return prev_idx.to(device);
}

// dW_hh = Σ_rows dgates[row]ᵀ · (that row's previous h). With a PackedSequence, the
// previous h of every row gathered into [total, P] by prev (previous_rows). Without, every
// step has N rows: the previous h of the steps after the first is y shifted by one step
// (forward: y's rows [0, total - N) go with dgates' rows [N, total); reverse: the other
// way round), and of the first step (in processing order) it is h0.
at::Tensor grad_w_hh(const SeqBwd& g, const at::Tensor& prev) {
  const int64_t total = g.x.size(0), N = g.N;
  if (g.packed || g.steps.empty())
    return at::mm(g.dgates.t(), g.packed ? at::cat({g.y, g.h0}).index_select(0, prev) : g.y);
  const int64_t first = g.reverse ? total - N : 0;  // dgates' rows of the first processed step
  at::Tensor dw_hh = at::mm(g.dgates.narrow(0, first, N).t(), g.h0);
  if (total > N) {
    const at::Tensor dg_rest = g.dgates.narrow(0, g.reverse ? 0 : N, total - N);
    dw_hh.addmm_(dg_rest.t(), g.y.narrow(0, g.reverse ? N : 0, total - N));
  }
  return dw_hh;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> seq_bwd(
    const std::optional<at::Tensor>& dy, const std::optional<at::Tensor>& dh_n,
    const std::optional<at::Tensor>& dc_n, const at::Tensor& x_in, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr, const at::Tensor& y,
    const at::Tensor& act, const at::Tensor& c_all, const at::Tensor& h_pre,
    const std::optional<at::Tensor>& batch_sizes, bool reverse, bool has_bias) {
  constexpr const char* op = kSeqBwd;
  const Fp32Mode mode(x_in);
  SeqBwd g = seq_bwd_inputs(dy, x_in, h0, c0, w_ih, w_hh, w_hr, y, act, c_all, h_pre, batch_sizes, reverse, has_bias);
  const auto opts = x_in.options();
  const int64_t total = g.x.size(0), N = g.N, H = g.H, P = g.P;
  const bool proj = g.w_hr.defined();
  // Running gradients of the state, [N, ·]: rows [0, n) feed the current step; the other
  // rows hold dh_n / dc_n (rows not started yet, backwards) or finished dh0 / dc0.
  g.dh_state = at::zeros({N, P}, opts);
  g.dc_state = at::zeros({N, H}, opts);
  if (dh_n.has_value()) {
    check_state(*dh_n, {N, P}, op, "dh_n", "(batch, proj_size or hidden_size)", x_in);
    g.dh_state.copy_(*dh_n);
  }
  if (dc_n.has_value()) {
    check_state(*dc_n, {N, H}, op, "dc_n", "(batch, hidden_size)", x_in);
    g.dc_state.copy_(*dc_n);
  }
  g.dgates = at::empty({total, 4 * H}, opts);
  g.dh_tot = proj ? at::empty({total, P}, opts) : at::Tensor();
  g.db = has_bias ? at::zeros({4 * H}, opts) : at::empty({0}, opts);

  // A whole-loop kernel, else the per-step loop, which needs each row's previous c
  // gathered into [total, H] (the whole-loop kernels find it themselves).
  bool looped = false;
  if (fused_cpu(g.x, proj) && !g.steps.empty()) {
    seq_bwd_fused(g);
    looped = true;
  } else if (persistent_cuda(g.x, proj, N, g.steps, kLstmPersistentMmaMaxBatch)) {
    looped = seq_bwd_persistent(g, mode.tf32);
  }
  const at::Tensor prev = !looped || g.packed ? previous_rows(g.steps, total, g.x.device()) : at::Tensor();
  if (!looped) {
    seq_bwd_per_step(g, at::cat({g.c_all, g.c0}).index_select(0, prev));
    if (has_bias) g.db = g.dgates.sum(0);
  }
  return {at::mm(g.dgates, w_ih).reshape(x_in.sizes()),
          g.dh_state,
          g.dc_state,
          at::mm(g.dgates.t(), g.x),
          grad_w_hh(g, prev),
          g.db,
          proj ? at::mm(g.dh_tot.t(), g.h_pre) : at::empty({0}, opts)};
}

void register_impls(torch::Library& m) {
  m.impl("lstm_cell_fwd", &cell_fwd);
  m.impl("lstm_cell_bwd", &cell_bwd);
  m.impl("lstm_seq_fwd", &seq_fwd);
  m.impl("lstm_seq_bwd", &seq_bwd);
}

}  // namespace

PYATTN_IMPL_CPU_AND_CUDA(register_impls)
TORCH_LIBRARY_IMPL(pyattn, CPU, m) { m.impl("lstm_cell_pack", &cell_pack); }  // for the fp32 CPU GEMM only

}  // namespace pyattn
