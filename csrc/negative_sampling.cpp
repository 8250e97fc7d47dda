// torch glue for the negative-sampling ops: argument checks, index conversion, CPU
// and CUDA registration of the update ops and sgns_loss.
#include <torch/library.h>

#include "dispatch.h"
#include "pyattn/negative_sampling.h"

namespace pyattn {
namespace {

// A [vocab, dim] fp32/fp64 table with unit column stride.
void check_table(const at::Tensor& w, const char* op, const char* what) {
  TORCH_CHECK(w.dim() == 2, op, ": ", what, " has ", w.dim(), " dims, expected 2 (vocab, dim)");
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble, op, ": ", what, " has dtype ",
              w.scalar_type(), ", expected float32 or float64");
  TORCH_CHECK(w.size(1) <= 1 || w.stride(1) == 1, op, ": ", what, " must have unit stride along dim 1 (got stride ",
              w.stride(1), ")");
}

// Token ids as a contiguous int64 tensor on `like`'s device.
at::Tensor ids(const at::Tensor& t, const at::Tensor& like, const char* op, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kLong || t.scalar_type() == at::kInt, op, ": ", what, " has dtype ",
              t.scalar_type(), ", expected int64 or int32 token ids");
  TORCH_CHECK(t.device() == like.device(), op, ": ", what, " is on ", t.device(), " but w_in is on ", like.device());
  return t.to(at::kLong).contiguous();
}

void raise_bad_index(int64_t bad, int64_t vocab, const char* op) {
  TORCH_CHECK(bad < 0, op, ": token id ", bad, " is out of range for a vocabulary of ", vocab,
              " (ids in centers, contexts, negatives and the table must be in [0, vocab))");
}

at::Tensor update(bool cbow, at::Tensor& w_in, at::Tensor& w_out, const at::Tensor& centers_in,
                  const at::Tensor& contexts_in, const std::optional<at::Tensor>& negatives_in,
                  const std::optional<at::Tensor>& table_in, int64_t k, double lr, int64_t seed, bool compute_loss) {
  const char* op = cbow ? "cbow_update_" : "sgns_update_";
  check_table(w_in, op, "w_in");
  check_table(w_out, op, "w_out");
  TORCH_CHECK(w_out.sizes() == w_in.sizes(), op, ": w_out has shape ", w_out.sizes(), ", expected w_in's ", w_in.sizes());
  TORCH_CHECK(w_out.scalar_type() == w_in.scalar_type(), op, ": w_out has dtype ", w_out.scalar_type(),
              ", expected w_in's ", w_in.scalar_type());
  TORCH_CHECK(w_out.device() == w_in.device(), op, ": w_out is on ", w_out.device(), " but w_in is on ", w_in.device());
  TORCH_CHECK(centers_in.dim() == 1, op, ": centers has ", centers_in.dim(), " dims, expected 1 (n)");
  TORCH_CHECK(contexts_in.dim() == 2 && contexts_in.size(0) == centers_in.size(0), op, ": contexts has shape ",
              contexts_in.sizes(), ", expected (n, window_slots) with n = ", centers_in.size(0));
  TORCH_CHECK(k >= 0, op, ": k (negatives per example) is ", k, ", expected >= 0");
  TORCH_CHECK(lr >= 0 && std::isfinite(lr), op, ": lr is ", lr, ", expected a finite value >= 0");
  const at::Tensor centers = ids(centers_in, w_in, op, "centers");
  const at::Tensor contexts = ids(contexts_in, w_in, op, "contexts");
  at::Tensor negatives, table;
  const int64_t n = centers.size(0), slots = contexts.size(1);
  if (negatives_in.has_value()) {
    TORCH_CHECK(!table_in.has_value(), op, ": give negatives or table, not both");
    negatives = ids(*negatives_in, w_in, op, "negatives");
    const std::vector<int64_t> want = cbow ? std::vector<int64_t>{n, k} : std::vector<int64_t>{n, slots, k};
    TORCH_CHECK(negatives.sizes() == at::IntArrayRef(want), op, ": negatives has shape ", negatives.sizes(),
                ", expected ", at::IntArrayRef(want), cbow ? " (n, k)" : " (n, window_slots, k)");
  } else if (k > 0) {
    TORCH_CHECK(table_in.has_value(), op, ": k = ", k, " negatives need a table to draw from (or explicit negatives)");
    const bool alias = table_in->dim() == 2;
    TORCH_CHECK((table_in->dim() == 1 || (alias && table_in->size(1) == 2)) && table_in->size(0) > 0, op,
                ": table has shape ", table_in->sizes(),
                ", expected (slots,) token ids or an alias table (vocab, 2) of (threshold, alias id) rows");
    TORCH_CHECK(table_in->size(0) < (int64_t(1) << 32), op, ": table has ", table_in->size(0),
                " rows, expected fewer than 2^32");
    TORCH_CHECK(table_in->scalar_type() == at::kLong || (!alias && table_in->scalar_type() == at::kInt), op,
                ": table has dtype ", table_in->scalar_type(), alias ? ", expected int64 for an alias table"
                                                                      : ", expected int32 or int64");
    TORCH_CHECK(table_in->device() == w_in.device(), op, ": table is on ", table_in->device(), " but w_in is on ",
                w_in.device());
    table = table_in->contiguous();
  }
  at::Tensor loss = at::zeros({}, w_in.options().dtype(at::kDouble));
  at::Tensor bad = at::empty({1}, w_in.options().dtype(at::kLong));
  if (n == 0 || w_in.size(1) == 0) return loss;

  NegSamplingUpdateParams p{};
  p.w_in = w_in.data_ptr();
  p.w_in_stride = w_in.stride(0);
  p.w_out = w_out.data_ptr();
  p.w_out_stride = w_out.stride(0);
  p.dtype = to_dtype(w_in, op, "w_in");
  p.vocab = w_in.size(0);
  p.dim = w_in.size(1);
  p.centers = centers.data_ptr<int64_t>();
  p.contexts = contexts.data_ptr<int64_t>();
  p.n = n;
  p.window_slots = slots;
  p.negatives = negatives.defined() ? negatives.data_ptr<int64_t>() : nullptr;
  p.table = table.defined() ? table.data_ptr() : nullptr;
  p.table_kind = !table.defined() || table.dim() == 1
                     ? (table.defined() && table.scalar_type() == at::kLong ? TableKind::slots_int64 : TableKind::slots_int32)
                     : TableKind::alias;
  p.table_size = table.defined() ? table.size(0) : 0;
  p.k = k;
  p.seed = uint64_t(seed);
  p.lr = lr;
  p.cbow = cbow;
  p.compute_loss = compute_loss;
  p.loss = loss.data_ptr<double>();
  p.bad_index = bad.data_ptr<int64_t>();
  if (w_in.is_cuda())
    TORCH_CHECK(p.dim * int64_t(w_in.element_size()) <= kNegSamplingCudaMaxRowBytes, op, ": w_in has dim ", p.dim,
                ", the CUDA kernel supports dim * element size <= ", kNegSamplingCudaMaxRowBytes, " bytes");
  run_kernel(w_in, op, p, &negative_sampling_update_cpu, PYATTN_CUDA_LAUNCHER(negative_sampling_update_cuda));
  raise_bad_index(bad.item<int64_t>(), p.vocab, op);  // on CUDA: waits for the kernel
  return loss;
}

