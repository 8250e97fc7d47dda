// CUDA negative-sampling updates and the sgns_loss kernel (semantics in
// pyattn/negative_sampling.h).
//
// Updates run as S streams, one warp each: stream s takes a contiguous run of the
// batch's centers and works through it in order, as a word2vec.c thread walks its part
// of the corpus (skip-gram: the center's window slots one after another; CBOW: one
// example per center). Within an example, lanes stride over dim; h and its gradient e
// live in the warp's shared-memory slice; the logits of 8 targets are summed at once
// through shared memory (run_targets).
// Streams run without locks (Hogwild), so S is the number of examples in flight, and S
// bounds how stale a gradient can be. One warp per example with every example of the
// batch in flight (this kernel until 2026-12-05) did not learn on an H200: on the
// planted-structure test's 32-word vocabulary each output row had hundreds of stale
// updates in flight. bench/word2vec_concurrency.py models that schedule on the CPU
// (every stream reads, then every update lands): the 32-word test diverges from
// S = 2048 and learns at S <= 1024. S = min(max_streams, the warps the GPU holds at
// once, centers); the Word2Vec trainer sets max_streams from the word frequencies
// (pyattn.word2vec.model.cuda_streams); without it the kernel allows kStreamsPerWord
// per vocabulary row, up to kDefaultMaxStreams.
// Negatives are drawn with the same counter-based hash and tables as the CPU kernel,
// so both see the same draws.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "cuda/launch.cuh"
#include "pyattn/negative_sampling.h"

