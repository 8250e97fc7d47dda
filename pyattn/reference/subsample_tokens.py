"""Reference for ``subsample_tokens_``: word2vec's subsampling and shrunk windows for one
epoch of a token stream (kernels/include/pyattn/subsample_tokens.h)."""

from __future__ import annotations

import numpy as np

from .counter_rng import mix64

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def subsample_tokens(tokens, sentence, keep, window: int, seed: int):
    """Returns (kept tokens, their sentence ids, their window radii), int64 arrays.

    tokens, sentence: [n] int64; keep: [vocab] float64 probabilities. Token i has the draw
    r = mix64(seed * golden + i + 1) (uint64, wrapping); it is kept when
    (r >> 32) / 2^32 < keep[tokens[i]], and a kept token's radius is
    window - (((r mod 2^32) * window) >> 32), in [1, window].
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    sentence = np.asarray(sentence, dtype=np.int64)
    keep = np.asarray(keep, dtype=np.float64)
    with np.errstate(over="ignore"):
        r = mix64(_U64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + np.arange(len(tokens), dtype=_U64) + _U64(1))
    u = (r >> _U64(32)).astype(np.float64) / 2.0**32
    b = (((r & _U64(0xFFFFFFFF)) * _U64(window)) >> _U64(32)).astype(np.int64)
    kept = u < keep[tokens]
    return tokens[kept], sentence[kept], (window - b)[kept]
