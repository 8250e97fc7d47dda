// Tensors to the negative-sampling kernels' params structs (pyattn/negative_sampling.h),
// used by csrc/negative_sampling.cpp after its checks and by the emulated CUDA tests
// (tests/cuda_emulation/bindings.cpp). Builders check nothing: tables come checked
// ([vocab, dim], unit column stride, fp32 or fp64), token ids as contiguous int64 on the
// tables' device, and every tensor must stay alive until the kernel has run.
#pragma once

#include <torch/types.h>

#include <algorithm>

#include "params.h"
#include "pyattn/negative_sampling.h"

namespace pyattn {

// What both structs take alike: the tables w_in, w_out (vocab: the rows both have) and
// the ids of the examples' centers and contexts.
template <class Params>
void set_tables_and_ids(Params* p, const at::Tensor& w_in, const at::Tensor& w_out, const at::Tensor& centers,
                        const at::Tensor& contexts) {
  set_rows(&p->w_in, &p->w_in_stride, w_in);
  set_rows(&p->w_out, &p->w_out_stride, w_out);
  p->dtype = dtype_of(w_in);
  p->vocab = std::min(w_in.size(0), w_out.size(0));
  p->dim = w_in.size(1);
  p->centers = centers.data_ptr<int64_t>();
  p->contexts = static_cast<const int64_t*>(ptr_or_null(contexts));
}

// One batch of SGD updates of w_in and w_out (same shape), in place, for centers [n] and
// contexts [n, window_slots] (or undefined: then set_token_stream). negatives: explicit
// [n, window_slots, k] (CBOW [n, k]), or undefined: drawn with `seed` from `table`,
// token ids [slots] int32 / int64 or an alias table [vocab, 2] int64, contiguous.
// loss: float64 [1] and bad_index: int64 [1] on the tables' device, overwritten.
inline NegSamplingUpdateParams make_negative_sampling_update_params(
    const at::Tensor& w_in, const at::Tensor& w_out, const at::Tensor& centers, const at::Tensor& contexts,
    const at::Tensor& negatives, const at::Tensor& table, int64_t k, uint64_t seed, double lr, bool cbow,
    bool compute_loss, const at::Tensor& loss, const at::Tensor& bad_index) {
  NegSamplingUpdateParams p{};
  set_tables_and_ids(&p, w_in, w_out, centers, contexts);
  p.n = centers.size(0);
  p.window_slots = contexts.defined() ? contexts.size(1) : 0;
  p.negatives = negatives.defined() ? negatives.data_ptr<int64_t>() : nullptr;
  p.table = ptr_or_null(table);
  p.table_kind = !table.defined() || table.dim() == 1
                     ? (table.defined() && table.scalar_type() == at::kLong ? TableKind::slots_int64 : TableKind::slots_int32)
                     : TableKind::alias;
  p.table_size = table.defined() ? table.size(0) : 0;
  p.k = k;
  p.seed = seed;
  p.lr = lr;
  p.cbow = cbow;
  p.compute_loss = compute_loss;
  p.loss = loss.data_ptr<double>();
  p.bad_index = bad_index.data_ptr<int64_t>();
  return p;
}

// The stream form of the update (contexts undefined above): the centers are tokens[start:stop]
// and their windows are read from tokens [N], sentence [N] and radius [N] (contiguous int64),
// window slots 2 * window + 1 (see context_id in pyattn/negative_sampling.h).
inline void set_token_stream(NegSamplingUpdateParams* p, const at::Tensor& tokens, const at::Tensor& sentence,
                             const at::Tensor& radius, int64_t start, int64_t stop, int64_t window) {
  p->centers = tokens.data_ptr<int64_t>() + start;
  p->sentence = sentence.data_ptr<int64_t>() + start;
  p->radius = radius.data_ptr<int64_t>() + start;
  p->contexts = nullptr;
  p->n = stop - start;
  p->window_slots = 2 * window + 1;
  p->stream_begin = -start;
  p->stream_end = tokens.size(0) - start;
}

// The skip-gram loss of (centers [b], contexts [b], negatives [b, k]) and its row
// gradients. loss [b]: undefined (not wanted) or written; the gradients d_h [b, dim] and
// d_u [b, 1 + k, dim] (both or neither) are those of sum_b f_b * loss[b] with f_b =
// dloss[b] when dloss [b] is defined, else grad_scale; bad_index: int64 [1], overwritten.
inline SgnsLossParams make_sgns_loss_params(const at::Tensor& w_in, const at::Tensor& w_out,
                                            const at::Tensor& centers, const at::Tensor& contexts,
                                            const at::Tensor& negatives, const at::Tensor& loss,
                                            const at::Tensor& dloss, double grad_scale, const at::Tensor& d_h,
                                            const at::Tensor& d_u, const at::Tensor& bad_index) {
  SgnsLossParams p{};
  set_tables_and_ids(&p, w_in, w_out, centers, contexts);
  p.negatives = negatives.data_ptr<int64_t>();
  p.b = centers.size(0);
  p.k = negatives.size(1);
  p.loss = ptr_or_null(loss);
  p.dloss = ptr_or_null(dloss);
  p.grad_scale = grad_scale;
  p.d_h = ptr_or_null(d_h);
  p.d_u = ptr_or_null(d_u);
  p.bad_index = bad_index.data_ptr<int64_t>();
  return p;
}

}  // namespace pyattn
