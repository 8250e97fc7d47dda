// Every pyattn op schema, in one place, and the pybind11 module (build facts, ISA control).
// Implementations are registered per device next to each op's glue (csrc/<op>.cpp);
// fake (meta) implementations live in pyattn/_ops.py.
#include <torch/extension.h>
#include <torch/library.h>
#include <torch/version.h>

#include <string>

#include "pyattn/common.h"
#include "pyattn/softmax_math.h"

#ifdef PYATTN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

TORCH_LIBRARY(pyattn, m) {
  // y = softmax(scale * x + mask) over the last dim; mask: bool (True = masked out) or additive.
  m.def("scaled_masked_softmax_fwd(Tensor x, Tensor? mask, float scale, bool causal) -> Tensor");
  // The same into a caller's out (x's shape and dtype, contiguous, not overlapping x).
  m.def("scaled_masked_softmax_fwd_out(Tensor x, Tensor? mask, float scale, bool causal, Tensor(a!) out) -> ()");
  // dx = scale * y * (dy - sum(dy * y)), from the forward's output y.
  m.def("scaled_masked_softmax_bwd(Tensor y, Tensor dy, float scale) -> Tensor");
  // out = softmax(scale * q k^T + mask) v, fused; q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv];
  // mask: bool (True = attend) or additive in q's dtype; key_lengths [B]; causal (bottom_right aligns the
  // diagonal to the last key) and window bounds (-1 = unbounded); dropout_p > 0 drops probabilities with
  // the counter-based mask of dropout_seed (int64 [2], CPU; kernels/include/pyattn/dropout_math.h).
  // Returns (out, lse [B, Hq, Lq] fp32/fp64); lse is that of the un-dropped probabilities.
  m.def("attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? mask, Tensor? key_lengths, float scale, bool causal, "
        "bool bottom_right, int window_left, int window_right, float dropout_p=0.0, Tensor? dropout_seed=None) "
        "-> (Tensor, Tensor)");
  // (dq, dk, dv, dmask) from the forward's out and lse (and dlse, the gradient of lse, if any); dmask
  // [B, Hq, Lq, Lk] (dL/dscores) only when mask_grad, else an empty tensor. The forward's dropout
  // arguments regenerate its mask.
  m.def("attention_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? dlse, Tensor? mask, "
        "Tensor? key_lengths, float scale, bool causal, bool bottom_right, int window_left, int window_right, "
        "bool mask_grad, float dropout_p=0.0, Tensor? dropout_seed=None) -> (Tensor, Tensor, Tensor, Tensor)");
  // x [B, H, Lq, Lk] .* (the attention_fwd dropout mask of the same seed and p) / (1 - p): the
  // probabilities the fused forward used, for APIs that return attention weights.
  m.def("attention_dropout(Tensor x, Tensor dropout_seed, float dropout_p) -> Tensor");
  // Inference with the attention weights (nn.MultiheadAttention, need_weights; CPU, no backward):
  // (out [B, Hq, Lq, Dv], weights) with weights = softmax(scale * q k^T + mask), [B, Hq, Lq, Lk], or
  // their mean over the heads [B, Lq, Lk] when average_heads. mask as attention_fwd's.
  m.def("attention_with_weights(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale, bool average_heads) "
        "-> (Tensor, Tensor)");

  // LSTM, torch's gate order (i, f, g, o). See csrc/lstm.cpp for shapes. One step:
  // h', c' = cell(x, h, c); act holds the activated gates, saved for backward.
  // w_packed: [W_ih | W_hh] from lstm_cell_pack (fp32 CPU), so that a loop of steps with the same
  // weights packs them once; None packs per call. It must hold the w_ih and w_hh given.
  m.def("lstm_cell_fwd(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh,"
        " Tensor? w_packed=None) -> (Tensor h_new, Tensor c_new, Tensor act)");
  // The weights of lstm_cell_fwd packed for its fp32 CPU GEMM: a flat float32 tensor.
  m.def("lstm_cell_pack(Tensor w_ih, Tensor w_hh) -> Tensor");
  // Gradients of one step from dh' and dc' (None = 0); db is the gradient of b_ih and of
  // b_hh alike (empty when has_bias is false).
  m.def("lstm_cell_bwd(Tensor? dh, Tensor? dc, Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor act,"
        " Tensor c_new, bool has_bias) -> (Tensor dx, Tensor dh_prev, Tensor dc_prev, Tensor dw_ih, Tensor dw_hh,"
        " Tensor db)");
  // One layer, one direction, every step in one call. x: [T, N, C], or packed
  // [sum(batch_sizes), C] with batch_sizes (int64, CPU). act, c_all, h_pre (o*tanh(c),
  // only with w_hr; else empty) are saved for lstm_seq_bwd; need_backward=False (inference)
  // returns them empty and keeps them out of memory where it can.
  m.def("lstm_seq_fwd(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh,"
        " Tensor? w_hr, Tensor? batch_sizes, bool reverse, bool need_backward=True) -> (Tensor y, Tensor h_n,"
        " Tensor c_n, Tensor act, Tensor c_all, Tensor h_pre)");
  // Backward through time; dy, dh_n, dc_n may be None (= 0). db and dw_hr are empty when
  // there is no bias / projection.
  m.def("lstm_seq_bwd(Tensor? dy, Tensor? dh_n, Tensor? dc_n, Tensor x, Tensor h0, Tensor c0, Tensor w_ih,"
        " Tensor w_hh, Tensor? w_hr, Tensor y, Tensor act, Tensor c_all, Tensor h_pre, Tensor? batch_sizes,"
        " bool reverse, bool has_bias) -> (Tensor dx, Tensor dh0, Tensor dc0, Tensor dw_ih, Tensor dw_hh, Tensor db,"
        " Tensor dw_hr)");

  // out = (c or 0) + a [m, k] · b [n, k]ᵀ through pyattn's packed fp32 CPU GEMM, b packed per call:
  // the micro-kernel the LSTM ops run every step, as an op so that it is tested on its own.
  m.def("packed_gemm(Tensor a, Tensor b, Tensor? c) -> Tensor");

  // word2vec negative sampling: one batch of SGD updates, in place on both tables.
  // centers [n], contexts [n, window_slots] (-1 = empty); negatives explicit (skip-gram
  // [n, window_slots, k], CBOW [n, k]) or drawn with `seed` from `table`: token ids
  // [slots] drawn uniformly, or an alias table [vocab, 2] int64. max_streams (CUDA):
  // the most examples in flight, 0 = the kernel's choice (the CPU runs one per thread).
  // Returns the summed loss (float64 scalar on the CPU; 0 unless compute_loss).
  // window_batch (skip-gram): each center's window is one example, its contexts the
  // inputs and its center plus k negatives (negatives [n, k]) the targets, every logit
  // from the rows as they stand at the center (pWord2Vec's HogBatch; semantics in
  // pyattn/negative_sampling.h).
  m.def("sgns_update_(Tensor(a!) w_in, Tensor(b!) w_out, Tensor centers, Tensor contexts, Tensor? negatives, "
        "Tensor? table, int k, float lr, int seed, bool compute_loss=True, int max_streams=0, "
        "bool window_batch=False) -> Tensor");
  m.def("cbow_update_(Tensor(a!) w_in, Tensor(b!) w_out, Tensor centers, Tensor contexts, Tensor? negatives, "
        "Tensor? table, int k, float lr, int seed, bool compute_loss=True, int max_streams=0) -> Tensor");
  // The same updates with the windows read from a token stream, as word2vec.c walks its
  // text: centers tokens[start:stop]; center i's window slot window + d (0 < |d| <=
  // radius[i], radius in [0, window]) holds tokens[i + d] when sentence[i + d] ==
  // sentence[i], else is empty. tokens, sentence, radius: [N] ids. Equals the matrix form
  // with those contexts [stop - start, 2 * window + 1] (negatives drawn alike).
  m.def("sgns_stream_update_(Tensor(a!) w_in, Tensor(b!) w_out, Tensor tokens, Tensor sentence, Tensor radius, "
        "int start, int stop, int window, Tensor? negatives, Tensor? table, int k, float lr, int seed, "
        "bool compute_loss=True, int max_streams=0, bool window_batch=False) -> Tensor");
  m.def("cbow_stream_update_(Tensor(a!) w_in, Tensor(b!) w_out, Tensor tokens, Tensor sentence, Tensor radius, "
        "int start, int stop, int window, Tensor? negatives, Tensor? table, int k, float lr, int seed, "
        "bool compute_loss=True, int max_streams=0) -> Tensor");
  // word2vec's subsampling and shrunk windows for one epoch (pyattn/subsample_tokens.h):
  // writes the kept tokens of tokens [n] (int64), their sentence ids and window radii to
  // the first entries of kept_tokens, kept_sentence and radius ([>= n] int64 each, reused
  // across epochs) and returns how many were kept (int64 scalar). keep: [vocab] float64.
  // CPU only.
  m.def("subsample_tokens_(Tensor tokens, Tensor sentence, Tensor keep, int window, int seed, "
        "Tensor(a!) kept_tokens, Tensor(b!) kept_sentence, Tensor(c!) radius) -> Tensor");
  // loss[b] = -log s(w_out[contexts[b]] . w_in[centers[b]]) - sum_k log s(-w_out[negatives[b, k]] . w_in[centers[b]])
  m.def("sgns_loss_fwd(Tensor w_in, Tensor w_out, Tensor centers, Tensor contexts, Tensor negatives) -> Tensor");
  // (loss [b], d_h [b, dim], d_u [b, 1 + k, dim]): the loss and, from the same pass over
  // the rows, sgns_loss_bwd's row gradients for dloss = grad_scale everywhere (a training
  // step's upstream gradient is known before backward: 1/b for a mean, 1 for a sum).
  m.def("sgns_loss_fwd_grad(Tensor w_in, Tensor w_out, Tensor centers, Tensor contexts, Tensor negatives, "
        "float grad_scale) -> (Tensor, Tensor, Tensor)");
  // (d_h [b, dim], d_u [b, 1 + k, dim]): gradients for the rows w_in[centers[b]] and
  // w_out[contexts[b]], w_out[negatives[b, :]] (scatter-added by the caller).
  m.def("sgns_loss_bwd(Tensor dloss, Tensor w_in, Tensor w_out, Tensor centers, Tensor contexts, Tensor negatives) "
        "-> (Tensor, Tensor)");
}

