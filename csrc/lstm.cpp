// torch glue for the LSTM ops: argument checks, the GEMMs, the time loop, and the fused
// pointwise kernels (kernels/cpu/lstm_body.h) for everything elementwise.
//
// The GEMMs are arranged so that only the recurrent product is per step: the input
// product of every step is one GEMM before the loop, and the weight gradients are GEMMs
// over all steps after the backward loop; those big ones go through ATen (MKL / oneDNN
// on the CPU, cuBLAS on the GPU). The per-step recurrent product:
//   - fp32 on the CPU without a projection: our packed GEMM (kernels/cpu/packed_gemm.h)
//     on W_hh packed once per call, fused with the pointwise update, the whole time loop
//     in one kernel call (lstm_seq_fwd_cpu / _bwd_cpu). The cell packs [W_ih | W_hh] per
//     call, or takes them packed (lstm_cell_pack; nn.LSTMCell keeps a packed copy).
//   - CUDA without a projection and with at most kLstmPersistentMaxBatch (8) rows: one
//     persistent kernel for the whole loop (kernels/cuda/lstm_persistent.cu), which
//     keeps W_hh in shared memory, when the device can hold all its blocks at once;
//   - otherwise (CPU fp64 / bf16, projections, CUDA batches past 8): at::addmm_ per
//     step and the pointwise kernels.
//
// Shapes (H hidden, P = proj_size or H, C input, N batch, `total` rows of x):
//   x [T, N, C] (total = T·N) or, with batch_sizes, packed [total, C] (PackedSequence.data)
//   h0 [N, P], c0 [N, H], w_ih [4H, C], w_hh [4H, P], b_ih / b_hh [4H], w_hr [P, H]
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "dispatch.h"
#include "pyattn/lstm.h"

namespace pyattn {
namespace {

constexpr const char* kCell = "lstm_cell";
constexpr const char* kSeq = "lstm_seq";

// Last-dim stride 1 (what the kernels need); copies only otherwise.
at::Tensor rows_unit(const at::Tensor& t) { return t.size(-1) > 1 && t.stride(-1) != 1 ? t.contiguous() : t; }

void check_like(const char* op, const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), ", expected ",
              ref_name, "'s dtype ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device());
}

void check_shape(const char* op, const at::Tensor& t, const char* name, at::IntArrayRef want, const char* what) {
  TORCH_CHECK(t.sizes() == want, op, ": ", name, " has shape ", t.sizes(), ", expected ", want, " ", what);
}

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
  check_like(op, w_ih, "w_ih", x, "x");
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == 4 * H, op, ": w_hh has shape ", w_hh.sizes(), ", expected [", 4 * H,
              ", hidden_size or proj_size]");
  check_like(op, w_hh, "w_hh", x, "x");
  const int64_t P = w_hh.size(1);
  if (w_hr.has_value()) {
    check_shape(op, *w_hr, "w_hr", {P, H}, "[proj_size, hidden_size]");
    check_like(op, *w_hr, "w_hr", x, "x");
    TORCH_CHECK(P < H, op, ": proj_size ", P, " must be smaller than hidden_size ", H);
  } else {
    TORCH_CHECK(P == H, op, ": w_hh has shape ", w_hh.sizes(), ", expected [", 4 * H, ", ", H,
                "] (no w_hr, so h has hidden_size features)");
  }
  for (const auto* b : {&b_ih, &b_hh}) {
    if (!b->has_value()) continue;
    const char* name = b == &b_ih ? "b_ih" : "b_hh";
    check_shape(op, **b, name, {4 * H}, "[4*hidden_size]");
    check_like(op, **b, name, x, "x");
  }
  return {H, P};
}

const float* f32_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// b_ih + b_hh (either may be missing; undefined without both), for the fused loop.
at::Tensor bias_sum(const at::Tensor& b_ih, const at::Tensor& b_hh) {
  if (b_ih.defined() && b_hh.defined()) return b_ih + b_hh;
  return b_ih.defined() ? b_ih.contiguous() : b_hh.defined() ? b_hh.contiguous() : at::Tensor();
}

// The fused fp32 loop applies (see the top of the file).
bool fused_cpu(const at::Tensor& x, bool proj) { return x.is_cpu() && x.scalar_type() == at::kFloat && !proj; }

// Workers for the fused loop: torch's threads, one when already inside a parallel region.
int loop_threads() { return at::in_parallel_region() ? 1 : at::get_num_threads(); }

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

