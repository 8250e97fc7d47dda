// The CUDA runtime calls pyattn's kernel host code makes, for the emulated device of
// emulate.h (no libcudart is linked): compute capability emu::g_cc_major.minor,
// emu::g_sm_count SMs, 227 KiB of opt-in shared memory, "device" memory that is host memory.
#include "emulate.h"

extern "C" {

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = emu::g_cc_major; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = emu::g_cc_minor; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 * 1024; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = emu::g_sm_count; return cudaSuccess;
    case cudaDevAttrCooperativeLaunch: *value = 1; return cudaSuccess;
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }

// One block per SM (the most a cooperative launch takes here), if its shared memory fits.
// (cuda_runtime.h's template cudaOccupancyMaxActiveBlocksPerMultiprocessor calls this.)
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* blocks, const void*, int, size_t smem,
                                                                   unsigned) {
  *blocks = smem <= 227 * 1024 ? 1 : 0;
  return cudaSuccess;
}

cudaError_t cudaGetLastError() { return cudaSuccess; }

cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t) {
  std::memset(p, value, count);
  return cudaSuccess;
}

}  // extern "C"
