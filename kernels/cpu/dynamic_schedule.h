// A dynamic schedule over the ParallelFor the kernels receive. Included by
// cpu/isa_regions.h before the ISA regions (no intrinsics here).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "pyattn/common.h"

namespace pyattn::cpu {

// Runs task(t, work) for every t in [0, n) on up to `threads` workers that take tasks
// from a shared counter, so that a worker slowed down (a busy machine, blocks of unequal
// cost) does not leave the others idle as a fixed split would. make_work() builds one
// worker's scratch.
template <class MakeWork, class Task>
void run_dynamic(int64_t n, int threads, ParallelFor parallel_for, MakeWork make_work, Task task) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, n));
  parallel_for(workers, 1, [&](int64_t w0, int64_t w1) {
    if (w0 >= w1) return;
    auto work = make_work();  // one worker per call; a call given several drains the counter alone
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < n;
         t = next.fetch_add(1, std::memory_order_relaxed))
      task(t, work);
  });
}

}  // namespace pyattn::cpu
