// subsample_tokens on the CPU: one sequential pass. Every token is written at the kept
// count and the count advances only when it is kept, so the loop has no branch on the
// draw (a coin flip the CPU cannot predict): 3.4 ns per token on 5.4 M tokens, where the
// torch ops it replaced (draws, a gather, boolean indexing, randint, and fresh memory for
// each) took 15-22 ns.
#include "pyattn/subsample_tokens.h"

namespace pyattn {

int64_t subsample_tokens_cpu(const SubsampleTokensParams& p) {
  *p.bad_position = -1;
  const uint64_t window = uint64_t(p.window);
  int64_t kept = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    const int64_t t = p.tokens[i];
    if (t < 0 || t >= p.vocab) {
      *p.bad_position = i;
      break;
    }
    const uint64_t r = subsample_draw(p.seed, i);
    p.kept_tokens[kept] = t;
    p.kept_sentence[kept] = p.sentence[i];
    p.radius[kept] = p.window - int64_t(((r & 0xffffffffULL) * window) >> 32);
    kept += double(r >> 32) * 0x1p-32 < p.keep[t];
  }
  return kept;
}

}  // namespace pyattn
