// CPU entry points of the lstm pointwise kernels: the body compiled per ISA, then dispatched.
#include "pyattn/lstm.h"
#include "pyattn/lstm_math.h"  // for the body: the scalar activations

#define PYATTN_CPU_BODY "cpu/lstm_body.h"
#include "cpu/isa_regions.h"

namespace pyattn {

void lstm_fwd_cpu(const LstmFwdParams& p, ParallelFor parallel_for) { PYATTN_CPU_DISPATCH(lstm_fwd, p, parallel_for) }

void lstm_bwd_cpu(const LstmBwdParams& p, ParallelFor parallel_for) { PYATTN_CPU_DISPATCH(lstm_bwd, p, parallel_for) }

}  // namespace pyattn
