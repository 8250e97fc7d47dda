// CUDA lstm pointwise kernels (semantics in pyattn/lstm.h), mirroring cpu/lstm_body.h.
//
// One thread per (row, column j < H) element, grid-stride over n·H: it reads the four
// gates of its column (four coalesced row segments), c and the biases, and writes the
// activations, c' and h (backward: the four gate gradients and dc). Gate math is the
// scalar form in pyattn/lstm_math.h, which the CPU's generic path also runs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/launch.cuh"
#include "cuda/storage.cuh"
#include "pyattn/lstm.h"
#include "pyattn/lstm_math.h"

namespace pyattn {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // the grid-stride loop covers the rest

template <typename T>
__global__ void __launch_bounds__(kThreads) lstm_fwd_kernel(const LstmFwdParams p) {
  using A = acc_t<T>;
  const int64_t H = p.hidden, total = p.n * H;
  const T* b0 = static_cast<const T*>(p.bias[0]);
  const T* b1 = static_cast<const T*>(p.bias[1]);
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / H, j = e - r * H;
    const T* z = static_cast<const T*>(p.gates) + r * p.gates_stride;
    A pre[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      pre[k] = to_acc(z[k * H + j]);
      if (b0) pre[k] += to_acc(b0[k * H + j]);
      if (b1) pre[k] += to_acc(b1[k * H + j]);
    }
    const A i = lstm_math::sigmoid(pre[0]), f = lstm_math::sigmoid(pre[1]);
    const A g = lstm_math::tanh_acc(pre[2]), o = lstm_math::sigmoid(pre[3]);
    const A c = to_acc(static_cast<const T*>(p.c)[r * p.c_stride + j]);
    const A cn = f * c + i * g;
    // all loads above precede the stores: act may alias gates, c_out c (same element)
    T* act = static_cast<T*>(p.act) + r * p.act_stride;
    act[j] = from_acc<T>(i);
    act[H + j] = from_acc<T>(f);
    act[2 * H + j] = from_acc<T>(g);
    act[3 * H + j] = from_acc<T>(o);
    static_cast<T*>(p.c_out)[r * p.c_out_stride + j] = from_acc<T>(cn);
    static_cast<T*>(p.h_out)[r * p.h_out_stride + j] = from_acc<T>(o * lstm_math::tanh_acc(cn));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) lstm_bwd_kernel(const LstmBwdParams p) {
  using A = acc_t<T>;
  const int64_t H = p.hidden, total = p.n * H;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / H, j = e - r * H;
    A dh = to_acc(static_cast<const T*>(p.dh)[r * p.dh_stride + j]);
    if (p.dh2) dh += to_acc(static_cast<const T*>(p.dh2)[r * p.dh2_stride + j]);
    const A dc = p.dc ? to_acc(static_cast<const T*>(p.dc)[r * p.dc_stride + j]) : A(0);
    const T* act = static_cast<const T*>(p.act) + r * p.act_stride;
    const A i = to_acc(act[j]), f = to_acc(act[H + j]), g = to_acc(act[2 * H + j]), o = to_acc(act[3 * H + j]);
    const A c = to_acc(static_cast<const T*>(p.c)[r * p.c_stride + j]);
    const A tc = lstm_math::tanh_acc(to_acc(static_cast<const T*>(p.c_new)[r * p.c_new_stride + j]));
    const A dct = dc + dh * o * (A(1) - tc * tc);
    T* dz = static_cast<T*>(p.dgates) + r * p.dgates_stride;
    dz[j] = from_acc<T>(dct * g * i * (A(1) - i));
    dz[H + j] = from_acc<T>(dct * c * f * (A(1) - f));
    dz[2 * H + j] = from_acc<T>(dct * i * (A(1) - g * g));
    dz[3 * H + j] = from_acc<T>(dh * tc * o * (A(1) - o));
    static_cast<T*>(p.dc_out)[r * p.dc_out_stride + j] = from_acc<T>(dct * f);  // after reading dc
  }
}

unsigned blocks_for(int64_t elements) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((elements + kThreads - 1) / kThreads, kMaxBlocks)));
}

}  // namespace

void lstm_fwd_cuda(const LstmFwdParams& p, cudaStream stream) {
  if (p.n * p.hidden == 0) return;
  with_storage(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    PYATTN_LAUNCH(blocks_for(p.n * p.hidden), kThreads, 0, reinterpret_cast<cudaStream_t>(stream),
                  lstm_fwd_kernel<T>)(p);
  });
}

void lstm_bwd_cuda(const LstmBwdParams& p, cudaStream stream) {
  if (p.n * p.hidden == 0) return;
  with_storage(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    PYATTN_LAUNCH(blocks_for(p.n * p.hidden), kThreads, 0, reinterpret_cast<cudaStream_t>(stream),
                  lstm_bwd_kernel<T>)(p);
  });
}

}  // namespace pyattn