namespace pyattn {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
// Without max_streams: 16 streams per vocabulary row (4x below where the lockstep model
// diverges on the 32-word corpus), and never more than 1024 (S x load 110 for English
// text, where the model learned at 438 and diverged at 904).
constexpr int64_t kStreamsPerWord = 16;
constexpr int64_t kDefaultMaxStreams = 1024;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float log1p_acc(float x) { return log1pf(x); }
__device__ __forceinline__ double log1p_acc(double x) { return log1p(x); }

template <class A>
__device__ __forceinline__ A sigmoid(A x) {
  x = x < A(-80) ? A(-80) : (x > A(80) ? A(80) : x);
  return A(1) / (A(1) + exp_acc(-x));
}

template <class A>
__device__ __forceinline__ A neg_log_sigmoid(A x) {
  return (x < A(0) ? -x : A(0)) + log1p_acc(exp_acc(x < A(0) ? x : -x));
}

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// A negative id is an absent one (skipped); an id >= vocab is recorded for the host to
// raise. Recording negative ids too would let one overwrite a real error.
__device__ __forceinline__ bool valid(const NegSamplingUpdateParams& p, int64_t i) {
  if (i >= 0 && i < p.vocab) return true;
  if (i >= p.vocab) atomicExch(reinterpret_cast<unsigned long long*>(p.bad_index), static_cast<unsigned long long>(i));
  return false;
}

constexpr int kGroup = 8;  // targets whose logits a warp sums at once

// A warp's shared-memory slice for one example. Lane l owns columns l, l + 32, ... of h
// and e (no lane reads another's, so they need no barriers); red and x carry the
// cross-lane sums of a group of targets. The window batch has arrays of its own (empty
// otherwise).
template <class T>
struct Slice {
  int64_t* ids;  // window batch: [window_slots] the valid contexts, then [k + 1] the targets
  T* h;          // [dim] the example's input vector
  T* e;          // [dim] its accumulated gradient
  T* red;        // [kGroup + 1][kRedStride] per-lane partial sums: the group's h . u_i, then h . h
  T* x;          // [kGroup + 1] their totals
  T* g;          // window batch: [window_slots, k + 1] g_ij
  T* eh;         // window batch: [window_slots, kWarp] input i's gradient in lane l's current column
  // Rows padded to 33: lane i summing row i reads column l of every row at once, and
  // with a stride of 32 all rows would sit in one bank.
  static constexpr int kRedStride = kWarp + 1;
  __host__ __device__ static int64_t id_count(const NegSamplingUpdateParams& p) {
    return p.window_batch ? p.window_slots + p.k + 1 : 0;
  }
  __host__ __device__ static int64_t batch_elems(const NegSamplingUpdateParams& p) {
    return p.window_batch ? p.window_slots * (p.k + 1 + kWarp) : 0;
  }
  // Per warp, a multiple of 16 bytes.
  __host__ __device__ static size_t bytes(const NegSamplingUpdateParams& p) {
    const int64_t elems = 2 * p.dim + (kGroup + 1) * (kRedStride + 1) + batch_elems(p);
    return size_t((id_count(p) * 8 + elems * int64_t(sizeof(T)) + 15) / 16 * 16);
  }
  __device__ Slice(unsigned char* base, const NegSamplingUpdateParams& p)
      : ids(reinterpret_cast<int64_t*>(base)),
        h(reinterpret_cast<T*>(ids + id_count(p))),
        e(h + p.dim),
        red(e + p.dim),
        x(red + (kGroup + 1) * kRedStride),
        g(x + kGroup + 1),
        eh(g + (p.window_batch ? p.window_slots * (p.k + 1) : 0)) {}
};

// Targets of one example (pos, then k negatives, a negative equal to pos or out of
// range skipped) with s.h in place: updates the w_out rows, fills s.e, returns the loss
// (the same on every lane). Targets go kGroup at a time: each lane forms its partial
// dot products with all of the group's rows (their loads in flight together), the warp
// totals them through shared memory (two barriers per group, where a shuffle tree per
// target would wait on five dependent shuffles), then every lane runs the group's
// updates in order. A row that comes twice in a group sees its earlier update, as in
// the sequential order: x_i += g_j * |h|^2 for each earlier j with the same row.
template <class T>
__device__ T run_targets(const NegSamplingUpdateParams& p, const Slice<T>& s, int64_t pos, int64_t example, int lane) {
  const int64_t d = p.dim;
  const T lr = T(p.lr);
  T* w_out = static_cast<T*>(p.w_out);
  for (int64_t c = lane; c < d; c += kWarp) s.e[c] = T(0);
  T loss = T(0);
  for (int64_t j0 = -1; j0 < p.k; j0 += kGroup) {
    int64_t t[kGroup];  // slot i: target j0 + i, or -1 (skipped, or past the last negative)
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      const int64_t j = j0 + i;
      t[i] = j < 0 ? pos : j < p.k ? draw_negative(p, example, j) : -1;
      if (j >= 0 && t[i] >= 0 && (t[i] == pos || !valid(p, t[i]))) t[i] = -1;
    }
    T part[kGroup + 1];
#pragma unroll
    for (int i = 0; i <= kGroup; ++i) part[i] = T(0);
    for (int64_t c = lane; c < d; c += kWarp) {
      const T hc = s.h[c];
#pragma unroll
      for (int i = 0; i < kGroup; ++i)
        if (t[i] >= 0) part[i] += hc * w_out[t[i] * p.w_out_stride + c];
      part[kGroup] += hc * hc;
    }
#pragma unroll
    for (int i = 0; i <= kGroup; ++i) s.red[i * Slice<T>::kRedStride + lane] = part[i];
    __syncwarp();
    if (lane <= kGroup) {
      T sum = T(0);
      for (int l = 0; l < kWarp; ++l) sum += s.red[lane * Slice<T>::kRedStride + l];
      s.x[lane] = sum;
    }
    __syncwarp();
    const T hh = s.x[kGroup];
    T g[kGroup];
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      g[i] = T(0);
      if (t[i] < 0) continue;
      T x = s.x[i];
#pragma unroll
      for (int j = 0; j < i; ++j)
        if (t[j] == t[i]) x += g[j] * hh;
      const bool positive = j0 < 0 && i == 0;
      if (p.compute_loss) loss += neg_log_sigmoid(positive ? x : -x);
      if (fabs(x) >= T(kNegSamplingMaxLogit)) continue;  // saturated: no update (gensim), g[i] stays 0
      g[i] = lr * ((positive ? T(1) : T(0)) - sigmoid(x));
      T* u = w_out + t[i] * p.w_out_stride;
      for (int64_t c = lane; c < d; c += kWarp) {
        const T uc = u[c];
        s.e[c] += g[i] * uc;
        u[c] = uc + g[i] * s.h[c];
      }
    }
  }
  return loss;
}

// One skip-gram center: each window slot's pair in order, h = w_in[center] re-read per
// pair and e added back after it, as on the CPU. Returns the loss.
template <class T>
__device__ T skipgram_center(const NegSamplingUpdateParams& p, int64_t n, const Slice<T>& s, int lane) {
  const int64_t center = p.centers[n];
  if (!valid(p, center)) return T(0);
  T* hin = static_cast<T*>(p.w_in) + center * p.w_in_stride;
  T loss = T(0);
  for (int64_t slot = 0; slot < p.window_slots; ++slot) {
    const int64_t o = context_id(p, n, slot);
    if (o < 0 || !valid(p, o)) continue;
    for (int64_t c = lane; c < p.dim; c += kWarp) s.h[c] = hin[c];
    loss += run_targets(p, s, o, n * p.window_slots + slot, lane);
    for (int64_t c = lane; c < p.dim; c += kWarp) hin[c] += s.e[c];
  }
  return loss;
}

