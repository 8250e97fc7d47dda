// Softmax arithmetic shared by the CPU and CUDA kernels, so CPU tests exercise the
// same edge-case handling the GPU runs. Acc is float (for f32/f16/bf16 data) or double.
//
// Masked logits are -inf. A row whose every logit is -inf has max -inf and must give
// y = 0, not exp(-inf - -inf) = NaN; exp_shifted and inv_sum encode that rule. A NaN
// logit still makes its whole row NaN (as torch.softmax): it reaches the sum, and
// inv_sum(NaN) is NaN.
#pragma once

#include "pyattn/hd_math.h"

namespace pyattn {
namespace softmax_math {

template <typename Acc>
PYATTN_HD Acc neg_inf() {
  return static_cast<Acc>(-INFINITY);
}

// exp(z - m) for m = the row max (or a running max, m >= z unless z is NaN). A -inf
// logit contributes exactly 0, also when m is -inf too (all masked so far).
template <typename Acc>
PYATTN_HD Acc exp_shifted(Acc z, Acc m) {
  return z == neg_inf<Acc>() ? Acc(0) : exp_acc(z - m);
}

// The factor turning exp_shifted values into probabilities: 1/sum, or 0 for a row with
// nothing left unmasked (sum == 0; a finite max gives sum >= 1). NaN stays NaN.
template <typename Acc>
PYATTN_HD Acc inv_sum(Acc s) {
  return s == Acc(0) ? Acc(0) : Acc(1) / s;
}

// Running softmax normaliser of a stream of logits: invariant s = sum exp(z - m) over
// the logits seen, m = their max. Lets a row be reduced in one read, in pieces, and
// the pieces merged in any order.
template <typename Acc>
struct OnlineSoftmax {
  Acc m;
  Acc s;

  PYATTN_HD static OnlineSoftmax empty() { return {neg_inf<Acc>(), Acc(0)}; }

  // One exp per logit: the new logit's, or the rescale of s when the max moves. A new
  // max contributes exp(z - z): 1, or NaN for z = +inf (as the two-pass form gives).
  PYATTN_HD void add(Acc z) {
    if (z > m) {
      s = s * exp_shifted(m, z) + ((z - z) + Acc(1));
      m = z;
    } else {
      s += exp_shifted(z, m);
    }
  }

  PYATTN_HD void merge(const OnlineSoftmax& o) {
    const Acc mx = o.m > m ? o.m : m;
    s = s * exp_shifted(m, mx) + o.s * exp_shifted(o.m, mx);
    m = mx;
  }
};

}  // namespace softmax_math
}  // namespace pyattn
