// How pyattn's CUDA code launches kernels and declares dynamic shared memory, as macros
// so that tests/cuda_emulation/emulate.h can run the same code on CPU threads (it
// defines them first):
//   PYATTN_LAUNCH(grid, block, smem_bytes, stream, kernel)(args...)
//       is kernel<<<grid, block, smem_bytes, stream>>>(args...)
//   PYATTN_DYNAMIC_SMEM(name, align);
//       declares the block's dynamic shared memory as unsigned char name[].
#pragma once

#ifndef PYATTN_LAUNCH
#define PYATTN_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

#ifndef PYATTN_DYNAMIC_SMEM
#define PYATTN_DYNAMIC_SMEM(name, align) extern __shared__ __align__(align) unsigned char name[]
#endif
