// CPU entry points of scaled_masked_softmax: the body compiled per ISA, then dispatched.
#include "pyattn/scaled_masked_softmax.h"

#define PYATTN_CPU_BODY "cpu/scaled_masked_softmax_body.h"
#include "cpu/isa_regions.h"

namespace pyattn {

void scaled_masked_softmax_fwd_cpu(const ScaledMaskedSoftmaxFwdParams& p, ParallelFor parallel_for) {
  PYATTN_CPU_DISPATCH(scaled_masked_softmax_fwd, p, parallel_for)
}

void scaled_masked_softmax_bwd_cpu(const ScaledMaskedSoftmaxBwdParams& p, ParallelFor parallel_for) {
  PYATTN_CPU_DISPATCH(scaled_masked_softmax_bwd, p, parallel_for)
}

}  // namespace pyattn
