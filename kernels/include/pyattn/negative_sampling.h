// Word2vec negative sampling: in-place SGD updates (skip-gram and CBOW) and the
// differentiable skip-gram loss. Semantics are pinned by
// pyattn/reference/negative_sampling.py.
//
// Tables are [vocab, dim] with a row stride and unit column stride: w_in (input
// vectors, word2vec.c's syn0) and w_out (output vectors, syn1neg). Token ids are int64.
#pragma once

#include "pyattn/common.h"
#include "pyattn/hd_math.h"

namespace pyattn {

// One batch of updates. Examples run in parallel without locks (Hogwild, as
// word2vec.c): rows shared by two threads may lose an update, which SGD tolerates.
// With one thread (CUDA: max_streams = 1) the result equals the sequential reference.
//   skip-gram: each (centers[n], contexts[n, c] >= 0) is one pair; h = w_in[center],
//              targets: the context (label 1) and k negatives (label 0).
//   CBOW:      each center with >= 1 valid context; h = mean of w_in[contexts[n, :]],
//              targets: the center (label 1) and k negatives.
//   skip-gram, window batch (window_batch; pWord2Vec's HogBatch, Ji et al. 2016): one
//              example per center with >= 1 valid context. Its inputs are the rows
//              w_in[context] (word2vec.c's orientation), its targets w_out[center]
//              (label 1) and k negatives drawn once for the whole window. Every logit
//              x_ij = w_in[ctx_i] . w_out[t_j] is taken from the rows as they stand at
//              the center's start; then w_in[ctx_i] += sum_j g_ij w_out[t_j] and
//              w_out[t_j] += sum_i g_ij w_in[ctx_i], both from those rows. The window's
//              output rows are read once instead of once per pair, so it trains 1.6-2x
//              faster than the pair order; its WS353 departs from the pair order's by the
//              corpus (+0.02 and -0.026 on two English texts), so the trainer defaults to
//              the pair order (bench/results/word2vec_skipgram_default_2026-12-06.md).
// Negatives come from `negatives` when given, else are drawn inside the kernel from a
// 64-bit hash r of (seed, example, k), a counter-based draw, so results do not depend on
// the thread count (example: n * window_slots + slot for a skip-gram pair, n for a CBOW
// or window-batch center):
//   slots table [T] (word2vec.c's unigram table): table[(r >> 32) * T >> 32];
//   alias table [V, 2] int64 (Walker): i = (r >> 32) * V >> 32, then i if
//     (r mod 2^32) < table[i, 0] (a threshold in [0, 2^32]) else table[i, 1].
// The alias table is V rows (cache resident) where a slots table needs ~1e7-1e8 slots
// to resolve rare words, and a random read of that costs a cache miss per negative.
// A negative equal to the positive target is skipped. A target whose logit x = h . u has
// |x| >= kNegSamplingMaxLogit is not updated (gensim's MAX_EXP rule: its gradient would
// come from a saturated sigmoid); its loss term still counts.
constexpr double kNegSamplingMaxLogit = 6.0;
enum class TableKind : int32_t { slots_int32 = 0, slots_int64 = 1, alias = 2 };

struct NegSamplingUpdateParams {
  void* w_in;                // [vocab, dim], dtype; updated in place
  int64_t w_in_stride;
  void* w_out;               // [vocab, dim], dtype; updated in place
  int64_t w_out_stride;
  DType dtype;               // f32 or f64
  int64_t vocab, dim;
  const int64_t* centers;    // [n]
  const int64_t* contexts;   // [n, window_slots], contiguous; -1 = empty slot; or nullptr: the token stream below
  int64_t n, window_slots;
  // Contexts read from a token stream (when contexts is nullptr; see context_id): centers,
  // sentence and radius point at the block's first center in arrays that hold the
  // stream's indices [stream_begin, stream_end) relative to it (stream_begin <= 0,
  // stream_end >= n), and window_slots = 2 * window + 1.
  const int64_t* sentence;   // sentence id of each token
  const int64_t* radius;     // each center's window radius (word2vec.c's window - b)
  int64_t stream_begin, stream_end;
  const int64_t* negatives;  // explicit: skip-gram [n, window_slots, k], CBOW and window batch [n, k]; or nullptr
  const void* table;         // nullptr, slots [table_size] int32 / int64, or alias [table_size, 2] int64
  TableKind table_kind;
  int64_t table_size;        // < 2^32
  int64_t k;                 // negatives per example
  uint64_t seed;
  double lr;
  bool cbow;
  bool window_batch;         // skip-gram only: the window batch above
  bool compute_loss;
  double* loss;              // [1]: overwritten with the summed loss (0 unless compute_loss); device memory on CUDA
  int64_t* bad_index;        // [1]: an id >= vocab met (that example was skipped), or -1; negative ids are skipped
                             // without a record. Device memory on CUDA
  int64_t max_streams;       // CUDA: examples in flight (see cuda/negative_sampling.cu); 0: the kernel's choice, 1: sequential
};

// loss[b] = -log s(w_out[ctx_b] . h_b) - sum_k log s(-w_out[neg_bk] . h_b), h_b = w_in[center_b].
// One kernel serves the forward (loss, and optionally the gradients in the same pass)
// and the backward (gradients for a given dloss).
struct SgnsLossParams {
  const void* w_in;          // [vocab, dim], dtype
  int64_t w_in_stride;
  const void* w_out;         // [vocab, dim], dtype
  int64_t w_out_stride;
  DType dtype;               // f32 or f64
  int64_t vocab, dim;
  const int64_t* centers;    // [b]
  const int64_t* contexts;   // [b]
  const int64_t* negatives;  // [b, k] contiguous
  int64_t b, k;
  void* loss;                // [b], dtype, overwritten; nullptr: loss not wanted
  // The gradients are those of sum_b f_b * loss[b], with f_b = dloss[b] when dloss is
  // set (backward), else grad_scale (the forward's upstream gradient known in advance).
  const void* dloss;         // [b], dtype, or nullptr
  double grad_scale;
  void* d_h;                 // [b, dim] gradient for w_in[centers[b]], overwritten; nullptr: no gradients
  void* d_u;                 // [b, 1 + k, dim] for w_out[contexts[b]], w_out[negatives[b, :]], overwritten;
                             // set exactly when d_h is
  int64_t* bad_index;        // [1]: an id outside [0, vocab) met (its example gets loss 0 and zero gradients), or
                             // kSgnsLossNoBadId; the caller sets it to kSgnsLossNoBadId before the call
};
// "No bad id" for SgnsLossParams::bad_index. Unlike the updates, which skip negative ids
// as absent, sgns_loss takes no absent ids: a negative one is an error too, so -1 cannot
// be the sentinel.
constexpr int64_t kSgnsLossNoBadId = INT64_MIN;  // <cstdint>, through pyattn/common.h

// Context slot `slot` of center n, or -1 (empty). From the token stream, slot window + d
// (0 < |d| <= radius[n]) holds token n + d if it lies in the stream and in n's sentence:
// word2vec.c's shrunk window, built as the kernel walks the text instead of stored.
PYATTN_HD int64_t context_id(const NegSamplingUpdateParams& p, int64_t n, int64_t slot) {
  if (p.contexts) return p.contexts[n * p.window_slots + slot];
  const int64_t d = slot - p.window_slots / 2, i = n + d;
  if (d == 0 || d > p.radius[n] || -d > p.radius[n] || i < p.stream_begin || i >= p.stream_end ||
      p.sentence[i] != p.sentence[n])
    return -1;
  return p.centers[i];
}

// The j-th negative of `example` (explicit, or drawn from the table as described above):
// one definition for the CPU and CUDA kernels, so both draw the same ids.
PYATTN_HD int64_t draw_negative(const NegSamplingUpdateParams& p, int64_t example, int64_t j) {
  if (p.negatives) return p.negatives[example * p.k + j];
  const uint64_t r = mix64(p.seed * 0x9e3779b97f4a7c15ULL + uint64_t(example * p.k + j) + 1);
  const uint64_t slot = ((r >> 32) * uint64_t(p.table_size)) >> 32;  // uniform in [0, table_size)
  switch (p.table_kind) {
    case TableKind::alias: {
      const int64_t* row = static_cast<const int64_t*>(p.table) + 2 * slot;
      // a select, not a branch: keeping the slot or taking its alias is a coin flip that the
      // CPU cannot predict (the select made the CBOW update 1-3 % faster)
      const uint64_t keep = uint64_t(0) - uint64_t((r & 0xffffffffULL) < uint64_t(row[0]));
      return int64_t((slot & keep) | (uint64_t(row[1]) & ~keep));
    }
    case TableKind::slots_int64: return static_cast<const int64_t*>(p.table)[slot];
    default: return int64_t(static_cast<const int32_t*>(p.table)[slot]);
  }
}

// CUDA envelope: dim * sizeof(element) <= this (dim <= 1536 fp32, 768 fp64), since each
// warp keeps h and e for its example in shared memory.
constexpr int64_t kNegSamplingCudaMaxRowBytes = 6144;
// And for the window batch, whose warp also keeps g [window_slots, k + 1], one column of
// each input's gradient [window_slots, 32] and the ids [window_slots + k + 1] (int64):
// window_slots * (k + 33) * element size + (window_slots + k + 1) * 8 <= this. With the row
// bound, 4 warps then need at most 190 KB of the 227 KB of shared memory.
constexpr int64_t kNegSamplingCudaMaxBatchBytes = 32768;

void negative_sampling_update_cpu(const NegSamplingUpdateParams& p, ParallelFor parallel_for);
// Launch on `stream` (ordered runs of centers, one warp per run); the caller checks the launch afterwards.
void negative_sampling_update_cuda(const NegSamplingUpdateParams& p, cudaStream stream);
void sgns_loss_cpu(const SgnsLossParams& p, ParallelFor parallel_for);
// Launch on `stream` (one warp per example, dim * element size <= kNegSamplingCudaMaxRowBytes);
// bad_index is device memory there.
void sgns_loss_cuda(const SgnsLossParams& p, cudaStream stream);

}  // namespace pyattn
