// Runs CUDA device code on CPU threads, for testing kernel logic on machines without a
// GPU: one std::thread per CUDA thread of a block, std::barrier for __syncthreads and
// __syncwarp, an exchange buffer for warp shuffles, and the part of nvcuda::wmma the
// kernels use, where every lane holds the whole 16x16 fragment (so element-wise work on
// fragments of one type lines up, as on the GPU; the products are computed in fp32).
// Included before the .cu file under test, compiled by the host compiler with
// -DPYATTN_CUDA_EMULATION. Not a general emulator: only what pyattn's kernels use.
#pragma once

#include <cuda_runtime.h>  // types (dim3, cudaStream_t) before the macros below
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace emu {

struct Block {
  dim3 block_idx;
  int threads;
  std::barrier<>* all;
  std::vector<std::barrier<>*> warps;
  std::vector<float> xchg;  // [threads] shuffle exchange
};

inline thread_local dim3 t_thread_idx;
inline thread_local Block* t_block = nullptr;

inline int lane() { return int(t_thread_idx.x) % 32; }
inline std::barrier<>& warp_barrier() { return *t_block->warps[t_thread_idx.x / 32]; }

// Runs kernel() for every thread of every block of grid, blocks one after another.
inline void launch(dim3 grid, int threads, const std::function<void()>& kernel) {
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        std::barrier<> all(threads);
        std::vector<std::unique_ptr<std::barrier<>>> warps;
        for (int w = 0; w < (threads + 31) / 32; ++w)
          warps.push_back(std::make_unique<std::barrier<>>(std::min(32, threads - 32 * w)));
        Block b{dim3(x, y, z), threads, &all, {}, std::vector<float>(size_t(threads))};
        for (auto& w : warps) b.warps.push_back(w.get());
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
          pool.emplace_back([&, t] {
            t_thread_idx = dim3(unsigned(t), 0, 0);
            t_block = &b;
            kernel();
          });
        for (auto& th : pool) th.join();
      }
}

}  // namespace emu

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
#define __launch_bounds__(n)
#define __align__(n) __attribute__((aligned(n)))
#define threadIdx (::emu::t_thread_idx)
#define blockIdx (::emu::t_block->block_idx)

inline void __syncthreads() { emu::t_block->all->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier().arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int mask) {
  float* x = emu::t_block->xchg.data();
  const int me = int(threadIdx.x), base = me - emu::lane();
  x[me] = v;
  emu::warp_barrier().arrive_and_wait();
  const float r = x[base + (emu::lane() ^ mask)];
  emu::warp_barrier().arrive_and_wait();
  return r;
}
[[noreturn]] inline void __trap() { std::abort(); }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }

namespace nvcuda::wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

inline float as_float(float v) { return v; }
inline float as_float(__half v) { return __half2float(v); }
inline float as_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// The whole 16x16 tile in every lane, row-major: x[r * 16 + c].
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int num_elements = 256;
  using elem = std::conditional_t<std::is_same_v<Use, accumulator>, float, T>;
  elem x[256];
};

template <class Use, class T, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.x[r * 16 + c] = std::is_same_v<Layout, col_major> ? p[c * ldm + r] : p[r * ldm + c];
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}

// A warp-wide store: lane 0 writes (the others hold the same values); the kernel's next
// __syncwarp publishes it, as on the GPU.
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  if (emu::lane() != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * 16 + c];
}

template <class Use, class T, class Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float v) {
  for (auto& e : f.x) e = v;
}

template <class T, class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      float acc = c.x[r * 16 + n];
      for (int k = 0; k < 16; ++k) acc += as_float(a.x[r * 16 + k]) * as_float(b.x[k * 16 + n]);
      out[r * 16 + n] = acc;
    }
  for (int t = 0; t < 256; ++t) d.x[t] = out[t];
}

}  // namespace nvcuda::wmma