at::Tensor sgns_update(at::Tensor& w_in, at::Tensor& w_out, const at::Tensor& centers, const at::Tensor& contexts,
                       const std::optional<at::Tensor>& negatives, const std::optional<at::Tensor>& table, int64_t k,
                       double lr, int64_t seed, bool compute_loss) {
  return update(false, w_in, w_out, centers, contexts, negatives, table, k, lr, seed, compute_loss);
}

at::Tensor cbow_update(at::Tensor& w_in, at::Tensor& w_out, const at::Tensor& centers, const at::Tensor& contexts,
                       const std::optional<at::Tensor>& negatives, const std::optional<at::Tensor>& table, int64_t k,
                       double lr, int64_t seed, bool compute_loss) {
  return update(true, w_in, w_out, centers, contexts, negatives, table, k, lr, seed, compute_loss);
}

struct LossArgs {
  at::Tensor w_in, w_out, centers, contexts, negatives;
  SgnsLossParams p{};
};

LossArgs loss_args(const at::Tensor& w_in_t, const at::Tensor& w_out_t, const at::Tensor& centers_in,
                   const at::Tensor& contexts_in, const at::Tensor& negatives_in, const char* op) {
  LossArgs a;
  check_table(w_in_t, op, "input_vectors");
  check_table(w_out_t, op, "output_vectors");
  TORCH_CHECK(w_out_t.size(1) == w_in_t.size(1), op, ": output_vectors has dim ", w_out_t.size(1),
              ", expected input_vectors' ", w_in_t.size(1));
  TORCH_CHECK(w_out_t.scalar_type() == w_in_t.scalar_type(), op, ": output_vectors has dtype ", w_out_t.scalar_type(),
              ", expected input_vectors' ", w_in_t.scalar_type());
  TORCH_CHECK(w_out_t.device() == w_in_t.device(), op, ": output_vectors is on ", w_out_t.device(),
              " but input_vectors is on ", w_in_t.device());
  TORCH_CHECK(centers_in.dim() == 1, op, ": centers has ", centers_in.dim(), " dims, expected 1 (batch)");
  TORCH_CHECK(contexts_in.sizes() == centers_in.sizes(), op, ": contexts has shape ", contexts_in.sizes(),
              ", expected centers' shape ", centers_in.sizes());
  TORCH_CHECK(negatives_in.dim() == 2 && negatives_in.size(0) == centers_in.size(0), op, ": negatives has shape ",
              negatives_in.sizes(), ", expected (batch, k) with batch = ", centers_in.size(0));
  a.w_in = w_in_t;
  a.w_out = w_out_t;
  a.centers = ids(centers_in, w_in_t, op, "centers");
  a.contexts = ids(contexts_in, w_in_t, op, "contexts");
  a.negatives = ids(negatives_in, w_in_t, op, "negatives");
  SgnsLossParams& p = a.p;
  p.w_in = a.w_in.data_ptr();
  p.w_in_stride = a.w_in.stride(0);
  p.w_out = a.w_out.data_ptr();
  p.w_out_stride = a.w_out.stride(0);
  p.dtype = to_dtype(a.w_in, op, "input_vectors");
  p.vocab = std::min(a.w_in.size(0), a.w_out.size(0));
  p.dim = a.w_in.size(1);
  p.centers = a.centers.data_ptr<int64_t>();
  p.contexts = a.contexts.data_ptr<int64_t>();
  p.negatives = a.negatives.data_ptr<int64_t>();
  p.b = a.centers.size(0);
  p.k = a.negatives.size(1);
  if (w_in_t.is_cuda())
    TORCH_CHECK(p.dim * int64_t(w_in_t.element_size()) <= kNegSamplingCudaMaxRowBytes, op, ": dim ", p.dim,
                " is too large: the CUDA kernel supports dim * element size <= ", kNegSamplingCudaMaxRowBytes, " bytes");
  return a;
}

