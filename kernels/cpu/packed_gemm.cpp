// CPU entry point of the packed_gemm op: the body compiled per ISA, then dispatched.
#include <memory>

#include "pyattn/packed_gemm.h"

#define PYATTN_CPU_BODY "cpu/packed_gemm_body.h"
#include "cpu/isa_regions.h"

namespace pyattn {

void packed_gemm_cpu(const PackedGemmParams& p, ParallelFor parallel_for) { PYATTN_CPU_DISPATCH(packed_gemm, p, parallel_for) }

}  // namespace pyattn
