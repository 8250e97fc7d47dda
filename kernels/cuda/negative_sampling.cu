// CUDA negative-sampling updates and the sgns_loss kernel (semantics in
// pyattn/negative_sampling.h). Updates: one warp per
// example (a skip-gram pair or a CBOW center), lanes striding over dim. The example's
// input vector h and its gradient e live in shared memory (a slice per warp); each
// target's logit is a warp-shuffle reduction, then every lane updates its columns of e
// and of the output row. Examples run without locks (Hogwild) as on the CPU; with one
// example per warp and thousands of warps in flight, rows of frequent words are updated
// concurrently and may lose updates, which SGD tolerates. Negatives are drawn with the
// same counter-based hash and tables as the CPU kernel, so both see the same draws.
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
static_assert(kWarpsPerBlock * 2 * kNegSamplingCudaMaxRowBytes <= 48 * 1024, "h and e slices must fit the default shared memory");
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

__device__ __forceinline__ bool valid(const NegSamplingUpdateParams& p, int64_t i) {
  if (i >= 0 && i < p.vocab) return true;
  atomicExch(reinterpret_cast<unsigned long long*>(p.bad_index), static_cast<unsigned long long>(i));
  return false;
}

// Targets of one example with h in shared memory: updates w_out rows, accumulates e,
// returns the loss (the same value on every lane).
template <class T>
__device__ T run_targets(const NegSamplingUpdateParams& p, const T* h, T* e, int64_t pos, int64_t example, int lane) {
  const int64_t d = p.dim;
  const T lr = T(p.lr);
  for (int64_t c = lane; c < d; c += kWarp) e[c] = T(0);
  T loss = T(0);
  for (int64_t j = -1; j < p.k; ++j) {
    const int64_t t = j < 0 ? pos : draw_negative(p, example, j);
    if (j >= 0 && (t == pos || !valid(p, t))) continue;
    T* u = static_cast<T*>(p.w_out) + t * p.w_out_stride;
    T part = T(0);
    for (int64_t c = lane; c < d; c += kWarp) part += h[c] * u[c];
    const T x = warp_sum(part);
    const T g = lr * ((j < 0 ? T(1) : T(0)) - sigmoid(x));
    if (p.compute_loss) loss += neg_log_sigmoid(j < 0 ? x : -x);
    for (int64_t c = lane; c < d; c += kWarp) {
      const T uc = u[c];
      e[c] += g * uc;
      u[c] = uc + g * h[c];
    }
    __syncwarp();
  }
  return loss;
}

template <class T>
__global__ void __launch_bounds__(kWarp * kWarpsPerBlock) negsamp_update(const NegSamplingUpdateParams p) {
  PYATTN_DYNAMIC_SMEM(smem_raw, 16);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  T* h = reinterpret_cast<T*>(smem_raw) + size_t(warp) * 2 * p.dim;
  T* e = h + p.dim;
  const int64_t d = p.dim;
  const int64_t examples = p.cbow ? p.n : p.n * p.window_slots;
  const int64_t stride = int64_t(gridDim.x) * kWarpsPerBlock;
  T loss = T(0);
  for (int64_t ex = int64_t(blockIdx.x) * kWarpsPerBlock + warp; ex < examples; ex += stride) {
    const int64_t n = p.cbow ? ex : ex / p.window_slots;
    const int64_t center = p.centers[n];
    if (!valid(p, center)) continue;
    T* w_in = static_cast<T*>(p.w_in);
    if (!p.cbow) {
      const int64_t o = p.contexts[ex];
      if (o < 0 || !valid(p, o)) continue;
      T* hin = w_in + center * p.w_in_stride;
      for (int64_t c = lane; c < d; c += kWarp) h[c] = hin[c];
      __syncwarp();
      loss += run_targets(p, h, e, o, ex, lane);
      for (int64_t c = lane; c < d; c += kWarp) hin[c] += e[c];
    } else {
      const int64_t* ctx = p.contexts + n * p.window_slots;
      int64_t count = 0;
      for (int64_t c = lane; c < d; c += kWarp) h[c] = T(0);
      for (int64_t s = 0; s < p.window_slots; ++s) {
        if (ctx[s] < 0 || !valid(p, ctx[s])) continue;
        const T* row = w_in + ctx[s] * p.w_in_stride;
        for (int64_t c = lane; c < d; c += kWarp) h[c] += row[c];
        ++count;
      }
      if (count == 0) continue;
      const T inv = T(1) / T(count);
      for (int64_t c = lane; c < d; c += kWarp) h[c] *= inv;
      __syncwarp();
      loss += run_targets(p, h, e, center, n, lane);
      for (int64_t s = 0; s < p.window_slots; ++s) {
        if (ctx[s] < 0 || ctx[s] >= p.vocab) continue;
        T* row = w_in + ctx[s] * p.w_in_stride;
        for (int64_t c = lane; c < d; c += kWarp) row[c] += e[c];  // undivided, as gensim/word2vec.c
      }
    }
    __syncwarp();
  }
  if (p.compute_loss && lane == 0 && loss != T(0)) atomicAdd(p.loss, double(loss));
}

template <class T>
void launch(const NegSamplingUpdateParams& p, cudaStream_t stream) {
  const size_t smem = size_t(kWarpsPerBlock) * 2 * size_t(p.dim) * sizeof(T);
  const int64_t examples = p.cbow ? p.n : p.n * p.window_slots;
  const int64_t blocks = std::min<int64_t>((examples + kWarpsPerBlock - 1) / kWarpsPerBlock, int64_t(1) << 16);
  PYATTN_LAUNCH(unsigned(std::max<int64_t>(blocks, 1)), kWarp * kWarpsPerBlock, smem, stream, negsamp_update<T>)(p);
}

// sgns_loss (semantics in SgnsLossParams, mirroring cpu/negative_sampling_body.h's
// LossExample): one warp per example, lanes striding over dim. Each logit x_j = h . u_j
// is a warp-shuffle sum; the loss is sum_j max(-z_j, 0) + log1p(q) with z_j = +-x_j and
// q = prod_j (1 + exp(-|z_j|)) - 1 built from positive terms (full precision when every
// term is tiny), as on the CPU. With gradients, lanes write d_u[b, j] = g_j h as soon as
// g_j is known and accumulate d_h[b] = sum_j g_j u_j in the warp's shared-memory slice.
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
  cudaMemsetAsync(p.bad_index, 0xff, sizeof(int64_t), s);  // -1: no bad id
  if (p.b == 0) return;
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