void run_loss(LossArgs& a, const char* op) {
  at::Tensor bad = at::full({1}, -1, a.w_in.options().dtype(at::kLong));
  a.p.bad_index = bad.data_ptr<int64_t>();
  if (a.p.b > 0) run_kernel(a.w_in, op, a.p, &sgns_loss_cpu, PYATTN_CUDA_LAUNCHER(sgns_loss_cuda));
  raise_bad_index(bad.item<int64_t>(), a.p.vocab, op);  // on CUDA: waits for the kernel
}

at::Tensor loss_fwd(const at::Tensor& w_in, const at::Tensor& w_out, const at::Tensor& centers,
                    const at::Tensor& contexts, const at::Tensor& negatives) {
  constexpr const char* op = "sgns_loss";
  LossArgs a = loss_args(w_in, w_out, centers, contexts, negatives, op);
  at::Tensor loss = at::empty({a.p.b}, w_in.options());
  a.p.loss = loss.data_ptr();
  run_loss(a, op);
  return loss;
}

// The loss and, in the same pass over the rows, the row gradients of grad_scale * sum(loss).
std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_fwd_grad(const at::Tensor& w_in, const at::Tensor& w_out,
                                                             const at::Tensor& centers, const at::Tensor& contexts,
                                                             const at::Tensor& negatives, double grad_scale) {
  constexpr const char* op = "sgns_loss";
  LossArgs a = loss_args(w_in, w_out, centers, contexts, negatives, op);
  TORCH_CHECK(std::isfinite(grad_scale), op, ": grad_scale is ", grad_scale, ", expected a finite value");
  at::Tensor loss = at::empty({a.p.b}, w_in.options());
  at::Tensor d_h = at::empty({a.p.b, a.p.dim}, w_in.options());
  at::Tensor d_u = at::empty({a.p.b, a.p.k + 1, a.p.dim}, w_in.options());
  a.p.loss = loss.data_ptr();
  a.p.grad_scale = grad_scale;
  a.p.d_h = d_h.data_ptr();
  a.p.d_u = d_u.data_ptr();
  run_loss(a, op);
  return {loss, d_h, d_u};
}

std::tuple<at::Tensor, at::Tensor> loss_bwd(const at::Tensor& dloss_in, const at::Tensor& w_in,
                                            const at::Tensor& w_out, const at::Tensor& centers,
                                            const at::Tensor& contexts, const at::Tensor& negatives) {
  constexpr const char* op = "sgns_loss backward";
  LossArgs a = loss_args(w_in, w_out, centers, contexts, negatives, op);
  TORCH_CHECK(dloss_in.dim() == 1 && dloss_in.size(0) == a.p.b, op, ": dloss has shape ", dloss_in.sizes(),
              ", expected (", a.p.b, ")");
  const at::Tensor dloss = dloss_in.to(w_in.scalar_type()).contiguous();
  at::Tensor d_h = at::empty({a.p.b, a.p.dim}, w_in.options());
  at::Tensor d_u = at::empty({a.p.b, a.p.k + 1, a.p.dim}, w_in.options());
  a.p.dloss = dloss.data_ptr();
  a.p.d_h = d_h.data_ptr();
  a.p.d_u = d_u.data_ptr();
  run_loss(a, op);
  return {d_h, d_u};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CPU, m) {
  m.impl("sgns_update_", &sgns_update);
  m.impl("cbow_update_", &cbow_update);
  m.impl("sgns_loss_fwd", &loss_fwd);
  m.impl("sgns_loss_fwd_grad", &loss_fwd_grad);
  m.impl("sgns_loss_bwd", &loss_bwd);
}

TORCH_LIBRARY_IMPL(pyattn, CUDA, m) {
  m.impl("sgns_update_", &sgns_update);
  m.impl("cbow_update_", &cbow_update);
  m.impl("sgns_loss_fwd", &loss_fwd);
  m.impl("sgns_loss_fwd_grad", &loss_fwd_grad);
  m.impl("sgns_loss_bwd", &loss_bwd);
}

}  // namespace pyattn
