// torch glue for the negative-sampling ops: argument checks, index conversion, CPU
// and CUDA registration of the update ops and sgns_loss. The params structs are filled
// in negative_sampling_params.h.
#include <torch/library.h>

#include "checks.h"
#include "dispatch.h"
#include "negative_sampling_params.h"
#include "pyattn/negative_sampling.h"

namespace pyattn {
namespace {

// A [vocab, dim] fp32/fp64 table with unit column stride.
void check_table(const at::Tensor& w, const char* op, const char* what) {
  check_dims(w, 2, op, what, "(vocab, dim)");
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble, op, ": ", what, " has dtype ",
              w.scalar_type(), ", expected float32 or float64");
  TORCH_CHECK(w.size(1) <= 1 || w.stride(1) == 1, op, ": ", what, " must have unit stride along dim 1 (got stride ",
              w.stride(1), ")");
}

// The CUDA kernels' envelope: each warp keeps a row of w (dim elements) in shared memory.
void check_cuda_row_bytes(const at::Tensor& w, const char* op, const char* what) {
  if (!w.is_cuda()) return;
  TORCH_CHECK(w.size(1) * int64_t(w.element_size()) <= kNegSamplingCudaMaxRowBytes, op, ": ", what, " has dim ",
              w.size(1), ", the CUDA kernel supports dim * element size <= ", kNegSamplingCudaMaxRowBytes, " bytes");
}

// Ids (token ids by default) as a contiguous int64 tensor on `like`'s (w_in's) device.
at::Tensor ids(const at::Tensor& t, const at::Tensor& like, const char* op, const char* what,
               const char* kind = "token ids") {
  TORCH_CHECK(t.scalar_type() == at::kLong || t.scalar_type() == at::kInt, op, ": ", what, " has dtype ",
              t.scalar_type(), ", expected int64 or int32 ", kind);
  check_same_device(t, what, like, "w_in", op);
  return t.to(at::kLong).contiguous();
}

void raise_bad_index(const at::Tensor& bad, int64_t vocab, const char* op) {
  const int64_t id = bad.item<int64_t>();  // on CUDA: waits for the kernel
  TORCH_CHECK(id < 0, op, ": token id ", id, " is out of range for a vocabulary of ", vocab,
              " (ids in centers, contexts, negatives and the table must be below vocab; negative ids are skipped)");
}

// The table negatives are drawn from (checked), contiguous.
at::Tensor check_draw_table(const at::Tensor& table, const at::Tensor& w_in, const char* op) {
  const bool alias = table.dim() == 2;
  TORCH_CHECK((table.dim() == 1 || (alias && table.size(1) == 2)) && table.size(0) > 0, op, ": table has shape ",
              table.sizes(), ", expected (slots,) token ids or an alias table (vocab, 2) of (threshold, alias id) rows");
  TORCH_CHECK(table.size(0) < (int64_t(1) << 32), op, ": table has ", table.size(0), " rows, expected fewer than 2^32");
  TORCH_CHECK(table.scalar_type() == at::kLong || (!alias && table.scalar_type() == at::kInt), op,
              ": table has dtype ", table.scalar_type(), alias ? ", expected int64 for an alias table"
                                                               : ", expected int32 or int64");
  check_same_device(table, "table", w_in, "w_in", op);
  return table.contiguous();
}

void check_update_tables(const at::Tensor& w_in, const at::Tensor& w_out, const char* op) {
  check_table(w_in, op, "w_in");
  check_table(w_out, op, "w_out");
  check_same_as(w_out, "w_out", w_in, "w_in", op);
}

// What both forms of the update check and run alike: n examples' centers (checked ids)
// and contexts [n, slots] (undefined in the stream form, whose set_stream then points
// the params at the token stream). window_batch: skip-gram's window batch (never CBOW's).
template <class SetStream>
at::Tensor run_update(const char* op, bool cbow, bool window_batch, at::Tensor& w_in, at::Tensor& w_out,
                      const at::Tensor& centers, const at::Tensor& contexts, int64_t n, int64_t slots,
                      const std::optional<at::Tensor>& negatives_in, const std::optional<at::Tensor>& table_in,
                      int64_t k, double lr, int64_t seed, bool compute_loss, int64_t max_streams,
                      SetStream set_stream) {
  TORCH_CHECK(k >= 0, op, ": k (negatives per example) is ", k, ", expected >= 0");
  TORCH_CHECK(lr >= 0 && std::isfinite(lr), op, ": lr is ", lr, ", expected a finite value >= 0");
  TORCH_CHECK(max_streams >= 0, op, ": max_streams is ", max_streams, ", expected >= 0 (0: the kernel's choice)");
  at::Tensor negatives, table;
  if (negatives_in.has_value()) {
    TORCH_CHECK(!table_in.has_value(), op, ": give negatives or table, not both");
    negatives = ids(*negatives_in, w_in, op, "negatives");
    const bool per_center = cbow || window_batch;  // else one draw per (center, slot) pair
    const std::vector<int64_t> want = per_center ? std::vector<int64_t>{n, k} : std::vector<int64_t>{n, slots, k};
    check_shape(negatives, want, op, "negatives",
                cbow ? "(n, k)" : per_center ? "(n, k) with window_batch" : "(n, window_slots, k)");
  } else if (k > 0) {
    TORCH_CHECK(table_in.has_value(), op, ": k = ", k, " negatives need a table to draw from (or explicit negatives)");
    table = check_draw_table(*table_in, w_in, op);
  }
  at::Tensor loss = at::zeros({}, w_in.options().dtype(at::kDouble));
  at::Tensor bad = at::empty({1}, w_in.options().dtype(at::kLong));
  if (n == 0 || w_in.size(1) == 0) return loss;
  check_cuda_row_bytes(w_in, op, "w_in");
  TORCH_CHECK(!window_batch || !w_in.is_cuda() ||
                  slots * (k + 33) * int64_t(w_in.element_size()) + (slots + k + 1) * 8 <= kNegSamplingCudaMaxBatchBytes,
              op, ": window_batch with ", slots, " window slots and k = ", k,
              " is past the CUDA kernel's envelope, window_slots * (k + 33) * element size + "
              "(window_slots + k + 1) * 8 <= ", kNegSamplingCudaMaxBatchBytes, " bytes");
  NegSamplingUpdateParams p = make_negative_sampling_update_params(
      w_in, w_out, centers, contexts, negatives, table, k, uint64_t(seed), lr, cbow, compute_loss, loss, bad);
  set_stream(&p);
  p.window_batch = window_batch;
  p.max_streams = max_streams;
  run_kernel(w_in, op, p, &negative_sampling_update_cpu, PYATTN_CUDA_LAUNCHER(negative_sampling_update_cuda));
  raise_bad_index(bad, p.vocab, op);
  return loss;
}

// sgns_update_ (kCbow false) and cbow_update_ (through cbow_update, without window_batch).
template <bool kCbow>
at::Tensor update(at::Tensor& w_in, at::Tensor& w_out, const at::Tensor& centers_in, const at::Tensor& contexts_in,
                  const std::optional<at::Tensor>& negatives_in, const std::optional<at::Tensor>& table_in, int64_t k,
                  double lr, int64_t seed, bool compute_loss, int64_t max_streams, bool window_batch) {
  constexpr bool cbow = kCbow;
  const char* op = cbow ? "cbow_update_" : "sgns_update_";
  check_update_tables(w_in, w_out, op);
  check_dims(centers_in, 1, op, "centers", "(n)");
  TORCH_CHECK(contexts_in.dim() == 2 && contexts_in.size(0) == centers_in.size(0), op, ": contexts has shape ",
              contexts_in.sizes(), ", expected (n, window_slots) with n = ", centers_in.size(0));
  const at::Tensor centers = ids(centers_in, w_in, op, "centers");
  const at::Tensor contexts = ids(contexts_in, w_in, op, "contexts");
  return run_update(op, cbow, window_batch, w_in, w_out, centers, contexts, centers.size(0), contexts.size(1),
                    negatives_in, table_in, k, lr, seed, compute_loss, max_streams, [](NegSamplingUpdateParams*) {});
}

at::Tensor cbow_update(at::Tensor& w_in, at::Tensor& w_out, const at::Tensor& centers, const at::Tensor& contexts,
                       const std::optional<at::Tensor>& negatives, const std::optional<at::Tensor>& table, int64_t k,
                       double lr, int64_t seed, bool compute_loss, int64_t max_streams) {
  return update<true>(w_in, w_out, centers, contexts, negatives, table, k, lr, seed, compute_loss, max_streams, false);
}

// The stream form, sgns_stream_update_ (kCbow false) and cbow_stream_update_ (through
// cbow_stream_update): centers tokens[start:stop], their windows read from the stream in
// the kernel.
template <bool kCbow>
at::Tensor stream_update(at::Tensor& w_in, at::Tensor& w_out, const at::Tensor& tokens_in,
                         const at::Tensor& sentence_in, const at::Tensor& radius_in, int64_t start, int64_t stop,
                         int64_t window, const std::optional<at::Tensor>& negatives_in,
                         const std::optional<at::Tensor>& table_in, int64_t k, double lr, int64_t seed,
                         bool compute_loss, int64_t max_streams, bool window_batch) {
  constexpr bool cbow = kCbow;
  const char* op = cbow ? "cbow_stream_update_" : "sgns_stream_update_";
  check_update_tables(w_in, w_out, op);
  check_dims(tokens_in, 1, op, "tokens", "(N)");
  const int64_t len = tokens_in.size(0);
  check_shape(sentence_in, {len}, op, "sentence", "(N), tokens' shape");
  check_shape(radius_in, {len}, op, "radius", "(N), tokens' shape");
  TORCH_CHECK(window >= 1, op, ": window is ", window, ", expected >= 1");
  TORCH_CHECK(0 <= start && start <= stop && stop <= len, op, ": start, stop = ", start, ", ", stop,
              ", expected 0 <= start <= stop <= ", len, " (tokens' length)");
  const at::Tensor tokens = ids(tokens_in, w_in, op, "tokens");
  const at::Tensor sentence = ids(sentence_in, w_in, op, "sentence", "sentence ids");
  const at::Tensor radius = ids(radius_in, w_in, op, "radius", "radii");
  if (stop > start) {
    const auto [lo, hi] = at::aminmax(radius.slice(0, start, stop));
    const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
    TORCH_CHECK(lo_v >= 0 && hi_v <= window, op, ": radius[start:stop] holds values in [", lo_v, ", ", hi_v,
                "], expected them in [0, window] = [0, ", window, "]");
    // The tokens the block reads (the kernel reports ids >= vocab; a negative one would
    // read as an empty slot).
    const int64_t least = tokens.slice(0, std::max<int64_t>(0, start - window), std::min(len, stop + window))
                              .min().item<int64_t>();
    TORCH_CHECK(least >= 0, op, ": tokens holds the id ", least, " near [start, stop), expected ids >= 0");
  }
  return run_update(op, cbow, window_batch, w_in, w_out, tokens, at::Tensor(), stop - start, 2 * window + 1,
                    negatives_in, table_in, k, lr, seed, compute_loss, max_streams, [&](NegSamplingUpdateParams* p) {
                      set_token_stream(p, tokens, sentence, radius, start, stop, window);
                    });
}

at::Tensor cbow_stream_update(at::Tensor& w_in, at::Tensor& w_out, const at::Tensor& tokens,
                              const at::Tensor& sentence, const at::Tensor& radius, int64_t start, int64_t stop,
                              int64_t window, const std::optional<at::Tensor>& negatives,
                              const std::optional<at::Tensor>& table, int64_t k, double lr, int64_t seed,
                              bool compute_loss, int64_t max_streams) {
  return stream_update<true>(w_in, w_out, tokens, sentence, radius, start, stop, window, negatives, table, k, lr,
                             seed, compute_loss, max_streams, false);
}

// sgns_loss's inputs, checked, with the ids as int64.
struct LossInputs {
  at::Tensor w_in, w_out, centers, contexts, negatives;
  int64_t b, k, dim;

