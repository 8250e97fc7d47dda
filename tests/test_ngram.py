"""pyattn.models.ngram.NGramLM: normalisation, a pure-Python reference of the smoothing
formula, backoff, learning planted structure, a million-token smoke run, bad inputs."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from pyattn.models.ngram import NGramLM


def reference_log_prob(train, vocab_size, order, delta, query):
    """The class docstring's recursion, one token at a time with Counters:
    P_k(w | h) = (c(h w) + δ·V·P_{k-1}(w | h')) / (c(h) + δ·V), P_0 = 1 / V."""
    train = [int(t) for t in train]
    gram_counts = Counter(tuple(train[i:i + k]) for k in range(1, order + 1) for i in range(len(train) - k + 1))
    context_counts = Counter()  # c(h) = Σ_w c(h w)
    for gram, count in gram_counts.items():
        context_counts[gram[:-1]] += count
    pseudo = delta * vocab_size
    out = []
    for j, w in enumerate(int(t) for t in query):
        history = tuple(int(t) for t in query[max(0, j - order + 1):j])
        p = 1.0 / vocab_size
        for k in range(1, len(history) + 2):  # orders whose context fits in the history
            h = history[len(history) - (k - 1):] if k > 1 else ()
            p = (gram_counts[h + (w,)] + pseudo * p) / (context_counts[h] + pseudo)
        out.append(math.log(p))
    return np.array(out)


def markov_stream(rng, vocab_size, n, stay=0.9):
    """A chain whose next token is succ[previous] with probability ``stay``, else uniform."""
    succ = rng.permutation(vocab_size)
    noise = rng.integers(0, vocab_size, n)
    keep = rng.random(n) < stay
    out = np.empty(n, dtype=np.int64)
    out[0] = noise[0]
    for i in range(1, n):
        out[i] = succ[out[i - 1]] if keep[i] else noise[i]
    return out


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_next_token_distribution_sums_to_one(rng, order):
    vocab = int(rng.integers(5, 40))
    lm = NGramLM(order, delta=float(rng.uniform(0.001, 1))).fit(rng.integers(0, vocab - 1, 500), vocab)
    for context_len in range(0, order + 2):
        contexts = rng.integers(0, vocab, (16, context_len))
        contexts[:4] = rng.integers(0, vocab - 1, 1)[0]  # plus some repeats of one token
        probs = np.exp(lm.next_log_probs(contexts))
        assert probs.shape == (16, vocab)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        assert (probs > 0).all()


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_log_prob_matches_pure_python_reference(rng, order):
    vocab = int(rng.integers(3, 8))
    delta = float(rng.uniform(0.01, 1))
    train = rng.integers(0, vocab - 1, int(rng.integers(order, 300)))  # the last id never occurs
    query = rng.integers(0, vocab, 60)
    lm = NGramLM(order, delta).fit(train, vocab)
    expected = reference_log_prob(train, vocab, order, delta, query)
    np.testing.assert_allclose(lm.log_prob(query), expected, rtol=1e-12, atol=0)
    # next_log_probs scores the same token the same way
    np.testing.assert_allclose(lm.next_log_probs(query[None, :-1])[0, query[-1]], expected[-1], rtol=1e-12)
    nll_sum, n_tokens = lm.nll(query)
    assert n_tokens == query.size and nll_sum == pytest.approx(-expected.sum(), rel=1e-12)
    assert lm.perplexity(query) == pytest.approx(math.exp(-expected.mean()), rel=1e-12)


def test_unseen_contexts_back_off_to_the_lower_order(rng):
    vocab = 12
    train = rng.integers(0, vocab - 1, 2000)  # id vocab - 1 never occurs
    a, b, other = rng.choice(vocab - 1, size=3, replace=False)
    train[1:][(train[:-1] == a) & (train[1:] == b)] = other  # the bigram (a, b) never occurs
    lm = NGramLM(order=3, delta=0.05).fit(train, vocab)
    # (a, b) never occurs: the trigram model's P(. | a b) is the bigram model's P(. | b)
    np.testing.assert_allclose(lm.next_log_probs([[a, b]]), lm.next_log_probs([[b]]), rtol=1e-13)
    # an unseen token as context: the bigram and trigram levels give the unigram distribution
    unigram = lm.next_log_probs(np.empty((1, 0), dtype=np.int64))
    np.testing.assert_allclose(lm.next_log_probs([[b, vocab - 1]]), unigram, rtol=1e-13)
    counts = np.bincount(train, minlength=vocab)
    np.testing.assert_allclose(np.exp(unigram[0]), (counts + 0.05) / (train.size + 0.05 * vocab), rtol=1e-13)


def test_planted_structure_lowers_perplexity_below_the_unigram(rng):
    vocab = 50
    stream = markov_stream(rng, vocab, 30_000)
    train, test = stream[:25_000], stream[25_000:]
    unigram = NGramLM(order=1).fit(train, vocab).perplexity(test)
    bigram = NGramLM(order=2).fit(train, vocab).perplexity(test)
    trigram = NGramLM(order=3).fit(train, vocab).perplexity(test)
    assert unigram > 30  # nearly uniform marginals
    assert bigram < 0.2 * unigram and trigram < 0.2 * unigram, (unigram, bigram, trigram)


def test_million_tokens_smoke(rng):
    # Targets are for benchmarks; this only runs the sizes (about a second here).
    vocab = 10_000
    train = rng.zipf(1.3, 1_000_000) % vocab
    lm = NGramLM(order=3, delta=0.01).fit(train, vocab)
    log_probs = lm.log_prob(train[:200_000])
    assert log_probs.shape == (200_000,) and np.isfinite(log_probs).all() and (log_probs < 0).all()


def test_bad_inputs(rng):
    ids = rng.integers(0, 10, 50)
    for order in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="order must be an int >= 1"):
            NGramLM(order=order)
    for delta in (0, -0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="delta must be a finite number > 0"):
            NGramLM(delta=delta)
    lm = NGramLM(order=2)
    with pytest.raises(RuntimeError, match="call fit"):
        lm.log_prob(ids)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 1"):
        lm.fit(ids, 0)
    with pytest.raises(ValueError, match="ids is empty"):
        lm.fit(np.array([], dtype=np.int64), 10)
    # the message names the smallest id present, which a random draw need not make 0
    with pytest.raises(ValueError, match=rf"ids holds ids in \[{ids.min()}, 10\], outside \[0, vocab_size=10\)"):
        lm.fit(np.append(ids, 10), 10)
    with pytest.raises(ValueError, match=r"ids holds ids in \[-1"):
        lm.fit(np.append(ids, -1), 10)
    with pytest.raises(ValueError, match="ids must hold integer token ids"):
        lm.fit(ids.astype(np.float64), 10)
    with pytest.raises(ValueError, match="ids must have 1 dim"):
        lm.fit(ids.reshape(5, 10), 10)
    with pytest.raises(ValueError, match="must be below 2\\*\\*63"):
        lm.fit(np.array([1, 2]), 2**62)
    lm.fit(ids, 10)
    with pytest.raises(ValueError, match="contexts must have 2 dim"):
        lm.next_log_probs(ids)
    with pytest.raises(ValueError, match="contexts holds ids"):
        lm.next_log_probs([[3, 11]])
    with pytest.raises(ValueError, match="n_tokens must be positive"):
        lm.perplexity(np.array([], dtype=np.int64))