// Runs the pointwise forward on `n` rows. act may be gates itself; c_out may be c.
void pointwise_fwd(const char* op, const at::Tensor& gates, const at::Tensor& act, const at::Tensor& c,
                   const at::Tensor& c_out, const at::Tensor& h_out, const at::Tensor& b_ih, const at::Tensor& b_hh) {
  LstmFwdParams p{};
  p.gates = gates.data_ptr();
  p.gates_stride = gates.stride(0);
  p.bias[0] = b_ih.defined() ? b_ih.data_ptr() : nullptr;
  p.bias[1] = b_hh.defined() ? b_hh.data_ptr() : nullptr;
  p.act = act.data_ptr();
  p.act_stride = act.stride(0);
  p.c = c.data_ptr();
  p.c_stride = c.stride(0);
  p.c_out = c_out.data_ptr();
  p.c_out_stride = c_out.stride(0);
  p.h_out = h_out.data_ptr();
  p.h_out_stride = h_out.stride(0);
  p.dtype = to_dtype(gates, op, "gates");
  p.n = gates.size(0);
  p.hidden = c.size(1);
  if (p.n == 0) return;
  run_kernel(gates, op, p, &lstm_fwd_cpu, PYATTN_CUDA_LAUNCHER(lstm_fwd_cuda));
}

// Pointwise backward; dh2 and dc may be undefined; dc_out may be dc.
void pointwise_bwd(const char* op, const at::Tensor& dh, const at::Tensor& dh2, const at::Tensor& dc,
                   const at::Tensor& act, const at::Tensor& c, const at::Tensor& c_new, const at::Tensor& dgates,
                   const at::Tensor& dc_out) {
  LstmBwdParams p{};
  p.dh = dh.data_ptr();
  p.dh_stride = dh.stride(0);
  p.dh2 = dh2.defined() ? dh2.data_ptr() : nullptr;
  p.dh2_stride = dh2.defined() ? dh2.stride(0) : 0;
  p.dc = dc.defined() ? dc.data_ptr() : nullptr;
  p.dc_stride = dc.defined() ? dc.stride(0) : 0;
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
  p.dtype = to_dtype(act, op, "act");
  p.n = act.size(0);
  p.hidden = c.size(1);
  if (p.n == 0) return;
  run_kernel(act, op, p, &lstm_bwd_cpu, PYATTN_CUDA_LAUNCHER(lstm_bwd_cuda));
}

at::Tensor opt_or_undef(const std::optional<at::Tensor>& t) { return t.has_value() ? rows_unit(*t) : at::Tensor(); }

// ------------------------------------------------------------------------------ cell

std::tuple<at::Tensor, at::Tensor, at::Tensor> cell_fwd(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c_in,
                                                        const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                        const std::optional<at::Tensor>& b_ih,
                                                        const std::optional<at::Tensor>& b_hh,
                                                        const std::optional<at::Tensor>& w_packed) {
  TORCH_CHECK(x.dim() == 2, kCell, ": x has ", x.dim(), " dims, expected 2 (batch, input_size)");
  const Dims d = check_weights(kCell, x, x.size(1), w_ih, w_hh, b_ih, b_hh, std::nullopt);
  const int64_t N = x.size(0);
  check_shape(kCell, h, "h", {N, d.hidden}, "(batch, hidden_size)");
  check_like(kCell, h, "h", x, "x");
  check_shape(kCell, c_in, "c", {N, d.hidden}, "(batch, hidden_size)");
  check_like(kCell, c_in, "c", x, "x");
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
    const at::Tensor xr = rows_unit(x), hr = rows_unit(h), cr = rows_unit(c_in);
    const at::Tensor bias = bias_sum(opt_or_undef(b_ih), opt_or_undef(b_hh));
    at::Tensor act = at::empty({N, 4 * H}, x.options());
    const LstmStep step{0, N};
    LstmSeqFwdParams p{};
    p.x = xr.data_ptr<float>();
    p.x_stride = xr.stride(0);
    p.in_features = C;
    p.w_packed = packed.data_ptr<float>();
    p.bias = f32_or_null(bias);
    p.act = act.data_ptr<float>();
    p.c_all = c_new.data_ptr<float>();
    p.y = h_new.data_ptr<float>();
    p.h0 = hr.data_ptr<float>();
    p.c0 = cr.data_ptr<float>();
    p.h0_stride = hr.stride(0);
    p.c0_stride = cr.stride(0);
    p.steps = &step;
    p.nsteps = N > 0 ? 1 : 0;
    p.hidden = H;
    p.threads = loop_threads();
    lstm_seq_fwd_cpu(p, &torch_parallel_for);
    return {h_new, c_new, act};
  }
  at::Tensor gates = at::mm(x, w_ih.t());  // [N, 4H]; becomes the activations in place
  gates.addmm_(h, w_hh.t());
  pointwise_fwd(kCell, gates, gates, rows_unit(c_in), c_new, h_new, opt_or_undef(b_ih), opt_or_undef(b_hh));
  return {h_new, c_new, gates};
}