// Skip-gram's window batch for one center (semantics in pyattn/negative_sampling.h, as
// the CPU's Updater::window_batch). The warp forms every logit x_ij, a shuffle sum each,
// and keeps g_ij in shared memory; then it goes over the columns 32 at a time, a column
// per lane: the inputs' gradients from the unchanged target rows, then the targets from
// the unchanged input rows, then the inputs. Returns the loss (the same on every lane).
template <class T>
__device__ T window_batch_center(const NegSamplingUpdateParams& p, int64_t n, const Slice<T>& s, int lane) {
  const int64_t center = p.centers[n];
  if (!valid(p, center)) return T(0);
  __syncwarp();  // the previous center's reads of s.ids and s.g are done
  int64_t m = 0;
  for (int64_t slot = 0; slot < p.window_slots; ++slot) {
    const int64_t o = context_id(p, n, slot);
    if (o < 0 || !valid(p, o)) continue;
    if (lane == 0) s.ids[m] = o;
    ++m;
  }
  if (m == 0) return T(0);
  int64_t* targets = s.ids + p.window_slots;
  int64_t nt = 1;
  if (lane == 0) targets[0] = center;
  for (int64_t j = 0; j < p.k; ++j) {
    const int64_t t = draw_negative(p, n, j);
    if (t == center || !valid(p, t)) continue;
    if (lane == 0) targets[nt] = t;
    ++nt;
  }
  __syncwarp();
  const int64_t d = p.dim;
  const T lr = T(p.lr);
  T* w_in = static_cast<T*>(p.w_in);
  T* w_out = static_cast<T*>(p.w_out);
  T loss = T(0);
  for (int64_t i = 0; i < m; ++i) {
    const T* h = w_in + s.ids[i] * p.w_in_stride;
    for (int64_t j = 0; j < nt; ++j) {
      const T* u = w_out + targets[j] * p.w_out_stride;
      T part = T(0);
      for (int64_t c = lane; c < d; c += kWarp) part += h[c] * u[c];
      const T x = warp_sum(part);
      if (p.compute_loss) loss += neg_log_sigmoid(j == 0 ? x : -x);
      const bool saturated = fabs(x) >= T(kNegSamplingMaxLogit);  // no update (gensim)
      if (lane == 0) s.g[i * nt + j] = saturated ? T(0) : lr * ((j == 0 ? T(1) : T(0)) - sigmoid(x));
    }
  }
  __syncwarp();
  for (int64_t c = lane; c < d; c += kWarp) {
    T* eh = s.eh + lane;
    for (int64_t i = 0; i < m; ++i) {
      T acc = T(0);
      for (int64_t j = 0; j < nt; ++j) acc += s.g[i * nt + j] * w_out[targets[j] * p.w_out_stride + c];
      eh[i * kWarp] = acc;
    }
    for (int64_t j = 0; j < nt; ++j) {
      T acc = w_out[targets[j] * p.w_out_stride + c];
      for (int64_t i = 0; i < m; ++i) acc += s.g[i * nt + j] * w_in[s.ids[i] * p.w_in_stride + c];
      w_out[targets[j] * p.w_out_stride + c] = acc;
    }
    for (int64_t i = 0; i < m; ++i) w_in[s.ids[i] * p.w_in_stride + c] += eh[i * kWarp];
  }
  return loss;
}

// One CBOW center: h = mean of the context rows, then the undivided e added to each
// (as gensim / word2vec.c). Returns the loss.
template <class T>
__device__ T cbow_center(const NegSamplingUpdateParams& p, int64_t n, const Slice<T>& s, int lane) {
  const int64_t center = p.centers[n];
  if (!valid(p, center)) return T(0);
  T* w_in = static_cast<T*>(p.w_in);
  int64_t count = 0;
  for (int64_t c = lane; c < p.dim; c += kWarp) s.h[c] = T(0);
  for (int64_t slot = 0; slot < p.window_slots; ++slot) {
    const int64_t o = context_id(p, n, slot);
    if (o < 0 || !valid(p, o)) continue;
    const T* row = w_in + o * p.w_in_stride;
    for (int64_t c = lane; c < p.dim; c += kWarp) s.h[c] += row[c];
    ++count;
  }
  if (count == 0) return T(0);
  const T inv = T(1) / T(count);
  for (int64_t c = lane; c < p.dim; c += kWarp) s.h[c] *= inv;
  const T loss = run_targets(p, s, center, n, lane);
  for (int64_t slot = 0; slot < p.window_slots; ++slot) {
    const int64_t o = context_id(p, n, slot);
    if (o < 0 || o >= p.vocab) continue;
    T* row = w_in + o * p.w_in_stride;
    for (int64_t c = lane; c < p.dim; c += kWarp) row[c] += s.e[c];
  }
  return loss;
}

