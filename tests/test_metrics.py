"""pyattn.metrics: corpus BLEU against sacrebleu (the oracle), perplexity, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sacrebleu.metrics import BLEU

from pyattn.metrics import corpus_bleu, perplexity, perplexity_from_token_nll


def sacrebleu_score(hypotheses, references, max_order=4, smooth="exp", smooth_value=None) -> float:
    """sacrebleu on the same tokens joined by spaces, with no tokenisation of its own."""
    join = lambda s: s if s is None or isinstance(s, str) else " ".join(map(str, s))  # noqa: E731
    bleu = BLEU(tokenize="none", smooth_method=smooth, smooth_value=smooth_value, max_ngram_order=max_order)
    return bleu.corpus_score([join(h) for h in hypotheses], [[join(r) for r in s] for s in references]).score


def random_corpus(rng, n_sentences, n_refs, vocab, max_len, missing_refs=False):
    """Token lists over a small vocabulary (so that n-grams match), lengths 0..max_len;
    with ``missing_refs`` some references are None (never all of one sentence's)."""
    words = [f"w{i}" for i in range(vocab)]
    sentence = lambda: [words[i] for i in rng.integers(0, vocab, rng.integers(0, max_len + 1))]  # noqa: E731
    hypotheses = [sentence() for _ in range(n_sentences)]
    references = [[sentence() for _ in range(n_sentences)] for _ in range(n_refs)]
    if missing_refs:
        for stream in references[1:]:
            for i in np.flatnonzero(rng.random(n_sentences) < 0.4):
                stream[i] = None
    return hypotheses, references


@pytest.mark.parametrize("smooth", ["exp", "floor", "add-k", "none"])
def test_corpus_bleu_equals_sacrebleu_on_random_corpora(rng, smooth):
    for _ in range(60):
        hypotheses, references = random_corpus(
            rng, n_sentences=int(rng.integers(1, 12)), n_refs=int(rng.integers(1, 4)),
            vocab=int(rng.integers(2, 9)), max_len=int(rng.integers(1, 14)), missing_refs=bool(rng.random() < 0.3),
        )
        max_order = int(rng.integers(1, 6))
        value = None if smooth in ("exp", "none") or rng.random() < 0.5 else float(rng.uniform(0.01, 2))
        ours = corpus_bleu(hypotheses, references, max_order=max_order, smooth=smooth, smooth_value=value)
        expected = sacrebleu_score(hypotheses, references, max_order, smooth, value)
        assert abs(ours - expected) <= 1e-9, (ours, expected, hypotheses, references, max_order, value)


def test_corpus_bleu_string_and_id_inputs_agree(rng):
    hypotheses, references = random_corpus(rng, n_sentences=10, n_refs=2, vocab=5, max_len=10)
    as_strings = lambda sents: [" ".join(s) for s in sents]  # noqa: E731
    as_ids = lambda sents: [[int(w[1:]) for w in s] for s in sents]  # noqa: E731
    ours = corpus_bleu(hypotheses, references)
    assert ours == corpus_bleu(as_strings(hypotheses), [as_strings(s) for s in references])
    assert ours == corpus_bleu(as_ids(hypotheses), [as_ids(s) for s in references])
    assert abs(ours - sacrebleu_score(hypotheses, references)) <= 1e-9


def test_corpus_bleu_without_higher_order_matches_uses_exp_smoothing(rng):
    # References rise through the vocabulary, hypotheses fall: unigrams match, no bigram does.
    # Each pair shares at least one word (two random draws may share none).
    n = 8
    shared = rng.integers(0, 30, n)
    draw = lambda i: {int(shared[i])} | set(rng.choice(30, size=int(rng.integers(4, 9)), replace=False).tolist())
    references = [[sorted(draw(i)) for i in range(n)]]
    hypotheses = [sorted(draw(i), reverse=True) for i in range(n)]
    ours = corpus_bleu(hypotheses, references)
    assert ours > 0
    assert abs(ours - sacrebleu_score(hypotheses, references)) <= 1e-9
    assert corpus_bleu(hypotheses, references, smooth="none") == 0.0


def test_corpus_bleu_degenerate_corpora(rng):
    references = [[rng.integers(0, 4, int(rng.integers(1, 8))).tolist() for _ in range(5)]]
    cases = {
        "all hypotheses empty": [[] for _ in range(5)],
        "no 4-grams (all shorter than 4)": [rng.integers(0, 4, int(rng.integers(1, 4))).tolist() for _ in range(5)],
        "no matches at all": [rng.integers(10, 20, int(rng.integers(1, 8))).tolist() for _ in range(5)],
    }
    for name, hypotheses in cases.items():
        assert corpus_bleu(hypotheses, references) == 0.0, name
        assert sacrebleu_score(hypotheses, references) == 0.0, name


def test_corpus_bleu_of_the_references_themselves_is_100(rng):
    references = [[rng.integers(0, 6, int(rng.integers(4, 12))).tolist() for _ in range(6)] for _ in range(2)]
    assert corpus_bleu(references[1], references) == pytest.approx(100.0, abs=1e-12)


def test_corpus_bleu_brevity_penalty_takes_the_closest_shorter_reference():
    # Hypothesis length 4, references 2 and 6 (equally far): the shorter one, no penalty.
    hypothesis = ["a", "b", "c", "d"]
    references = [[["a", "b"]], [["a", "b", "c", "d", "e", "f"]]]
    assert corpus_bleu([hypothesis], references) == pytest.approx(100.0, abs=1e-12)
    assert abs(corpus_bleu([hypothesis], references) - sacrebleu_score([hypothesis], references)) <= 1e-9


def test_corpus_bleu_bad_inputs():
    hyps = ["a b c", "d e"]
    with pytest.raises(ValueError, match=r"references\[1\] has 1 references, hypotheses has 2"):
        corpus_bleu(hyps, [["a b", "d"], ["a"]])
    with pytest.raises(TypeError, match="references\\[0\\] is a str"):
        corpus_bleu(hyps, ["a b c", "d e"])
    with pytest.raises(TypeError, match="hypotheses must be a list"):
        corpus_bleu("a b c", [["a b c"]])
    with pytest.raises(ValueError, match="hypotheses is empty"):
        corpus_bleu([], [[]])
    with pytest.raises(ValueError, match="references is empty"):
        corpus_bleu(hyps, [])
    with pytest.raises(ValueError, match="sentence 1 has no reference"):
        corpus_bleu(hyps, [["a", None], ["b", None]])
    with pytest.raises(ValueError, match="smooth must be one of"):
        corpus_bleu(hyps, [hyps], smooth="add-one")
    with pytest.raises(ValueError, match="takes no smooth_value"):
        corpus_bleu(hyps, [hyps], smooth="exp", smooth_value=0.1)
    with pytest.raises(ValueError, match="max_order must be an int >= 1"):
        corpus_bleu(hyps, [hyps], max_order=0)


def test_perplexity(rng, gen):
    nll = torch.rand(int(rng.integers(1, 50)), int(rng.integers(1, 50)), generator=gen, dtype=torch.float64) * 8
    expected = math.exp(nll.mean().item())
    assert perplexity(float(nll.sum()), nll.numel()) == pytest.approx(expected, rel=1e-12)
    assert perplexity_from_token_nll(nll) == pytest.approx(expected, rel=1e-12)
    assert perplexity_from_token_nll(nll.float().numpy()) == pytest.approx(expected, rel=1e-6)
    assert perplexity(1e6, 1) == math.inf


def test_perplexity_bad_inputs():
    with pytest.raises(ValueError, match="n_tokens must be positive, got 0"):
        perplexity(1.0, 0)
    with pytest.raises(ValueError, match="n_tokens must be positive, got -3"):
        perplexity(1.0, -3)
    with pytest.raises(TypeError, match="n_tokens must be an int"):
        perplexity(1.0, 2.0)
    with pytest.raises(ValueError, match="nll_sum is NaN"):
        perplexity(float("nan"), 3)
    with pytest.raises(ValueError, match="token_nll is empty"):
        perplexity_from_token_nll(torch.empty(0))