  // Runs the kernel with outputs as make_sgns_loss_params takes them; raises on a bad id.
  void run(const at::Tensor& loss, const at::Tensor& dloss, double grad_scale, const at::Tensor& d_h,
           const at::Tensor& d_u, const char* op) const {
    at::Tensor bad = at::full({1}, kSgnsLossNoBadId, w_in.options().dtype(at::kLong));
    const SgnsLossParams p =
        make_sgns_loss_params(w_in, w_out, centers, contexts, negatives, loss, dloss, grad_scale, d_h, d_u, bad);
    if (b > 0) run_kernel(w_in, op, p, &sgns_loss_cpu, PYATTN_CUDA_LAUNCHER(sgns_loss_cuda));
    const int64_t id = bad.item<int64_t>();  // on CUDA: waits for the kernel
    TORCH_CHECK(id == kSgnsLossNoBadId, op, ": token id ", id, " is out of range for a vocabulary of ", p.vocab,
                " (ids in centers, contexts and negatives must be in [0, vocab))");
  }
};

LossInputs loss_inputs(const at::Tensor& w_in, const at::Tensor& w_out, const at::Tensor& centers,
                       const at::Tensor& contexts, const at::Tensor& negatives, const char* op) {
  check_table(w_in, op, "input_vectors");
  check_table(w_out, op, "output_vectors");
  TORCH_CHECK(w_out.size(1) == w_in.size(1), op, ": output_vectors has dim ", w_out.size(1),
              ", expected input_vectors' ", w_in.size(1));
  check_like(w_out, "output_vectors", w_in, "input_vectors", op);
  check_dims(centers, 1, op, "centers", "(batch)");
  TORCH_CHECK(contexts.sizes() == centers.sizes(), op, ": contexts has shape ", contexts.sizes(),
              ", expected centers' shape ", centers.sizes());
  TORCH_CHECK(negatives.dim() == 2 && negatives.size(0) == centers.size(0), op, ": negatives has shape ",
              negatives.sizes(), ", expected (batch, k) with batch = ", centers.size(0));
  LossInputs in{w_in, w_out, ids(centers, w_in, op, "centers"), ids(contexts, w_in, op, "contexts"),
                ids(negatives, w_in, op, "negatives"), centers.size(0), negatives.size(1), w_in.size(1)};
  check_cuda_row_bytes(w_in, op, "input_vectors");
  return in;
}

at::Tensor loss_fwd(const at::Tensor& w_in, const at::Tensor& w_out, const at::Tensor& centers,
                    const at::Tensor& contexts, const at::Tensor& negatives) {
  constexpr const char* op = "sgns_loss";
  const LossInputs in = loss_inputs(w_in, w_out, centers, contexts, negatives, op);
  at::Tensor loss = at::empty({in.b}, w_in.options());
  in.run(loss, at::Tensor(), 0.0, at::Tensor(), at::Tensor(), op);
  return loss;
}

// The loss and, in the same pass over the rows, the row gradients of grad_scale * sum(loss).
std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_fwd_grad(const at::Tensor& w_in, const at::Tensor& w_out,
                                                             const at::Tensor& centers, const at::Tensor& contexts,
                                                             const at::Tensor& negatives, double grad_scale) {
  constexpr const char* op = "sgns_loss";
  const LossInputs in = loss_inputs(w_in, w_out, centers, contexts, negatives, op);
  TORCH_CHECK(std::isfinite(grad_scale), op, ": grad_scale is ", grad_scale, ", expected a finite value");
  at::Tensor loss = at::empty({in.b}, w_in.options());
  at::Tensor d_h = at::empty({in.b, in.dim}, w_in.options());
  at::Tensor d_u = at::empty({in.b, in.k + 1, in.dim}, w_in.options());
  in.run(loss, at::Tensor(), grad_scale, d_h, d_u, op);
  return {loss, d_h, d_u};
}

std::tuple<at::Tensor, at::Tensor> loss_bwd(const at::Tensor& dloss_in, const at::Tensor& w_in,
                                            const at::Tensor& w_out, const at::Tensor& centers,
                                            const at::Tensor& contexts, const at::Tensor& negatives) {
  constexpr const char* op = "sgns_loss backward";
  const LossInputs in = loss_inputs(w_in, w_out, centers, contexts, negatives, op);
  TORCH_CHECK(dloss_in.dim() == 1 && dloss_in.size(0) == in.b, op, ": dloss has shape ", dloss_in.sizes(),
              ", expected (", in.b, ")");
  const at::Tensor dloss = dloss_in.to(w_in.scalar_type()).contiguous();
  at::Tensor d_h = at::empty({in.b, in.dim}, w_in.options());
  at::Tensor d_u = at::empty({in.b, in.k + 1, in.dim}, w_in.options());
  in.run(at::Tensor(), dloss, 0.0, d_h, d_u, op);
  return {d_h, d_u};
}

void register_impls(torch::Library& m) {
  m.impl("sgns_update_", &update<false>);
  m.impl("cbow_update_", &cbow_update);
  m.impl("sgns_stream_update_", &stream_update<false>);
  m.impl("cbow_stream_update_", &cbow_stream_update);
  m.impl("sgns_loss_fwd", &loss_fwd);
  m.impl("sgns_loss_fwd_grad", &loss_fwd_grad);
  m.impl("sgns_loss_bwd", &loss_bwd);
}

}  // namespace

PYATTN_IMPL_CPU_AND_CUDA(register_impls)

}  // namespace pyattn
