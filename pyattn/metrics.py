"""Evaluation metrics for the language and translation models: perplexity and corpus BLEU.

``corpus_bleu`` gives exactly sacrebleu's ``BLEU(tokenize="none", ...).corpus_score(...).score``
for the same (space-joined) tokens; sacrebleu is its test oracle.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np
import torch

# Smoothing of zero n-gram precisions (Chen & Cherry 2014), each with its default value:
# "exp" (their method 3, mteval-v13a's; takes no value) halves the pseudo-precision at each
# further zero order, "floor" (method 1) uses value / total, "add-k" (method 2) adds k to
# the matches and totals of every order above 1, "none" leaves zero precisions at zero.
SMOOTHING_DEFAULTS: dict[str, float | None] = {"exp": None, "floor": 0.1, "add-k": 1, "none": None}


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(nll_sum / n_tokens): the perplexity of ``n_tokens`` tokens whose negative log
    likelihoods (natural log, nats) sum to ``nll_sum``. Overflows to ``inf``."""
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)):
        raise TypeError(f"perplexity: n_tokens must be an int, got {type(n_tokens).__name__}")
    if n_tokens <= 0:
        raise ValueError(f"perplexity: n_tokens must be positive, got {n_tokens}")
    nll_sum = float(nll_sum)
    if math.isnan(nll_sum):
        raise ValueError("perplexity: nll_sum is NaN")
    mean_nll = nll_sum / int(n_tokens)
    return math.exp(mean_nll) if mean_nll < math.log(np.finfo(np.float64).max) else math.inf


def perplexity_from_token_nll(token_nll: torch.Tensor | np.ndarray) -> float:
    """Perplexity of the tokens whose negative log likelihoods (nats) ``token_nll`` holds,
    any shape; summed in float64. Select real tokens first (``token_nll[mask]``) when the
    tensor holds padding."""
    if isinstance(token_nll, torch.Tensor):
        values = token_nll.detach().to("cpu", torch.float64).numpy()
    else:
        values = np.asarray(token_nll, dtype=np.float64)
    if values.size == 0:
        raise ValueError("perplexity_from_token_nll: token_nll is empty")
    return perplexity(float(values.sum()), int(values.size))


def corpus_bleu(
    hypotheses: Sequence[str | Sequence[Hashable]],
    references: Sequence[Sequence[str | Sequence[Hashable] | None]],
    max_order: int = 4,
    smooth: str = "exp",
    smooth_value: float | None = None,
) -> float:
    """Corpus BLEU (Papineni et al. 2002) on the 0..100 scale, on already tokenised text.

    hypotheses: one entry per sentence, a list of tokens (any hashable: str, int ids) or a
        string split on whitespace.
    references: reference streams as sacrebleu takes them: ``references[r][i]`` is the
        r-th reference of sentence i (same forms as a hypothesis), every stream as long as
        ``hypotheses``. An entry may be ``None`` where sentence i has fewer references;
        every sentence needs at least one.
    max_order: the longest n-gram counted. smooth: ``"exp"`` (sacrebleu's default),
    ``"floor"``, ``"add-k"`` or ``"none"``; smooth_value: the value "floor" and "add-k" use
    (default 0.1 and 1).

    Sums over the corpus, per order n: the hypothesis n-grams (total) and the matched ones
    (each n-gram's count clipped at its largest count in any one reference of that
    sentence). Reference length: per sentence, the reference length closest to the
    hypothesis length (ties go to the shorter), summed. BLEU = BP · exp(mean over n of
    log precision_n), precision in percent, BP = exp(1 − ref_len / hyp_len) when the
    hypotheses are shorter (0 when they are empty), else 1. It is 0 when nothing matches
    at all or when some order has no n-gram (all hypotheses shorter than max_order).
    """
    if smooth not in SMOOTHING_DEFAULTS:
        raise ValueError(f"corpus_bleu: smooth must be one of {sorted(SMOOTHING_DEFAULTS)}, got {smooth!r}")
    if smooth_value is None:
        smooth_value = SMOOTHING_DEFAULTS[smooth]
    elif SMOOTHING_DEFAULTS[smooth] is None:
        raise ValueError(f"corpus_bleu: smooth={smooth!r} takes no smooth_value, got {smooth_value!r}")
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1:
        raise ValueError(f"corpus_bleu: max_order must be an int >= 1, got {max_order!r}")
    _check_corpus(hypotheses, references)

    matches = [0] * max_order  # per order n (index n - 1): clipped matched n-grams
    totals = [0] * max_order   # per order n: hypothesis n-grams
    hyp_len = ref_len = 0
    for i, hypothesis in enumerate(hypotheses):
        hyp = _tokens(hypothesis)
        refs = [_tokens(stream[i]) for stream in references if stream[i] is not None]
        clip = Counter()  # n-gram -> its largest count in any one reference
        for ref in refs:
            clip |= _ngram_counts(ref, max_order)
        for gram, count in _ngram_counts(hyp, max_order).items():
            totals[len(gram) - 1] += count
            matches[len(gram) - 1] += min(count, clip[gram])
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    return _bleu_from_counts(matches, totals, hyp_len, ref_len, smooth, smooth_value)


def _check_corpus(hypotheses, references) -> None:
    for name, value in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise TypeError(f"corpus_bleu: {name} must be a list, got {type(value).__name__}")
        if len(value) == 0:
            raise ValueError(f"corpus_bleu: {name} is empty")
    for r, stream in enumerate(references):
        if isinstance(stream, str) or not isinstance(stream, Sequence):
            raise TypeError(
                f"corpus_bleu: references[{r}] is a {type(stream).__name__}; references must be a list of "
                "reference streams, each a list with one reference per hypothesis (one stream: [refs])"
            )
        if len(stream) != len(hypotheses):
            raise ValueError(
                f"corpus_bleu: references[{r}] has {len(stream)} references, hypotheses has {len(hypotheses)} sentences"
            )
    for i in range(len(hypotheses)):
        if all(stream[i] is None for stream in references):
            raise ValueError(f"corpus_bleu: sentence {i} has no reference (references[r][{i}] is None for every r)")


def _tokens(sentence: str | Sequence[Hashable]) -> tuple:
    return tuple(sentence.split()) if isinstance(sentence, str) else tuple(sentence)


def _ngram_counts(tokens: tuple, max_order: int) -> Counter:
    """Counts of every n-gram (a tuple of n tokens) of ``tokens``, n = 1..max_order."""
    return Counter(tokens[i:i + n] for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def _bleu_from_counts(matches, totals, hyp_len, ref_len, smooth, smooth_value) -> float:
    # The arithmetic follows sacrebleu's operation order, so that scores agree to the last bit.
    if not any(matches):
        return 0.0
    log_precision_sum = 0.0
    zero_orders_halving = 1.0  # "exp": 2 ** (number of zero-match orders so far)
    for n, (match, total) in enumerate(zip(matches, totals), start=1):
        if smooth == "add-k" and n > 1:
            match, total = match + smooth_value, total + smooth_value
        if total == 0 or (match == 0 and smooth in ("none", "add-k")):
            return 0.0  # a zero precision: log -> -inf
        if match > 0:
            precision = 100.0 * match / total
        elif smooth == "exp":
            zero_orders_halving *= 2
            precision = 100.0 / (zero_orders_halving * total)
        else:  # floor
            precision = 100.0 * smooth_value / total
        log_precision_sum += math.log(precision)
    brevity = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision_sum / len(matches))
