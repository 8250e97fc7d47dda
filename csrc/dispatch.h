// Shared torch glue: output allocation, folding leading dims into [batch, heads], running
// a kernel on the tensor's device (CPU threads from torch, or the current CUDA stream
// under a device guard with a launch check), and registering an op file's
// implementations for both devices. Argument checks: checks.h.
#pragma once

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <array>
#include <vector>

#include "pyattn/common.h"

// Registers the implementations that register_fn (a void(torch::Library&)) adds, for the
// CPU and the CUDA dispatch keys alike: an op file lists them once. run_kernel sends CUDA
// tensors to the CPU-only build's error. (TORCH_LIBRARY_IMPL names each block uniquely.)
#define PYATTN_IMPL_CPU_AND_CUDA(register_fn)            \
  TORCH_LIBRARY_IMPL(pyattn, CPU, m) { register_fn(m); } \
  TORCH_LIBRARY_IMPL(pyattn, CUDA, m) { register_fn(m); }

#ifdef PYATTN_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define PYATTN_CUDA_LAUNCHER(fn) (&(fn))
#else
#define PYATTN_CUDA_LAUNCHER(fn) nullptr
#endif

namespace pyattn {

// at::empty(sizes, options), contiguous. A large CPU output (>= 4 MiB) is first advised
// to use transparent huge pages before anything touches it: a fresh 100 MB tensor
// otherwise costs ~25k page faults on first write, which on VMs took longer than the
// kernel itself. Memory stays torch's (freed by its allocator); the advice is a hint.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

// at::parallel_for behind the kernels' ParallelFor (honours torch.set_num_threads).
void torch_parallel_for(int64_t n, int64_t grain, const RangeBody& body);

// Leading dims (all but the last two) of same-shaped tensors folded into two,
// [batch, heads], with each tensor's element strides for (batch, heads, rows).
// Fails (ok = false) when more than two leading dims cannot be merged for every tensor.
struct Folded {
  bool ok = false;
  int64_t batch = 1, heads = 1;
  std::vector<std::array<int64_t, 3>> strides;  // per tensor: batch, heads, row strides
};
Folded fold_leading_dims(const std::vector<at::Tensor>& same_shape);

// A mask, already checked to broadcast to `sizes` (its trailing dims equal or 1), as a
// view of `sizes` with last-dim stride 1: only a broadcast last dim is materialised
// (the kernels step along keys with stride 1); other broadcast dims get stride 0.
at::Tensor broadcast_mask(const at::Tensor& mask, at::IntArrayRef sizes);

template <class T>
struct NoDeduce { using type = T; };

// Runs cpu(params, torch_parallel_for) or cuda(params, stream) on `like`'s device;
// cuda is nullptr (PYATTN_CUDA_LAUNCHER) in a CPU-only build.
template <class Params>
void run_kernel(const at::Tensor& like, const char* op, const Params& params,
                void (*cpu)(const Params&, ParallelFor),
                typename NoDeduce<void (*)(const Params&, cudaStream)>::type cuda) {
  if (like.is_cuda()) {
    TORCH_CHECK(cuda != nullptr, op,
                ": got CUDA tensors, but pyattn was built without CUDA. Rebuild it where torch has CUDA "
                "and nvcc is installed: `pip install --no-build-isolation -e .` (PYATTN_FORCE_CUDA=1 to require CUDA)");
#ifdef PYATTN_WITH_CUDA
    const c10::cuda::CUDAGuard guard(like.device());
    cuda(params, reinterpret_cast<cudaStream>(c10::cuda::getCurrentCUDAStream().stream()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
    return;
  }
  TORCH_CHECK(like.is_cpu(), op, ": tensors on ", like.device(), " are not supported (CPU or CUDA only)");
  cpu(params, &torch_parallel_for);
}

// For kernels that may decline a shape: runs cuda(params, stream) on `like`'s CUDA device
// and returns whether it launched (checked). False for a CPU tensor or a CPU-only build
// (cuda nullptr), so the caller's general path runs.
template <class Params>
bool try_cuda_kernel(const at::Tensor& like, const Params& params,
                     typename NoDeduce<bool (*)(const Params&, cudaStream)>::type cuda) {
  if (!like.is_cuda() || cuda == nullptr) return false;
#ifdef PYATTN_WITH_CUDA
  const c10::cuda::CUDAGuard guard(like.device());
  const bool launched = cuda(params, reinterpret_cast<cudaStream>(c10::cuda::getCurrentCUDAStream().stream()));
  if (launched) C10_CUDA_KERNEL_LAUNCH_CHECK();
  return launched;
#else
  return false;
#endif
}

}  // namespace pyattn