// Warp `stream` of `streams` takes centers [stream * run, (stream + 1) * run) in order.
template <class T>
__global__ void __launch_bounds__(kWarp * kWarpsPerBlock) negsamp_update(const NegSamplingUpdateParams p,
                                                                          const int64_t streams) {
  PYATTN_DYNAMIC_SMEM(smem_raw, 16);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const Slice<T> s(smem_raw + warp * Slice<T>::bytes(p), p);
  const int64_t stream = int64_t(blockIdx.x) * kWarpsPerBlock + warp;
  if (stream >= streams) return;
  const int64_t run = (p.n + streams - 1) / streams;
  const int64_t stop = (stream + 1) * run < p.n ? (stream + 1) * run : p.n;
  double loss = 0.0;  // a stream may sum millions of centers' losses
  for (int64_t n = stream * run; n < stop; ++n)
    loss += double(p.cbow           ? cbow_center(p, n, s, lane)
                   : p.window_batch ? window_batch_center(p, n, s, lane)
                                    : skipgram_center(p, n, s, lane));
  if (p.compute_loss && lane == 0 && loss != 0.0) atomicAdd(p.loss, loss);
}

// S (see the top of the file): max_streams, or kStreamsPerWord per vocabulary row up to
// kDefaultMaxStreams; at most the warps resident at once (more would only queue), at
// most one per center.
template <class T>
int64_t stream_count(const NegSamplingUpdateParams& p, size_t smem) {
  int dev = 0, sms = 1, per_sm = 1;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, negsamp_update<T>, kWarp * kWarpsPerBlock, smem) !=
          cudaSuccess)
    throw std::runtime_error("negative-sampling update: cannot query the GPU's SM count and occupancy");
  const int64_t resident = int64_t(std::max(sms, 1)) * std::max(per_sm, 1) * kWarpsPerBlock;
  const int64_t wanted = p.max_streams > 0 ? p.max_streams : std::min(kStreamsPerWord * p.vocab, kDefaultMaxStreams);
  return std::max<int64_t>(1, std::min({wanted, resident, p.n}));
}

template <class T>
void launch(const NegSamplingUpdateParams& p, cudaStream_t stream) {
  if (p.n == 0) return;
  const size_t smem = kWarpsPerBlock * Slice<T>::bytes(p);
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(reinterpret_cast<const void*>(&negsamp_update<T>),
                           cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) != cudaSuccess)
    throw std::runtime_error("negative-sampling update: cannot raise the kernel's shared memory limit");
  const int64_t streams = stream_count<T>(p, smem);
  const int64_t blocks = (streams + kWarpsPerBlock - 1) / kWarpsPerBlock;
  PYATTN_LAUNCH(unsigned(blocks), kWarp * kWarpsPerBlock, smem, stream, negsamp_update<T>)(p, streams);
}

// sgns_loss (semantics in SgnsLossParams, mirroring cpu/negative_sampling_body.h's
// LossExample): one warp per example, lanes striding over dim. Each logit x_j = h . u_j
// is a warp-shuffle sum; the loss is sum_j max(-z_j, 0) + log1p(q) with z_j = +-x_j and
// q = prod_j (1 + exp(-|z_j|)) - 1 built from positive terms (full precision when every
// term is tiny), as on the CPU. With gradients, lanes write d_u[b, j] = g_j h as soon as
// g_j is known and accumulate d_h[b] = sum_j g_j u_j in the warp's shared-memory slice.
//
// in_range records any id outside [0, vocab): sgns_loss takes no absent ids (kSgnsLossNoBadId).
__device__ __forceinline__ bool in_range(const SgnsLossParams& p, int64_t i) {
  if (i >= 0 && i < p.vocab) return true;
  atomicExch(reinterpret_cast<unsigned long long*>(p.bad_index), static_cast<unsigned long long>(i));
  return false;
}