// [W_ih | W_hh] packed for lstm_cell_fwd's w_packed (fp32, CPU).
at::Tensor cell_pack(const at::Tensor& w_ih, const at::Tensor& w_hh) {
  constexpr const char* op = "lstm_cell_pack";
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0, op, ": w_ih has shape ", w_ih.sizes(),
              ", expected [4*hidden_size, input_size]");
  const int64_t H = w_ih.size(0) / 4;
  check_shape(op, w_hh, "w_hh", {4 * H, H}, "[4*hidden_size, hidden_size]");
  TORCH_CHECK(w_ih.scalar_type() == at::kFloat && w_ih.is_cpu(), op, ": w_ih is ", w_ih.scalar_type(), " on ",
              w_ih.device(), "; packed weights are for float32 on the CPU");
  check_like(op, w_hh, "w_hh", w_ih, "w_ih");
  return pack_gates(w_ih, w_hh);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> cell_bwd(
    const std::optional<at::Tensor>& dh_in, const std::optional<at::Tensor>& dc_in, const at::Tensor& x,
    const at::Tensor& h, const at::Tensor& c, const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& act,
    const at::Tensor& c_new, bool has_bias) {
  constexpr const char* op = "lstm_cell backward";
  TORCH_CHECK(x.dim() == 2, op, ": x has ", x.dim(), " dims, expected 2");
  const Dims d = check_weights(op, x, x.size(1), w_ih, w_hh, std::nullopt, std::nullopt, std::nullopt);
  const int64_t N = x.size(0), H = d.hidden;
  check_shape(op, h, "h", {N, H}, "(batch, hidden_size)");
  check_shape(op, c, "c", {N, H}, "(batch, hidden_size)");
  check_shape(op, act, "act", {N, 4 * H}, "(batch, 4*hidden_size)");
  check_shape(op, c_new, "c_new", {N, H}, "(batch, hidden_size)");
  check_like(op, h, "h", x, "x");
  check_like(op, c, "c", x, "x");
  check_like(op, act, "act", x, "x");
  check_like(op, c_new, "c_new", x, "x");
  at::Tensor dh = dh_in.has_value() ? rows_unit(*dh_in) : at::zeros({N, H}, x.options());
  check_shape(op, dh, "dh", {N, H}, "(batch, hidden_size)");
  check_like(op, dh, "dh", x, "x");
  at::Tensor dc;
  if (dc_in.has_value()) {
    dc = rows_unit(*dc_in);
    check_shape(op, dc, "dc", {N, H}, "(batch, hidden_size)");
    check_like(op, dc, "dc", x, "x");
  }
  at::Tensor dgates = at::empty({N, 4 * H}, x.options());
  at::Tensor dc_prev = at::empty({N, H}, x.options());
  pointwise_bwd(op, dh, at::Tensor(), dc, rows_unit(act), rows_unit(c), rows_unit(c_new), dgates, dc_prev);
  at::Tensor db = has_bias ? dgates.sum(0) : at::empty({0}, x.options());
  return {at::mm(dgates, w_ih), at::mm(dgates, w_hh), dc_prev, at::mm(dgates.t(), x), at::mm(dgates.t(), h), db};
}

// -------------------------------------------------------------------------- sequence

struct Step {
  int64_t off, rows;
};

// Whether the persistent CUDA loop may take this sequence (it may still decline, see
// lstm_seq_fwd_persistent_cuda); x decides the device. PYATTN_LSTM_PERSISTENT=0 in the
// environment turns it off (read once), to compare with the per-step loop.
bool persistent_cuda(const at::Tensor& x, bool proj, int64_t batch, const std::vector<Step>& steps) {
  static const bool enabled = [] {
    const char* e = std::getenv("PYATTN_LSTM_PERSISTENT");
    return e == nullptr || std::string(e) != "0";
  }();
  return enabled && x.is_cuda() && !proj && !steps.empty() && batch <= kLstmPersistentMaxBatch;
}

