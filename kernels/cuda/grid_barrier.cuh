// A barrier across all blocks of a cooperative launch (PYATTN_LAUNCH_COOPERATIVE in
// cuda/launch.cuh guarantees that every block is resident, so spinning cannot deadlock).
//
// The blocks count their arrivals on one unsigned counter in global memory, zeroed
// before the launch: the k-th barrier of the kernel (k = 1, 2, ...) releases once
// k·gridDim.x arrivals are in. Global stores made before a barrier are visible to every
// block after it; read them with __ldcg (L2), since a line another SM wrote is not in
// this SM's L1 but must not be taken from it either.
#pragma once

#include <cuda/atomic>

namespace pyattn {

__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned k) {
  __threadfence();  // this thread's stores, before the block's arrival is counted
  __syncthreads();
  if (threadIdx.x == 0) {
    cuda::atomic_ref<unsigned, cuda::thread_scope_device> arrivals(*counter);
    arrivals.fetch_add(1u, cuda::memory_order_release);
    const unsigned target = k * gridDim.x;
    while (arrivals.load(cuda::memory_order_acquire) < target) __nanosleep(32);
    __threadfence();
  }
  __syncthreads();
}

}  // namespace pyattn
