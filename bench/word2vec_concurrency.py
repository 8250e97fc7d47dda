"""How many concurrent Hogwild streams skip-gram tolerates: a lockstep model of a GPU.

A GPU trainer runs S warps at once, each on its own example. This script models the worst
case of that schedule on the CPU: in each round every one of S streams takes its next
example; all of them read the tables, then all their updates are added (stale gradients,
no update lost). The examples come from pyattn's own pipeline (subsampling, window
shrinking, context windows, the learning-rate schedule), with gensim's skip-gram update:
h = w_in[center], targets the context (label 1) and k negatives drawn from
unigram^0.75.

Two ways to hand examples to streams:
- ``stride``: stream s takes examples s, s + S, s + 2S, ... of each block, so one round
  holds S consecutive examples (the pre-2026-12-05 CUDA kernel, one warp per example);
- ``runs``: stream s takes a contiguous run of the block's examples, in order (as a
  word2vec.c thread walks its part of the corpus), so one round holds examples far apart
  in the text.

    python bench/word2vec_concurrency.py planted            # the planted-structure test's corpus
    python bench/word2vec_concurrency.py CORPUS.txt --streams 8448

Prints the planted groups' similarity gap, or WS353 Spearman and analogy accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from pyattn.word2vec import Word2Vec  # noqa: E402
from test_word2vec import GROUPS, planted_corpus  # noqa: E402  (the planted-structure test's corpus)


def stream_order(n: int, streams: int, order: str) -> torch.Tensor:
    """[n] example indices in the order rounds take them (round r = positions r*S .. r*S+S-1)."""
    if order == "stride" or streams >= n:
        return torch.arange(n)
    run = -(-n // streams)
    idx = (torch.arange(streams)[None, :] * run + torch.arange(run)[:, None]).reshape(-1)
    return idx[idx < n]


def block_contexts(ids, sent, radius, start, stop, window) -> torch.Tensor:
    """[stop - start, 2 * window + 1] context ids (-1: empty) of the centers ids[start:stop],
    as the stream-form update reads them from the epoch's kept tokens (its window radius,
    within its sentence; pyattn/reference/negative_sampling.py's stream_contexts)."""
    i = torch.arange(start, stop)
    ctx = torch.full((len(i), 2 * window + 1), -1, dtype=torch.int64)
    for d in range(-window, window + 1):
        j = (i + d).clamp(0, len(ids) - 1)
        ok = (d != 0) & (abs(d) <= radius[i]) & (i + d >= 0) & (i + d < len(ids)) & (sent[j] == sent[i])
        ctx[:, window + d] = torch.where(ok, ids[j], -1)
    return ctx


def lockstep_skipgram(model: Word2Vec, streams: int, order: str, seed: int) -> None:
    """Trains model.wv / model.syn1neg in place under the lockstep model (float32)."""
    c = model.corpus
    w_in = torch.from_numpy(model.wv.vectors)
    w_out = model.syn1neg
    neg_p = torch.from_numpy(c.counts.astype(np.float64) ** model.ns_exponent)
    gen = torch.Generator().manual_seed(seed)
    total = c.raw_words * model.epochs
    done, k = 0.0, model.negative
    for _, _, _, ids, sent, radius, start, stop in model._blocks(model.epochs, seed):
        lr = model._learning_rate(done / total)
        done += (stop - start) / len(ids) * c.raw_words
        centers, ctx = ids[start:stop], block_contexts(ids, sent, radius, start, stop, model.window)
        pairs = ctx >= 0
        cen = centers[:, None].expand_as(ctx)[pairs]
        pos = ctx[pairs]
        idx = stream_order(len(cen), streams, order)
        for r0 in range(0, len(idx), streams):
            ex = idx[r0 : r0 + streams]
            targets = torch.cat([pos[ex, None], torch.multinomial(neg_p, len(ex) * k, True, generator=gen).view(-1, k)], 1)
            h = w_in[cen[ex]]                                     # [s, d]
            u = w_out[targets]                                    # [s, 1 + k, d]
            x = torch.bmm(u, h[:, :, None])[:, :, 0]              # [s, 1 + k] logits
            label = torch.zeros_like(x)
            label[:, 0] = 1
            g = lr * (label - torch.sigmoid(x))
            g[:, 1:] *= targets[:, 1:] != targets[:, :1]          # a negative equal to the positive is skipped
            w_out.index_add_(0, targets.reshape(-1), (g[:, :, None] * h[:, None, :]).reshape(-1, h.shape[1]))
            w_in.index_add_(0, cen[ex], torch.bmm(g[:, None, :], u)[:, 0])
    model.wv.fill_norms()


def planted_gap(wv) -> float:
    """Mean similarity within planted groups minus across them, as the test measures it."""
    same = [wv.similarity(f"g{g}w{i}", f"g{g}w{j}") for g in range(GROUPS) for i in range(4) for j in range(4, 8)]
    cross = [wv.similarity(f"g{g}w{i}", f"g{(g + 1) % GROUPS}w{i}") for g in range(GROUPS) for i in range(8)]
    return float(np.mean(same) - np.mean(cross))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", help="'planted' or a text file, one sentence per line")
    ap.add_argument("--streams", type=int, action="append", help="S (repeatable)")
    ap.add_argument("--order", choices=("runs", "stride"), default="runs")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for s in args.streams or [1]:
        t = time.perf_counter()
        if args.corpus == "planted":  # the settings of tests/test_word2vec.py::test_planted_structure (sg)
            m = Word2Vec(vector_size=32, window=3, min_count=1, sg=1, negative=5, epochs=5, seed=3, sample=0,
                         progress=False)
            m.build_vocab(planted_corpus())
        else:  # gensim's defaults
            m = Word2Vec(vector_size=100, window=5, min_count=5, sg=1, negative=5, epochs=5, seed=args.seed,
                         sample=1e-3, progress=False)
            m.build_vocab(corpus_file=args.corpus)
        lockstep_skipgram(m, s, args.order, args.seed)
        secs = time.perf_counter() - t
        if args.corpus == "planted":
            with np.errstate(all="ignore"):
                gap = planted_gap(m.wv) if np.isfinite(m.wv.vectors).all() else float("nan")
            shown = f"{gap:+.3f}" if np.isfinite(gap) else "diverged (non-finite vectors or similarities)"
            print(f"streams {s:6d} {args.order:6s} planted gap {shown} (the test wants > +0.3) [{secs:.0f} s]",
                  flush=True)
        else:
            from gensim.test.utils import datapath
            ws = m.wv.evaluate_word_pairs(datapath("wordsim353.tsv"))[1][0]
            acc = m.wv.evaluate_word_analogies(datapath("questions-words.txt"))[0]
            print(f"streams {s:6d} {args.order:6s} WS353 {ws:.4f} analogy {acc:.4f} [{secs:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
