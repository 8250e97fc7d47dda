"""subsample_tokens_: word2vec's subsampling and shrunk windows for one epoch in one pass
over the token stream (``torch.ops.pyattn.subsample_tokens_``, csrc/subsample_tokens.cpp;
semantics in pyattn/reference/subsample_tokens.py), used by :mod:`pyattn.word2vec` on the
CPU. It writes its three output buffers in place and returns the kept count. No
derivative."""

from __future__ import annotations

import torch


# ----------------------------------------------------------------------- fake


@torch.library.register_fake("pyattn::subsample_tokens_")
def _subsample_tokens_fake(tokens, sentence, keep, window, seed, kept_tokens, kept_sentence, radius):
    return tokens.new_empty(())