template <class T>
__global__ void __launch_bounds__(kWarp * kWarpsPerBlock) sgns_loss_kernel(const SgnsLossParams p) {
  PYATTN_DYNAMIC_SMEM(smem_raw, 16);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t d = p.dim, nt = p.k + 1;
  T* acc = reinterpret_cast<T*>(smem_raw) + size_t(warp) * size_t(d);  // d_h of this warp's example
  const bool grads = p.d_u != nullptr;
  const int64_t stride = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t b = int64_t(blockIdx.x) * kWarpsPerBlock + warp; b < p.b; b += stride) {
    auto target = [&](int64_t j) { return j == 0 ? p.contexts[b] : p.negatives[b * p.k + j - 1]; };
    bool ok = in_range(p, p.centers[b]);
    for (int64_t j = 0; ok && j < nt; ++j) ok = in_range(p, target(j));
    T* dh = grads ? static_cast<T*>(p.d_h) + b * d : nullptr;
    T* du = grads ? static_cast<T*>(p.d_u) + b * nt * d : nullptr;
    if (!ok) {  // an out-of-range id (recorded): loss 0 and zero gradients
      if (grads) {
        for (int64_t c = lane; c < d; c += kWarp) dh[c] = T(0);
        for (int64_t c = lane; c < nt * d; c += kWarp) du[c] = T(0);
      }
      if (p.loss && lane == 0) static_cast<T*>(p.loss)[b] = T(0);
      continue;
    }
    const T f = !grads ? T(0) : p.dloss ? static_cast<const T*>(p.dloss)[b] : T(p.grad_scale);
    const T* h = static_cast<const T*>(p.w_in) + p.centers[b] * p.w_in_stride;
    if (grads)
      for (int64_t c = lane; c < d; c += kWarp) acc[c] = T(0);
    T loss = T(0), q = T(0);
    for (int64_t j = 0; j < nt; ++j) {
      const T* u = static_cast<const T*>(p.w_out) + target(j) * p.w_out_stride;
      T part = T(0);
      for (int64_t c = lane; c < d; c += kWarp) part += h[c] * u[c];
      const T x = warp_sum(part);
      const T z = j == 0 ? x : -x;
      const T e = exp_acc(z < T(0) ? z : -z);
      loss += z < T(0) ? -z : T(0);
      q += e + q * e;
      if (grads) {
        const T sig_neg_z = (z >= T(0) ? e : T(1)) / (T(1) + e);  // d softplus(-z)/dz = -sigmoid(-z)
        const T g = f * (j == 0 ? -sig_neg_z : sig_neg_z);
        for (int64_t c = lane; c < d; c += kWarp) {
          du[j * d + c] = g * h[c];
          acc[c] += g * u[c];
        }
      }
    }
    if (grads)
      for (int64_t c = lane; c < d; c += kWarp) dh[c] = acc[c];
    if (p.loss && lane == 0) static_cast<T*>(p.loss)[b] = loss + log1p_acc(q);
    __syncwarp();
  }
}

}  // namespace

void sgns_loss_cuda(const SgnsLossParams& p, cudaStream stream) {
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (p.b == 0) return;  // p.bad_index holds kSgnsLossNoBadId already (the caller's)
  const int64_t blocks = std::min<int64_t>((p.b + kWarpsPerBlock - 1) / kWarpsPerBlock, int64_t(1) << 16);
  const size_t elem = p.dtype == DType::f64 ? sizeof(double) : sizeof(float);
  const size_t smem = size_t(kWarpsPerBlock) * size_t(p.dim) * elem;
  if (p.dtype == DType::f64)
    PYATTN_LAUNCH(unsigned(blocks), kWarp * kWarpsPerBlock, smem, s, sgns_loss_kernel<double>)(p);
  else
    PYATTN_LAUNCH(unsigned(blocks), kWarp * kWarpsPerBlock, smem, s, sgns_loss_kernel<float>)(p);
}

void negative_sampling_update_cuda(const NegSamplingUpdateParams& p, cudaStream stream) {
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  // loss and bad_index are device scalars here: zero the sum, -1 the bad id (all bits set).
  cudaMemsetAsync(p.loss, 0, sizeof(double), s);
  cudaMemsetAsync(p.bad_index, 0xff, sizeof(int64_t), s);
  if (p.dtype == DType::f64) return launch<double>(p, s);
  launch<float>(p, s);
}

}  // namespace pyattn
