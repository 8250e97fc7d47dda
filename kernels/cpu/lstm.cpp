// CPU entry points of the lstm kernels: the body compiled per ISA, then dispatched.
#include <atomic>  // for the body: the fused loop's step synchronisation
#include <memory>
#include <thread>

#include "pyattn/lstm.h"
#include "pyattn/lstm_math.h"  // for the body: the scalar activations

#define PYATTN_CPU_BODY "cpu/lstm_body.h"
#include "cpu/isa_regions.h"

namespace pyattn {

void lstm_fwd_cpu(const LstmFwdParams& p, ParallelFor parallel_for) { PYATTN_CPU_DISPATCH(lstm_fwd, p, parallel_for) }

void lstm_bwd_cpu(const LstmBwdParams& p, ParallelFor parallel_for) { PYATTN_CPU_DISPATCH(lstm_bwd, p, parallel_for) }

void lstm_seq_fwd_cpu(const LstmSeqFwdParams& p, ParallelFor parallel_for) {
  PYATTN_CPU_DISPATCH(lstm_seq_fwd, p, parallel_for)
}

void lstm_seq_bwd_cpu(const LstmSeqBwdParams& p, ParallelFor parallel_for) {
  PYATTN_CPU_DISPATCH(lstm_seq_bwd, p, parallel_for)
}

// Packing is plain copying and the layout is the same on every ISA: the generic code.
namespace pg = cpu::generic::pgemm;

int64_t lstm_packed_gates_size(int64_t in_features, int64_t hidden) {
  return pg::packed_floats(4, hidden, in_features + hidden);
}

void lstm_pack_gates_cpu(const float* w_ih, int64_t ih_s0, int64_t ih_s1, int64_t in_features, const float* w_hh,
                         int64_t hh_s0, int64_t hh_s1, int64_t hidden, float* out, ParallelFor parallel_for) {
  // B's column c is row c of W (gate-major, as torch stores them), K along W's columns.
  const pg::PackSrc src[2] = {{w_ih, ih_s0, ih_s1, in_features}, {w_hh, hh_s0, hh_s1, hidden}};
  const int first = in_features > 0 ? 0 : 1;
  pg::pack(src + first, 2 - first, 4, hidden, out, parallel_for);
}

int64_t lstm_packed_hh_t_size(int64_t hidden) { return pg::packed_floats(1, hidden, 4 * hidden); }

void lstm_pack_hh_t_cpu(const float* w_hh, int64_t s0, int64_t s1, int64_t hidden, float* out,
                        ParallelFor parallel_for) {
  // B = W_hhᵀ [H, 4H]: column j is column j of W_hh, K along its 4H rows.
  const pg::PackSrc src{w_hh, s1, s0, 4 * hidden};
  pg::pack(&src, 1, 1, hidden, out, parallel_for);
}

}  // namespace pyattn
