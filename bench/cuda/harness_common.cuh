// What the standalone CUDA harnesses (bench/cuda/*_harness.cu) share: a CUDA error
// check that exits, and a timer.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#define CHECK_CUDA(call)                                                                                  \
  do {                                                                                                     \
    const cudaError_t err_ = (call);                                                                       \
    if (err_ != cudaSuccess) {                                                                             \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_));       \
      std::exit(1);                                                                                        \
    }                                                                                                      \
  } while (0)

namespace harness {

// Prints the device the harness runs on.
inline void print_device() {
  int dev = 0;
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDevice(&dev));
  CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
  std::printf("device %s, %d SMs, compute capability %d.%d\n", prop.name, prop.multiProcessorCount, prop.major,
              prop.minor);
}

// Mean milliseconds per call over enough calls to take about 100 ms, after a warm-up.
template <typename F>
double time_ms(F&& f) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  f();
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaEventRecord(start));
  f();
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float once = 0;
  CHECK_CUDA(cudaEventElapsedTime(&once, start, stop));
  const int reps = std::clamp(int(100.f / std::max(once, 1e-3f)), 3, 200);
  CHECK_CUDA(cudaEventRecord(start));
  for (int r = 0; r < reps; ++r) f();
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float total = 0;
  CHECK_CUDA(cudaEventElapsedTime(&total, start, stop));
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return double(total) / reps;
}

}  // namespace harness