// A PackedSequence's steps as the kernels' LstmStep array on x's device: int64
// [nsteps, 2] (off, rows). A dense sequence needs none (the kernel derives its steps), so
// it makes no host-to-device copy.
at::Tensor steps_on_device(const std::vector<Step>& steps, const at::Tensor& x) {
  static_assert(sizeof(Step) == sizeof(LstmStep), "Step and LstmStep share a layout");
  at::Tensor t = at::empty({int64_t(steps.size()), 2}, at::TensorOptions().dtype(at::kLong));
  std::copy_n(reinterpret_cast<const int64_t*>(steps.data()), 2 * steps.size(), t.data_ptr<int64_t>());
  return t.to(x.device());
}

// Fills what both persistent kernels' params share: the steps (a device array only for
// a PackedSequence), the shape, a counter for the grid barrier, the dtype. Returns the
// device tensors behind them, to be held until the launch is queued.
template <class Params>
std::vector<at::Tensor> set_loop(Params& p, const char* op, const at::Tensor& x, const std::vector<Step>& steps,
                                 bool packed, bool reverse, int64_t batch, int64_t hidden) {
  at::Tensor dev_steps = packed ? steps_on_device(steps, x) : at::Tensor();
  at::Tensor barrier = at::empty({1}, x.options().dtype(at::kInt));  // zeroed by the launch
  p.steps = packed ? static_cast<const LstmStep*>(dev_steps.data_ptr()) : nullptr;
  p.reverse = reverse;
  p.nsteps = int64_t(steps.size());
  p.batch = batch;
  p.hidden = hidden;
  p.barrier = static_cast<unsigned*>(barrier.data_ptr());
  p.dtype = to_dtype(x, op, "x");
  return {dev_steps, barrier};
}

