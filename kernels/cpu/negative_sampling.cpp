// CPU entry points of the negative-sampling ops: the body compiled per ISA, then dispatched.
#include <atomic>
#include <mutex>

#include "pyattn/negative_sampling.h"

#define PYATTN_CPU_BODY "cpu/negative_sampling_body.h"
#include "cpu/isa_regions.h"

namespace pyattn {

void negative_sampling_update_cpu(const NegSamplingUpdateParams& p, ParallelFor parallel_for) {
  PYATTN_CPU_DISPATCH(negative_sampling_update, p, parallel_for)
}

void sgns_loss_cpu(const SgnsLossParams& p, ParallelFor parallel_for) {
  PYATTN_CPU_DISPATCH(sgns_loss, p, parallel_for)
}

}  // namespace pyattn
