// CPU entry points of attention: the body compiled per ISA, then dispatched.
#include <atomic>
#include <type_traits>

#include "pyattn/attention.h"
#include "pyattn/dropout_math.h"

#define PYATTN_CPU_BODY "cpu/attention_body.h"
#include "cpu/isa_regions.h"

namespace pyattn {

void attention_fwd_cpu(const AttentionFwdParams& p, ParallelFor parallel_for) {
  PYATTN_CPU_DISPATCH(attention_fwd, p, parallel_for)
}

void attention_weights_cpu(const AttentionWeightsParams& p, ParallelFor parallel_for) {
  PYATTN_CPU_DISPATCH(attention_weights, p, parallel_for)
}

void attention_bwd_cpu(const AttentionBwdParams& p, ParallelFor parallel_for) {
  PYATTN_CPU_DISPATCH(attention_bwd, p, parallel_for)
}

void attention_dropout_cpu(const AttentionDropoutParams& p, ParallelFor parallel_for) {
  PYATTN_CPU_DISPATCH(attention_dropout, p, parallel_for)
}

}  // namespace pyattn