namespace {

pybind11::dict build_info() {
  pybind11::dict d;
#ifdef PYATTN_WITH_CUDA
  d["cuda"] = true;
  d["cuda_runtime"] = CUDART_VERSION;
  d["cuda_archs"] = std::string(pyattn::cuda_arch_list());
#else
  d["cuda"] = false;
  d["cuda_runtime"] = pybind11::none();
  d["cuda_archs"] = std::string();
#endif
  d["cpu_isa"] = pyattn::cpu_isa_name(pyattn::cpu_isa());
  d["cpu_isa_best"] = pyattn::cpu_isa_name(pyattn::cpu_isa_best());
  d["torch_built_with"] = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                          std::to_string(TORCH_VERSION_PATCH);
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = "unknown";
#endif
#ifdef PYATTN_DEBUG
  d["debug"] = true;
#else
  d["debug"] = false;
#endif
  return d;
}

// Test hook: the host/device online-softmax arithmetic (pyattn/softmax_math.h) that the
// CUDA kernels use, run on the CPU so its rules are tested without a GPU. z is reduced
// in chunks of `chunk` logits with add(), and the chunks are merged last to first.
// Returns (max, sum of exp(z - max), inv_sum(sum)).
template <class Acc>
std::tuple<double, double, double> online_softmax_reduce(const std::vector<double>& z, int64_t chunk) {
  using St = pyattn::softmax_math::OnlineSoftmax<Acc>;
  if (chunk < 1) throw pybind11::value_error("online_softmax_reduce: chunk must be >= 1");
  std::vector<St> parts;
  for (size_t b = 0; b < z.size(); b += size_t(chunk)) {
    St st = St::empty();
    for (size_t j = b; j < std::min(z.size(), b + size_t(chunk)); ++j) st.add(Acc(z[j]));
    parts.push_back(st);
  }
  St total = St::empty();
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) total.merge(*it);
  return {double(total.m), double(total.s), double(pyattn::softmax_math::inv_sum(total.s))};
}

void set_cpu_isa(const std::string& name) {
  try {
    pyattn::set_cpu_isa(pyattn::parse_cpu_isa(name.c_str()));
  } catch (const std::invalid_argument& e) {
    throw pybind11::value_error(e.what());
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pyattn's compiled kernels; the ops are torch.ops.pyattn.*";
  m.def("build_info", &build_info, "How this extension was built and which CPU code path runs");
  m.def("set_cpu_isa", &set_cpu_isa, pybind11::arg("name"),
        "Use a lower CPU instruction set: 'generic', 'avx2', 'avx512' or 'avx512_bf16'");
  m.def("_online_softmax_reduce_f32", &online_softmax_reduce<float>, pybind11::arg("z"), pybind11::arg("chunk"));
  m.def("_online_softmax_reduce_f64", &online_softmax_reduce<double>, pybind11::arg("z"), pybind11::arg("chunk"));
}