// The steps in processing order (reverse: t = T-1 first). Checks batch_sizes.
std::vector<Step> make_steps(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& batch_sizes,
                             int64_t N, bool reverse) {
  std::vector<Step> steps;
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> seq_fwd(
    const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& c0_in, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih_in, const std::optional<at::Tensor>& b_hh_in,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& batch_sizes, bool reverse,
    bool need_backward) {
  const bool packed = batch_sizes.has_value();
  TORCH_CHECK(x_in.dim() == (packed ? 2 : 3), kSeq, ": x has ", x_in.dim(), " dims, expected ",
              packed ? "2 (sum(batch_sizes), input_size) with batch_sizes" : "3 (seq_len, batch, input_size)");
  const Dims d = check_weights(kSeq, x_in, x_in.size(-1), w_ih, w_hh, b_ih_in, b_hh_in, w_hr);
  const int64_t H = d.hidden, P = d.proj;
  TORCH_CHECK(h0_in.dim() == 2, kSeq, ": h0 has shape ", h0_in.sizes(), ", expected (batch, ", P, ")");
  const int64_t N = h0_in.size(0);
  if (!packed)
    TORCH_CHECK(N == x_in.size(1), kSeq, ": h0 has batch size ", N, " but x has batch size ", x_in.size(1));
  check_shape(kSeq, h0_in, "h0", {N, P}, "(batch, proj_size or hidden_size)");
  check_like(kSeq, h0_in, "h0", x_in, "x");
  check_shape(kSeq, c0_in, "c0", {N, H}, "(batch, hidden_size)");
  check_like(kSeq, c0_in, "c0", x_in, "x");
  const std::vector<Step> steps = make_steps(kSeq, x_in, batch_sizes, N, reverse);

  const auto opts = x_in.options();
  const int64_t total = packed ? x_in.size(0) : x_in.size(0) * N;
  const at::Tensor x = x_in.reshape({total, x_in.size(-1)});
  const at::Tensor h0 = rows_unit(h0_in), c0 = rows_unit(c0_in);
  const at::Tensor b_ih = opt_or_undef(b_ih_in), b_hh = opt_or_undef(b_hh_in);
  const bool proj = w_hr.has_value();

  // Every step's input product (ATen), then, in place, the activations. The fused loop
  // with a batch of 16 or more does the input product per step itself (fuse_x).
  // Without backward (inference) the fused loop keeps act and c in per-step scratch
  // (LstmSeqFwdParams::scratch): no [total, ·] buffers to fault in and write back.
  const bool fuse_x = fused_cpu(x, proj) && fuse_input(N, x.size(1), H);
  const bool scratch = !need_backward && fused_cpu(x, proj);
  int64_t nmax = 0;
  for (const Step& st : steps) nmax = std::max(nmax, st.rows);
  at::Tensor act = fuse_x ? at::empty({scratch ? nmax : total, 4 * H}, opts) : at::mm(x, w_ih.t());
  at::Tensor c_all = at::empty({scratch ? 2 * nmax : total, H}, opts);
  at::Tensor y = at::empty({total, P}, opts);
  at::Tensor h_pre = proj ? at::empty({total, H}, opts) : at::empty({0}, opts);
  at::Tensor h_n = at::empty({N, P}, opts), c_n = at::empty({N, H}, opts);
  const auto outputs = [&]() -> std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> {
    // What backward would need is not returned (distinct empty tensors: outputs must not alias).
    const auto saved = [&](const at::Tensor& t) { return need_backward ? t : at::empty({0}, opts); };
    return {y.reshape(packed ? at::IntArrayRef{total, P} : at::IntArrayRef{x_in.size(0), N, P}), h_n, c_n,
            saved(act), saved(c_all), saved(h_pre)};
  };
  if (steps.empty()) {  // no step: the state passes through
    h_n.copy_(h0);
    c_n.copy_(c0);
    return outputs();
  }
  if (fused_cpu(x, proj)) {
    const at::Tensor xr = rows_unit(x);
    const at::Tensor packed = pack_gates(fuse_x ? w_ih : at::Tensor(), w_hh);
    std::vector<LstmStep> st;
    for (const Step& s : steps) st.push_back({s.off, s.rows});
    const at::Tensor bias = bias_sum(b_ih, b_hh);
    LstmSeqFwdParams p{};
    p.w_packed = packed.data_ptr<float>();
    p.bias = f32_or_null(bias);
    if (fuse_x) {
      p.x = xr.data_ptr<float>();
      p.x_stride = xr.stride(0);
      p.in_features = xr.size(1);
    }
    p.act = act.data_ptr<float>();
    p.c_all = c_all.data_ptr<float>();
    p.scratch = scratch;
    p.y = y.data_ptr<float>();
    p.h0 = h0.data_ptr<float>();
    p.c0 = c0.data_ptr<float>();
    p.h0_stride = h0.stride(0);
    p.c0_stride = c0.stride(0);
    p.h_n = h_n.data_ptr<float>();
    p.c_n = c_n.data_ptr<float>();
    p.steps = st.data();
    p.nsteps = int64_t(st.size());
    p.hidden = H;
    p.threads = loop_threads();
    lstm_seq_fwd_cpu(p, &torch_parallel_for);
    return outputs();
  }
  if (persistent_cuda(x, proj, N, steps)) {
    const at::Tensor w = w_hh.contiguous(), h0c = h0.contiguous(), c0c = c0.contiguous();
    LstmSeqCudaFwdParams p{};
    const std::vector<at::Tensor> held = set_loop(p, kSeq, x, steps, packed, reverse, N, H);
    p.w_hh = w.data_ptr();
    p.bias[0] = b_ih.defined() ? b_ih.data_ptr() : nullptr;
    p.bias[1] = b_hh.defined() ? b_hh.data_ptr() : nullptr;
    p.act = act.data_ptr();
    p.c_all = c_all.data_ptr();
    p.y = y.data_ptr();
    p.h0 = h0c.data_ptr();
    p.c0 = c0c.data_ptr();
    p.h_n = h_n.data_ptr();
    p.c_n = c_n.data_ptr();
    if (try_cuda_kernel(x, p, PYATTN_CUDA_LAUNCHER(lstm_seq_fwd_persistent_cuda))) return outputs();
  }
  at::Tensor hbuf, cbuf;  // previous state assembled from two sources (reverse, packed)
  const at::Tensor w_hh_t = w_hh.t(), w_hr_t = proj ? w_hr->t() : at::Tensor();

  for (size_t s = 0; s < steps.size(); ++s) {
    const auto [off, n] = steps[s];
    // The previous h and c of rows [0, n): the previous step's outputs for the rows it
    // had, h0 / c0 for rows starting now.
    at::Tensor h_prev, c_prev;
    if (s == 0) {
      h_prev = h0.narrow(0, 0, n);
      c_prev = c0.narrow(0, 0, n);
    } else if (n <= steps[s - 1].rows) {
      h_prev = y.narrow(0, steps[s - 1].off, n);
      c_prev = c_all.narrow(0, steps[s - 1].off, n);
    } else {
      const int64_t pn = steps[s - 1].rows, poff = steps[s - 1].off;
      if (!hbuf.defined()) {
        hbuf = at::empty({N, P}, opts);
        cbuf = at::empty({N, H}, opts);
      }
      hbuf.narrow(0, 0, pn).copy_(y.narrow(0, poff, pn));
      hbuf.narrow(0, pn, n - pn).copy_(h0.narrow(0, pn, n - pn));
      cbuf.narrow(0, 0, pn).copy_(c_all.narrow(0, poff, pn));
      cbuf.narrow(0, pn, n - pn).copy_(c0.narrow(0, pn, n - pn));
      h_prev = hbuf.narrow(0, 0, n);
      c_prev = cbuf.narrow(0, 0, n);
    }
    at::Tensor gates = act.narrow(0, off, n);
    gates.addmm_(h_prev, w_hh_t);
    at::Tensor y_s = y.narrow(0, off, n), c_s = c_all.narrow(0, off, n);
    pointwise_fwd(kSeq, gates, gates, c_prev, c_s, proj ? h_pre.narrow(0, off, n) : y_s, b_ih, b_hh);
    if (proj) at::mm_out(y_s, h_pre.narrow(0, off, n), w_hr_t);
    // Rows [next n, n) end here: their final state.
    const int64_t nn = s + 1 < steps.size() ? std::min(steps[s + 1].rows, n) : 0;
    if (nn < n) {
      h_n.narrow(0, nn, n - nn).copy_(y_s.narrow(0, nn, n - nn));
      c_n.narrow(0, nn, n - nn).copy_(c_s.narrow(0, nn, n - nn));
    }
  }
  return outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> seq_bwd(
    const std::optional<at::Tensor>& dy_in, const std::optional<at::Tensor>& dh_n_in,
    const std::optional<at::Tensor>& dc_n_in, const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& c0_in,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr, const at::Tensor& y_in,
    const at::Tensor& act_in, const at::Tensor& c_all_in, const at::Tensor& h_pre_in,
    const std::optional<at::Tensor>& batch_sizes, bool reverse, bool has_bias) {
  constexpr const char* op = "lstm_seq backward";
  const bool packed = batch_sizes.has_value();
  TORCH_CHECK(x_in.dim() == (packed ? 2 : 3), op, ": x has ", x_in.dim(), " dims, expected ", packed ? 2 : 3);
  const Dims d = check_weights(op, x_in, x_in.size(-1), w_ih, w_hh, std::nullopt, std::nullopt, w_hr);
  const int64_t H = d.hidden, P = d.proj, N = h0_in.size(0);
  const int64_t total = packed ? x_in.size(0) : x_in.size(0) * N;
  const bool proj = w_hr.has_value();
  check_shape(op, h0_in, "h0", {N, P}, "(batch, proj_size or hidden_size)");
  check_shape(op, c0_in, "c0", {N, H}, "(batch, hidden_size)");
  TORCH_CHECK(y_in.numel() == total * P, op, ": y has shape ", y_in.sizes(), ", expected ", total, " rows of ", P);
  check_shape(op, act_in, "act", {total, 4 * H}, "(rows, 4*hidden_size)");
  check_shape(op, c_all_in, "c_all", {total, H}, "(rows, hidden_size)");
  check_shape(op, h_pre_in, "h_pre", proj ? at::IntArrayRef{total, H} : at::IntArrayRef{0}, "(rows, hidden_size)");
  check_like(op, h0_in, "h0", x_in, "x");
  check_like(op, c0_in, "c0", x_in, "x");
  check_like(op, y_in, "y", x_in, "x");
  check_like(op, act_in, "act", x_in, "x");
  check_like(op, c_all_in, "c_all", x_in, "x");
  check_like(op, h_pre_in, "h_pre", x_in, "x");
  const std::vector<Step> steps = make_steps(op, x_in, batch_sizes, N, reverse);

  const auto opts = x_in.options();
  const at::Tensor x = x_in.reshape({total, x_in.size(-1)});
  const at::Tensor y = y_in.reshape({total, P}).contiguous(), act = act_in.contiguous(), c_all = c_all_in.contiguous();
  const at::Tensor h0 = h0_in.contiguous(), c0 = c0_in.contiguous();
  at::Tensor dy;
  if (dy_in.has_value()) {
    TORCH_CHECK(dy_in->numel() == total * P, op, ": dy has shape ", dy_in->sizes(), ", expected y's ", y_in.sizes());
    check_like(op, *dy_in, "dy", x_in, "x");
    dy = dy_in->reshape({total, P}).contiguous();
  }
  // Running gradients of the state, [N, ·]: rows [0, n) feed the current step; the other
  // rows hold dh_n / dc_n (rows not started yet, backwards) or finished dh0 / dc0.
  at::Tensor dh_state = at::zeros({N, P}, opts), dc_state = at::zeros({N, H}, opts);
  if (dh_n_in.has_value()) {
    check_shape(op, *dh_n_in, "dh_n", {N, P}, "(batch, proj_size or hidden_size)");
    check_like(op, *dh_n_in, "dh_n", x_in, "x");
    dh_state.copy_(*dh_n_in);
  }
  if (dc_n_in.has_value()) {
    check_shape(op, *dc_n_in, "dc_n", {N, H}, "(batch, hidden_size)");
    check_like(op, *dc_n_in, "dc_n", x_in, "x");
    dc_state.copy_(*dc_n_in);
  }

  const bool fused = fused_cpu(x, proj) && !steps.empty();
  at::Tensor dgates = at::empty({total, 4 * H}, opts);
  at::Tensor dh_tot = proj ? at::empty({total, P}, opts) : at::Tensor();  // dy + recurrent dh, per step
  // Accumulated by the whole-loop kernels; the per-step loop sums dgates at the end.
  at::Tensor db = has_bias ? at::zeros({4 * H}, opts) : at::empty({0}, opts);
  bool persistent = false;  // the persistent CUDA loop ran
  if (persistent_cuda(x, proj, N, steps)) {
    const at::Tensor w = w_hh.contiguous();
    LstmSeqCudaBwdParams p{};
    const std::vector<at::Tensor> held = set_loop(p, op, x, steps, packed, reverse, N, H);
    p.w_hh = w.data_ptr();
    p.dy = dy.defined() ? dy.data_ptr() : nullptr;
    p.act = act.data_ptr();
    p.c_all = c_all.data_ptr();
    p.c0 = c0.data_ptr();
    p.dgates = dgates.data_ptr();
    p.dbias = has_bias ? db.data_ptr() : nullptr;
    p.dh_state = dh_state.data_ptr();
    p.dc_state = dc_state.data_ptr();
    persistent = try_cuda_kernel(x, p, PYATTN_CUDA_LAUNCHER(lstm_seq_bwd_persistent_cuda));
  }
  // Row r of step s came after row prev[r] of cat(outputs, initial state): the previous
  // step's row, or row total + b of the initial state for a row starting at s. Gathered
  // into [total, ·] copies only where needed: c_prev for the per-step loop (the
  // whole-loop kernels find each row's previous c themselves), h_prev for dW_hh with a
  // PackedSequence (without one, dW_hh comes from views of y and h0 below).
  const bool looped = fused || persistent;
  at::Tensor c_prev_all, h_prev_all;
  if (!looped || packed) {
    at::Tensor prev_idx = at::empty({total}, at::TensorOptions().dtype(at::kLong));
    int64_t* pi = prev_idx.data_ptr<int64_t>();
    for (size_t s = 0; s < steps.size(); ++s) {
      const auto [off, n] = steps[s];
      const int64_t pn = s ? steps[s - 1].rows : 0, poff = s ? steps[s - 1].off : 0;
      for (int64_t b = 0; b < n; ++b) pi[off + b] = b < pn ? poff + b : total + b;
    }
    prev_idx = prev_idx.to(x.device());
    if (!looped) c_prev_all = at::cat({c_all, c0}).index_select(0, prev_idx);  // [total, H]
    if (packed) h_prev_all = at::cat({y, h0}).index_select(0, prev_idx);      // [total, P]
  }

  if (fused) {
    at::Tensor packed_t = at::empty({lstm_packed_hh_t_size(H)}, opts);
    lstm_pack_hh_t_cpu(w_hh.data_ptr<float>(), w_hh.stride(0), w_hh.stride(1), H, packed_t.data_ptr<float>(),
                       &torch_parallel_for);
    std::vector<LstmStep> st;
    for (const Step& s : steps) st.push_back({s.off, s.rows});
    LstmSeqBwdParams p{};
    p.w_packed = packed_t.data_ptr<float>();
    p.dy = f32_or_null(dy);
    p.act = act.data_ptr<float>();
    p.c_all = c_all.data_ptr<float>();
    p.c0 = c0.data_ptr<float>();
    p.c0_stride = c0.stride(0);
    p.dgates = dgates.data_ptr<float>();
    p.dbias = has_bias ? db.data_ptr<float>() : nullptr;
    p.dh_state = dh_state.data_ptr<float>();
    p.dc_state = dc_state.data_ptr<float>();
    p.steps = st.data();
    p.nsteps = int64_t(st.size());
    p.hidden = H;
    p.threads = loop_threads();
    lstm_seq_bwd_cpu(p, &torch_parallel_for);
  }
  for (size_t k = looped ? 0 : steps.size(); k-- > 0;) {
    const auto [off, n] = steps[k];
    at::Tensor dhs = dh_state.narrow(0, 0, n), dcs = dc_state.narrow(0, 0, n);
    const at::Tensor dg = dgates.narrow(0, off, n);
    const at::Tensor dy_s = dy.defined() ? dy.narrow(0, off, n) : at::Tensor();
    if (proj) {
      at::Tensor dt = dh_tot.narrow(0, off, n);
      if (dy_s.defined()) at::add_out(dt, dy_s, dhs);
      else dt.copy_(dhs);
      pointwise_bwd(op, at::mm(dt, *w_hr), at::Tensor(), dcs, act.narrow(0, off, n), c_prev_all.narrow(0, off, n),
                    c_all.narrow(0, off, n), dg, dcs);
    } else {
      pointwise_bwd(op, dhs, dy_s, dcs, act.narrow(0, off, n), c_prev_all.narrow(0, off, n), c_all.narrow(0, off, n),
                    dg, dcs);
    }
    at::mm_out(dhs, dg, w_hh);  // the recurrent gradient for the previous step (or dh0)
  }
  if (has_bias && !looped) db = dgates.sum(0);
  at::Tensor dx = at::mm(dgates, w_ih).reshape(x_in.sizes());
  at::Tensor dgt = dgates.t();
  // dW_hh = Σ_rows dgates[row]ᵀ · (that row's previous h). Without a PackedSequence every
  // step has N rows: the previous h of the steps after the first is y shifted by one step
  // (forward: y's rows [0, total - N) go with dgates' rows [N, total); reverse: the other
  // way round), and of the first step (in processing order) it is h0.
  at::Tensor dw_hh;
  if (packed || steps.empty()) {
    dw_hh = at::mm(dgt, packed ? h_prev_all : y);
  } else {
    const int64_t first = reverse ? total - N : 0;  // dgates' rows of the first processed step
    dw_hh = at::mm(dgates.narrow(0, first, N).t(), h0);
    if (total > N) {
      const at::Tensor dg_rest = dgates.narrow(0, reverse ? 0 : N, total - N);
      dw_hh.addmm_(dg_rest.t(), y.narrow(0, reverse ? N : 0, total - N));
    }
  }
  return {dx,
          dh_state,
          dc_state,
          at::mm(dgt, x),
          dw_hh,
          db,
          proj ? at::mm(dh_tot.t(), h_pre_in) : at::empty({0}, opts)};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CPU, m) {
  m.impl("lstm_cell_pack", &cell_pack);
  m.impl("lstm_cell_fwd", &cell_fwd);
  m.impl("lstm_cell_bwd", &cell_bwd);
  m.impl("lstm_seq_fwd", &seq_fwd);
  m.impl("lstm_seq_bwd", &seq_bwd);
}

TORCH_LIBRARY_IMPL(pyattn, CUDA, m) {
  m.impl("lstm_cell_fwd", &cell_fwd);
  m.impl("lstm_cell_bwd", &cell_bwd);
  m.impl("lstm_seq_fwd", &seq_fwd);
  m.impl("lstm_seq_bwd", &seq_bwd);
}

}  // namespace pyattn
