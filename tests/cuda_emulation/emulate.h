// Runs pyattn's CUDA code on CPU threads, to test kernel logic on machines without a GPU.
// Included before a kernels/cuda/*.cu file, which the host compiler then compiles with
// -DPYATTN_CUDA_EMULATION:
// - a launch (PYATTN_LAUNCH, cuda/launch.cuh) runs the blocks one after another, each
//   with one std::thread per CUDA thread; a cooperative launch
//   (PYATTN_LAUNCH_COOPERATIVE) runs all blocks at once, as a grid barrier needs;
// - __shared__ variables become statics (one block runs at a time, so they are the
//   block's; a cooperatively launched kernel must not have any), dynamic shared memory
//   (PYATTN_DYNAMIC_SMEM) a buffer per running block, poisoned before the block runs;
// - __syncthreads / __syncwarp are barriers (a barrier that some thread never reaches
//   aborts after a minute instead of hanging), shuffles go through an exchange buffer,
//   atomics are std::atomic_ref;
// - the PTX instructions of kernels/cuda/ptx.cuh (mma.sync, ldmatrix, cp.async) are
//   emulated lane by lane in ptx_emulated.h, with the fragment layouts the PTX ISA
//   documents; a cp.async destination reads NaN from the issue until the copy lands at
//   its thread's wait (the latest moment allowed);
// - the runtime calls the kernels make are stubs on host memory; the "device" has
//   compute capability emu::g_cc_major.x, emu::g_sm_count SMs that take one block each,
//   and 227 KiB of opt-in shared memory.
// Not a general emulator: only what pyattn's kernels use. It checks logic (indexing,
// masks, reductions, fragment layouts, barriers in the right places for this schedule),
// not races under the GPU's scheduling, or speed.
#pragma once

#include <cuda_runtime.h>  // types (dim3, cudaStream_t, cudaError_t) before the macros below
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/atomic>  // libcu++ compiles for the host too: grid barriers use it as is

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace emu {

// A reusable barrier that aborts the process when a thread waits more than a minute.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(m_);
    const uint64_t gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return gen_ != gen; })) {
      std::fprintf(stderr, "cuda emulation: a barrier waited 60 s (a thread skipped __syncthreads?)\n");
      std::abort();
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0;
  uint64_t gen_ = 0;
};

struct Block {
  dim3 block_idx, block_dim, grid_dim;
  unsigned char* smem;  // dynamic shared memory
  Barrier* all;
  std::vector<Barrier*> warps;
  std::vector<uint64_t> xchg;  // warp exchanges: two halves of kSlotWords per thread
};

constexpr int kSlotWords = 4;  // 64-bit words a lane publishes in one warp exchange

// A cp.async copy (ptx_emulated.h) not landed yet: its destination is poisoned at the
// issue and the data lands at the issuing thread's wait, the latest moment the GPU allows.
struct AsyncCopy {
  void* dst;
  const void* src;
  int src_bytes;
  int64_t group;  // -1 until committed, then the number of commits before its own
};
inline thread_local std::vector<AsyncCopy> t_async_copies;
inline thread_local int64_t t_async_commits = 0;  // commits this thread has made, empty groups too

inline thread_local dim3 t_thread_idx;
inline thread_local Block* t_block = nullptr;
inline int g_cc_major = 8, g_cc_minor = 0;
inline int g_sm_count = 4;  // tests may raise it (set_sm_count) for kernels sized by the SM count
constexpr size_t kMaxDynamicSmem = size_t(1) << 18;
alignas(128) inline unsigned char g_dynamic_smem[kMaxDynamicSmem];

inline int lane() { return int(t_thread_idx.x) % 32; }
inline Barrier& warp_barrier() { return *t_block->warps[t_thread_idx.x / 32]; }

// A warp-wide exchange (shuffles, mma, ldmatrix): publishes this lane's n <= kSlotWords
// words, waits for the warp, and returns the warp's slots, lane l's words at
// [l·kSlotWords, l·kSlotWords + n). Consecutive exchanges alternate between two halves of
// the buffer, so one barrier is enough: a lane can write this half again only two
// exchanges later, past a barrier that every lane reaches after it has read this one.
inline const uint64_t* exchange(const uint64_t* mine, int n) {
  static thread_local int half = 0;
  half ^= 1;
  uint64_t* x = t_block->xchg.data() + size_t(half) * t_block->block_dim.x * kSlotWords;
  std::memcpy(x + size_t(t_thread_idx.x) * kSlotWords, mine, size_t(n) * sizeof(uint64_t));
  warp_barrier().arrive_and_wait();
  return x + size_t(t_thread_idx.x - lane()) * kSlotWords;
}

inline void check_smem(size_t smem) {
  if (smem > kMaxDynamicSmem) {
    std::fprintf(stderr, "cuda emulation: %zu bytes of dynamic shared memory asked for\n", smem);
    std::abort();
  }
}

