"""pyattn's Word2Vec trained with the learning-rate schedule gensim follows in corpus_file mode.

gensim's corpus_file trainer (gensim/models/word2vec_corpusfile.pyx, get_next_alpha) gives
each of its W worker threads an epoch progress of (sentences this worker has done) /
(sentences in the whole corpus). A worker reads only its 1/W of the file, so progress
within an epoch reaches only 1/W. With 2 workers the learning rate in epoch e falls from
alpha (1 - e / E) to alpha (1 - (e + 1/2) / E), then jumps down to the next epoch's
start. Its mean is 10 % higher than a linear decay's over 5 epochs, and it ends at
alpha / 10, not min_alpha. pyattn decays linearly over all words, as word2vec.c does.
This script retrains pyattn with gensim's schedule, to see how much of a quality gap
the schedule explains.

    python bench/word2vec_lr_schedule.py CORPUS [--seed 1] [--rounds 1] [--sg 0] [--window-batch 0] [--workers 2]

Prints WS353 Spearman and analogy accuracy with gensim's evaluation files (gensim must
be importable).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyattn.word2vec import Word2Vec  # noqa: E402


class GensimCorpusFileSchedule(Word2Vec):
    """Word2Vec whose learning rate follows gensim's corpus_file schedule with `gensim_workers` workers."""

    def __init__(self, *args, gensim_workers: int = 2, **kwargs):
        self.gensim_workers = gensim_workers
        super().__init__(*args, **kwargs)

    def _learning_rate(self, progress: float) -> float:
        done = progress * self.epochs  # epochs done, fractional
        epoch = min(math.floor(done), self.epochs - 1)
        return super()._learning_rate((epoch + (done - epoch) / self.gensim_workers) / self.epochs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="train this many times, seeds seed, seed + 1, ...")
    ap.add_argument("--sg", type=int, default=0, choices=(0, 1))
    ap.add_argument("--window-batch", type=int, default=0, choices=(1, 0), help="skip-gram's window_batch")
    ap.add_argument("--workers", type=int, default=2, help="pyattn's threads, and gensim's workers the schedule mimics")
    args = ap.parse_args()
    from gensim.test.utils import datapath

    for seed in range(args.seed, args.seed + args.rounds):
        m = GensimCorpusFileSchedule(corpus_file=args.corpus, gensim_workers=args.workers, vector_size=100, window=5,
                                     min_count=5, sg=args.sg, negative=5, epochs=5, seed=seed, sample=1e-3,
                                     workers=args.workers, progress=False,
                                     window_batch=bool(args.window_batch))
        ws = m.wv.evaluate_word_pairs(datapath("wordsim353.tsv"))[1][0]
        acc = m.wv.evaluate_word_analogies(datapath("questions-words.txt"))[0]
        print(f"{'skip-gram' if args.sg else 'CBOW'} seed {seed}, gensim's corpus_file schedule "
              f"({args.workers} workers, window_batch {args.window_batch}): WS353 {ws:.4f} analogy {acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
