// How pyattn's CUDA code launches kernels and declares dynamic shared memory, as macros
// so that tests/cuda_emulation/emulate.h can run the same code on CPU threads (it
// defines them first):
//   PYATTN_LAUNCH(grid, block, smem_bytes, stream, kernel)(args...)
//       is kernel<<<grid, block, smem_bytes, stream>>>(args...)
//   PYATTN_LAUNCH_COOPERATIVE(grid, block, smem_bytes, stream, kernel, arg)
//       a cooperative launch of a kernel taking one argument: every block resident at
//       once (or an error, returned as the cudaError_t), as a grid barrier needs
//   PYATTN_DYNAMIC_SMEM(name, align);
//       declares the block's dynamic shared memory as unsigned char name[].
#pragma once

#include <cuda_runtime.h>

#ifndef PYATTN_LAUNCH
#define PYATTN_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

#ifndef PYATTN_DYNAMIC_SMEM
#define PYATTN_DYNAMIC_SMEM(name, align) extern __shared__ __align__(align) unsigned char name[]
#endif

#ifndef PYATTN_LAUNCH_COOPERATIVE
namespace pyattn::launch_detail {
template <class P>
cudaError_t cooperative(void (*kernel)(P), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, P arg) {
  void* args[] = {&arg};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block, args, smem, stream);
}
}  // namespace pyattn::launch_detail
#define PYATTN_LAUNCH_COOPERATIVE(grid, block, smem, stream, kernel, arg) \
  ::pyattn::launch_detail::cooperative(kernel, dim3(grid), dim3(block), size_t(smem), stream, arg)
#endif
