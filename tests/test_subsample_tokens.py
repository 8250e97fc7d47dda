"""subsample_tokens_: word2vec's subsampling and shrunk windows in one pass, checked
against pyattn/reference/subsample_tokens.py (NumPy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyattn  # noqa: F401
from pyattn.reference import subsample_tokens as reference

OPS = torch.ops.pyattn
USER_ERRORS = (RuntimeError, ValueError, TypeError)


def _run(tokens, sentence, keep, window, seed, spare=0):
    """The op on fresh output buffers (spare: entries beyond one per token); returns the kept prefixes."""
    n = len(tokens)
    outs = [torch.full((n + spare,), -7, dtype=torch.int64) for _ in range(3)]
    kept = int(OPS.subsample_tokens_(tokens, sentence, keep, window, seed, *outs))
    return tuple(o[:kept] for o in outs)


def _stream(rng, n, vocab):
    tokens = torch.from_numpy(rng.integers(0, vocab, n))
    sentence = torch.from_numpy(np.cumsum(rng.random(n) < 0.05))
    keep = torch.from_numpy(rng.random(vocab))
    return tokens, sentence, keep


@pytest.mark.parametrize("n, vocab, window", [(0, 5, 5), (1, 1, 1), (37, 4, 2), (5000, 300, 5), (20000, 7, 10)])
def test_matches_reference(n, vocab, window, rng):
    tokens, sentence, keep = _stream(rng, n, vocab)
    seed = int(rng.integers(0, 2**63))
    got = _run(tokens, sentence, keep, window, seed, spare=int(rng.integers(0, 3)))
    want = reference(tokens.numpy(), sentence.numpy(), keep.numpy(), window, seed)
    for g, w, name in zip(got, want, ("kept_tokens", "kept_sentence", "radius")):
        np.testing.assert_array_equal(g.numpy(), w, err_msg=name)


def test_keep_rates_and_radii_are_uniform(rng):
    """Each id is kept at its probability, and radii are uniform over [1, window] (each
    share within 6 standard errors)."""
    vocab, n, window = 4, 200_000, 5
    tokens = torch.from_numpy(rng.integers(0, vocab, n))
    keep = torch.tensor([1.0, 0.5, 0.1, 0.0], dtype=torch.float64)
    kept, _, radius = _run(tokens, torch.zeros(n, dtype=torch.int64), keep, window, int(rng.integers(0, 2**62)))
    seen = np.bincount(tokens.numpy(), minlength=vocab)
    rate = np.bincount(kept.numpy(), minlength=vocab) / seen
    np.testing.assert_allclose(rate, keep.numpy(), atol=6 * np.sqrt(0.25 / seen.min()))
    share = np.bincount(radius.numpy(), minlength=window + 1)[1:] / len(radius)
    np.testing.assert_allclose(share, 1 / window, atol=6 * np.sqrt(0.2 * 0.8 / len(radius)))
    assert radius.min() >= 1 and radius.max() <= window


def test_seeds_differ_and_repeat(rng):
    tokens, sentence, keep = _stream(rng, 3000, 50)
    a = _run(tokens, sentence, keep, 5, 11)
    b = _run(tokens, sentence, keep, 5, 11)
    c = _run(tokens, sentence, keep, 5, 12)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len(a[0]) != len(c[0]) or not torch.equal(a[2], c[2])


def test_bad_inputs():
    tokens, sentence = torch.arange(6) % 3, torch.zeros(6, dtype=torch.int64)
    keep = torch.ones(3, dtype=torch.float64)

    def call(tokens=tokens, sentence=sentence, keep=keep, window=2, outs=None):
        outs = outs or [torch.empty(6, dtype=torch.int64) for _ in range(3)]
        return OPS.subsample_tokens_(tokens, sentence, keep, window, 0, *outs)

    assert int(call()) == 6
    with pytest.raises(USER_ERRORS, match="tokens has 2 dims"):
        call(tokens=tokens[None])
    with pytest.raises(USER_ERRORS, match="tokens has dtype Int"):
        call(tokens=tokens.int())
    with pytest.raises(USER_ERRORS, match="sentence has 5 entries, expected one per token"):
        call(sentence=sentence[:5])
    with pytest.raises(USER_ERRORS, match=r"keep has 2 dims, expected 1 \(vocab,\)"):
        call(keep=keep[None])
    with pytest.raises(USER_ERRORS, match="keep has dtype Float"):
        call(keep=keep.float())
    with pytest.raises(USER_ERRORS, match="window is 0, expected >= 1"):
        call(window=0)
    with pytest.raises(USER_ERRORS, match="radius has 5 entries, expected at least one per token"):
        call(outs=[torch.empty(n, dtype=torch.int64) for n in (6, 6, 5)])
    with pytest.raises(USER_ERRORS, match="kept_sentence must be contiguous"):
        call(outs=[torch.empty(6, dtype=torch.int64), torch.empty(12, dtype=torch.int64)[::2],
                   torch.empty(6, dtype=torch.int64)])
    with pytest.raises(USER_ERRORS, match=r"tokens holds id 3 at 3, outside \[0, 3\)"):
        call(tokens=torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(USER_ERRORS, match=r"tokens holds id -1 at 1, outside"):
        call(tokens=torch.tensor([0, -1, 2, 0, 0, 1]))


def test_opcheck(rng):
    tokens, sentence, keep = _stream(rng, 40, 6)
    outs = [torch.empty(40, dtype=torch.int64) for _ in range(3)]
    torch.library.opcheck(OPS.subsample_tokens_, (tokens, sentence, keep, 3, 5, *outs),
                          test_utils=("test_schema", "test_faketensor"))
