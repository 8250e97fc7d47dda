// subsample_tokens: word2vec's per-epoch token pipeline in one pass over the corpus's
// token stream (pyattn/word2vec/model.py). Token i of tokens [n] is kept when
// u_i < keep[tokens[i]] (subsampling); each kept token gets the window radius
// window - b_i, b_i uniform in [0, window) (word2vec.c's shrunk window). u_i and b_i come
// from one counter-based draw r_i = mix64(seed · φ + i + 1): u_i = (r_i >> 32) / 2^32 and
// b_i = ((r_i mod 2^32) · window) >> 32, so a token's fate depends on (seed, i) alone.
// Semantics are pinned by pyattn/reference/subsample_tokens.py.
#pragma once

#include "pyattn/common.h"
#include "pyattn/hd_math.h"

namespace pyattn {

struct SubsampleTokensParams {
  const int64_t* tokens;    // [n] ids in [0, vocab)
  const int64_t* sentence;  // [n] each token's sentence id
  const double* keep;       // [vocab] the probability of keeping each id
  int64_t n, vocab, window;  // window >= 1
  uint64_t seed;
  int64_t* kept_tokens;     // [>= n]: the kept tokens, in order, in the first (returned count) entries
  int64_t* kept_sentence;   // [>= n]: their sentence ids
  int64_t* radius;          // [>= n]: their window radii, in [1, window]
  int64_t* bad_position;    // [1]: where the first out-of-range token is (the pass stops there), or -1
};

// r_i above.
PYATTN_HD uint64_t subsample_draw(uint64_t seed, int64_t i) {
  return mix64(seed * 0x9e3779b97f4a7c15ULL + uint64_t(i) + 1);
}

// Returns how many tokens were kept.
int64_t subsample_tokens_cpu(const SubsampleTokensParams& p);

}  // namespace pyattn
