// Types shared by csrc/ (torch glue) and kernels/ (compute). No torch headers here:
// kernels see raw pointers, element strides and sizes only.
#pragma once

#include <cstdint>
#include <functional>

// The CUDA stream type without the CUDA headers, so CPU-only builds can include this.
struct CUstream_st;

namespace pyattn {

using cudaStream = CUstream_st*;

// Element types a kernel may be asked to read or write.
enum class DType : int32_t { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

// How a mask tensor is to be read. A boolean mask is one byte per element (torch.bool or
// uint8) and comes in two polarities, named here so that no kernel guesses:
//   none:     no mask pointer.
//   keep:     boolean, nonzero = attend (SDPA convention): the attention kernels.
//   drop:     boolean, nonzero = masked out (Megatron and nn.MultiheadAttention
//             convention): the scaled_masked_softmax kernels.
//   additive: same dtype as the scores, added to scale*x before the softmax.
// Each kernel reads none, additive and its one boolean polarity (documented in its params).
enum class MaskKind : int32_t { none = 0, keep = 1, drop = 2, additive = 3 };

// Runs body(begin, end) over disjoint chunks covering [0, n), chunks of at least
// `grain` items, possibly on several threads. csrc/ supplies one backed by
// at::parallel_for so kernels honour torch.set_num_threads without linking torch.
using RangeBody = std::function<void(int64_t begin, int64_t end)>;
using ParallelFor = void (*)(int64_t n, int64_t grain, const RangeBody& body);

// Run-time CPU instruction sets a CPU kernel may pick (kernels/cpu/isa.cpp).
enum class CpuIsa : int32_t { generic = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3 };
CpuIsa cpu_isa();                       // in use: the best, unless PYATTN_CPU_ISA / set_cpu_isa chose lower
CpuIsa cpu_isa_best();                  // the best the running CPU and OS support
void set_cpu_isa(CpuIsa isa);           // throws std::invalid_argument above cpu_isa_best()
CpuIsa parse_cpu_isa(const char* name); // "generic", "avx2", "avx512", "avx512_bf16"
const char* cpu_isa_name(CpuIsa isa);

// CUDA builds only: the GPU architectures compiled in, e.g. "800,900" (kernels/cuda/build_facts.cu).
const char* cuda_arch_list();

}  // namespace pyattn