// One running block: its barriers, and its threads once started.
struct RunningBlock {
  Barrier all;
  std::vector<std::unique_ptr<Barrier>> warps;
  Block b;
  RunningBlock(dim3 idx, dim3 block, dim3 grid, unsigned char* smem, size_t smem_bytes) : all(int(block.x)) {
    const int threads = int(block.x);
    for (int w = 0; w < (threads + 31) / 32; ++w) warps.push_back(std::make_unique<Barrier>(std::min(32, threads - 32 * w)));
    b = Block{idx, block, grid, smem, &all, {}, std::vector<uint64_t>(2 * size_t(threads) * kSlotWords)};
    for (auto& w : warps) b.warps.push_back(w.get());
    // Shared memory starts undefined on the GPU: poison it (all-ones bytes read as NaN
    // in floating point), so a kernel that reads before writing fails here too.
    std::memset(smem, 0xff, smem_bytes);
  }
  template <class... P, class... A>
  void start(std::vector<std::thread>& pool, void (*kernel)(P...), A&... args) {
    for (int t = 0; t < int(b.block_dim.x); ++t)
      pool.emplace_back([this, t, kernel, &args...] {
        t_thread_idx = dim3(unsigned(t), 0, 0);
        t_block = &b;
        kernel(args...);
        if (!t_async_copies.empty()) {
          std::fprintf(stderr, "cuda emulation: a thread ended with cp.async copies it never waited for\n");
          std::abort();
        }
      });
  }
};

// Runs kernel(args...) for every thread of every block of grid (1-d blocks), one block
// after another.
template <class... P, class... A>
void run(dim3 grid, dim3 block, size_t smem, void (*kernel)(P...), A&&... args) {
  check_smem(smem);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        RunningBlock rb(dim3(x, y, z), block, grid, g_dynamic_smem, smem);
        std::vector<std::thread> pool;
        rb.start(pool, kernel, args...);
        for (auto& th : pool) th.join();
      }
}

// A cooperative launch: every block of the (1-d) grid at once, each with its own
// dynamic shared memory. Fails as the GPU would when the grid exceeds the SMs.
template <class P>
cudaError_t run_cooperative(dim3 grid, dim3 block, size_t smem, void (*kernel)(P), P arg) {
  check_smem(smem);
  if (grid.y != 1 || grid.z != 1 || grid.x > unsigned(g_sm_count)) return cudaErrorCooperativeLaunchTooLarge;
  std::vector<std::vector<unsigned char>> smems(grid.x, std::vector<unsigned char>(std::max<size_t>(smem, 1)));
  std::vector<std::unique_ptr<RunningBlock>> blocks;
  std::vector<std::thread> pool;
  for (unsigned x = 0; x < grid.x; ++x)
    blocks.push_back(std::make_unique<RunningBlock>(dim3(x, 1, 1), block, grid, smems[x].data(), smem));
  for (auto& rb : blocks) rb->start(pool, kernel, arg);
  for (auto& th : pool) th.join();
  return cudaSuccess;
}

// PYATTN_LAUNCH(grid, block, smem, stream, kernel)(args...)
template <class... P>
struct Launch {
  dim3 grid, block;
  size_t smem;
  void (*kernel)(P...);
  template <class... A>
  void operator()(A&&... args) const {
    run(grid, block, smem, kernel, std::forward<A>(args)...);
  }
};
template <class... P>
Launch<P...> launch(dim3 grid, dim3 block, size_t smem, void (*kernel)(P...)) {
  return {grid, block, smem, kernel};
}

}  // namespace emu

#define PYATTN_LAUNCH(grid, block, smem, stream, ...) ::emu::launch(dim3(grid), dim3(block), size_t(smem), __VA_ARGS__)
#define PYATTN_LAUNCH_COOPERATIVE(grid, block, smem, stream, kernel, arg) \
  ::emu::run_cooperative(dim3(grid), dim3(block), size_t(smem), kernel, arg)
// Thread-local, so that it is set in each CUDA thread (every one a fresh std::thread) on
// first use from that thread's block, at namespace scope as in a kernel.
#define PYATTN_DYNAMIC_SMEM(name, align) static thread_local unsigned char* const name = ::emu::t_block->smem
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define threadIdx (::emu::t_thread_idx)
#define blockIdx (::emu::t_block->block_idx)
#define blockDim (::emu::t_block->block_dim)
#define gridDim (::emu::t_block->grid_dim)

inline void __syncthreads() { emu::t_block->all->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier().arrive_and_wait(); }
template <class V>
V __shfl_xor_sync(unsigned, V v, int lane_mask, int = 32) {
  static_assert(sizeof(V) <= sizeof(uint64_t) && std::is_trivially_copyable_v<V>);
  uint64_t mine = 0;
  std::memcpy(&mine, &v, sizeof(V));
  const uint64_t* warp = emu::exchange(&mine, 1);
  V r;
  std::memcpy(&r, &warp[(emu::lane() ^ lane_mask) * emu::kSlotWords], sizeof(V));
  return r;
}
template <class V>
V atomicAdd(V* p, V v) {
  return std::atomic_ref<V>(*p).fetch_add(v);
}
template <class V>
V atomicExch(V* p, V v) {
  return std::atomic_ref<V>(*p).exchange(v);
}
[[noreturn]] inline void __trap() { std::abort(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __nanosleep(unsigned) { std::this_thread::sleep_for(std::chrono::microseconds(20)); }
template <class V>
V __ldcg(const V* p) {
  return *p;
}
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }

// The CUDA runtime functions the kernels' host code calls are defined, on the emulated
// device, in runtime_stubs.cpp.
