"""Word2Vec trainer with gensim's parameters, on pyattn's negative-sampling update ops.

Per epoch, with no per-token Python (on CUDA the tokens stay on the GPU):
  1. subsampling: token kept with probability min(1, (sqrt(f/t) + 1) * t/f), t = sample * words;
  2. window shrinking: each kept token gets radius window - (r mod window), r random
     (1 and 2: one pass of torch.ops.pyattn.subsample_tokens_ on the CPU, torch ops on CUDA);
  3. one torch.ops.pyattn.{sgns,cbow}_stream_update_ call per block of centers, which
     reads each center's window from the kept tokens (the neighbours within its radius
     and its sentence, after subsampling, as word2vec.c walks its text), draws the negatives
     from a unigram^ns_exponent alias table inside the kernel and runs Hogwild over
     torch.get_num_threads() threads (on CUDA: over ordered streams of centers, one warp
     each, as many as the busiest rows tolerate; see cuda_streams). The learning rate
     decays linearly with the raw words processed, from alpha to min_alpha over all
     epochs, as in gensim. As in gensim, a target whose logit has |x| >= 6 gets no
     update, and the input vectors start uniform in [-1/d, 1/d) (gensim 4's range).
     Skip-gram takes the pairs one by one by default, as word2vec.c and gensim do.
     window_batch=True updates each center's window as one batch instead
     (pWord2Vec's HogBatch: negatives shared by the window, every logit from the rows as
     they stand; semantics in pyattn/negative_sampling.h): its update runs about twice
     as fast, but its WS353 departs from the pair order's by the corpus, +0.02 on 5.5 M
     words of Debian English and -0.026 on the techdocs registry text, where the pair
     order stays within 0.013 of gensim's on both
     (bench/results/word2vec_skipgram_default_2026-12-06.md).

Across processes (torchrun; ``world`` from pyattn.distributed.init): rank 0 reads the
corpus and builds the vocabulary once, every rank receives it (broadcast) and trains on
its contiguous share of the sentences (corpus.shard), starting from the same tables;
``syncs_per_epoch`` times per epoch, at even points of each rank's share and the last at
the epoch's end, the ranks merge their tables: each becomes the last merged value plus
the sum of every rank's updates since (one all_reduce). Summing keeps each rank's
learning rate, where averaging the tables (BlazingText, once per epoch) halves it on 2
ranks: on 5.5 M words, 2 ranks, averaging once per epoch lost 0.09 WS353 and 0.02 analogy
accuracy; merging 16 times per epoch kept skip-gram within 0.02 of one process. Between
those merges, ``hot_syncs_per_epoch`` times per epoch in all, the ranks merge the rows of
the HOT_ROWS most frequent words alone: those rows take most of the updates, so two
ranks' updates computed from the same stale row add up to an overshoot. On the techdocs
text with 2 ranks, CBOW (which adds each example's whole gradient to every context's
input row) lost 0.029 WS353 and 0.009 analogy accuracy to one process with the 16 merges
alone; with 64 hot merges it gained 0.024 WS353 and lost 0.004 analogy accuracy, about
what 64 merges of the whole tables gave, in a third of the time those add. Skip-gram
stayed within 0.02 without them, and they cost it 14 % of its speed: the default is 64
for CBOW and 0 for skip-gram (bench/results/word2vec_distributed_cpu_2026-12-06.md). One
process behaves exactly as without ``world``.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, Optional, Union

import numpy as np
import torch

import pyattn

from pyattn import distributed

from .corpus import EncodedCorpus, encode, line_sentences, shard
from .keyedvectors import KeyedVectors

CUDA_BLOCK_WORDS = 1 << 19  # tokens per update launch on CUDA (see Word2Vec._blocks)
STREAM_LOAD = 96  # bound on streams x the busiest row's load (see cuda_streams)
HOT_ROWS = 1024  # rows of the most frequent words, merged hot_syncs_per_epoch times (see the module's docstring)
CBOW_HOT_SYNCS = 64  # CBOW's default hot_syncs_per_epoch (skip-gram's is 0)



def alias_table(weights: np.ndarray) -> torch.Tensor:
    """Walker alias table [V, 2] int64 for drawing i with probability weights[i] / sum:
    pick a row i uniformly, keep i if a uniform u32 < row[0] (threshold scaled by 2^32),
    else take row[1]. Built by Vose's method (exact up to the 2^-32 threshold rounding)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("alias_table: weights must be a non-empty 1-d array of finite values >= 0, not all 0")
    n = len(w)
    p = (w * (n / w.sum())).tolist()
    thresh = [1.0] * n
    alias = list(range(n))
    small = [i for i, x in enumerate(p) if x < 1.0]
    large = [i for i, x in enumerate(p) if x >= 1.0]
    while small and large:
        s, l = small.pop(), large.pop()
        thresh[s], alias[s] = p[s], l
        p[l] += p[s] - 1.0
        (small if p[l] < 1.0 else large).append(l)
    out = np.empty((n, 2), dtype=np.int64)
    out[:, 0] = np.clip(np.rint(np.asarray(thresh) * 2.0**32), 0, 2**32).astype(np.int64)
    out[:, 1] = alias
    return torch.from_numpy(out)


def aligned_rows(rows: int, dim: int) -> torch.Tensor:
    """A zeroed float32 [rows, dim] table whose rows each start on a 64-byte boundary: a
    view of a [rows, dim rounded up to 16] buffer. The update kernels read and write whole
    rows at random; at dim 100 (400-byte rows) three rows in four straddle cache lines at
    every vector load and store. The aligned rows made skip-gram's update 3 % faster with
    1 thread and 7-10 % with 2, CBOW's 3-8 % (bench/results/word2vec_cpu_rows_2026-12-06.md).
    Costs (stride - dim) / dim more memory: 12 % at dim 100, 1 % at 300, none at 128."""
    stride = -(-dim // 16) * 16
    buf = torch.zeros(rows * stride + 15)
    start = (-buf.data_ptr() // 4) % 16  # floats to the first 64-byte boundary
    return buf[start: start + rows * stride].view(rows, stride)[:, :dim]


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """gensim's subsampling: P(keep w) = (sqrt(c_w / t) + 1) * t / c_w, capped at 1, t = sample * total."""
    if not sample:
        return np.ones(len(counts))
    t = sample * counts.sum()
    c = counts.astype(np.float64)
    return np.minimum(1.0, (np.sqrt(c / t) + 1.0) * t / c)


def window_examples(sentence: torch.Tensor, radius: torch.Tensor, start: int, stop: int, window: int,
                    sg: bool) -> int:
    """How many examples the stream-form update makes of centers [start, stop): skip-gram
    pairs (a window batch's loss sums over the same pairs), or CBOW centers with at least
    one context (the loss is averaged over them).
    sentence, radius: [N] int64; center i's window holds i + d for 0 < |d| <= radius[i]
    with sentence[i + d] == sentence[i] (torch.ops.pyattn.sgns_stream_update_)."""
    if stop <= start:
        return 0
    lo, hi = max(0, start - window), min(len(sentence), stop + window)
    pad = sentence.new_full((window,), -1)  # never a sentence id
    padded = torch.cat([pad[: window - (start - lo)], sentence[lo:hi], pad[: window - (hi - stop)]])
    own, r = sentence[start:stop], radius[start:stop]
    contexts = torch.zeros_like(own)
    for d in range(1, window + 1):
        for nb in (padded[window - d: window - d + stop - start], padded[window + d: window + d + stop - start]):
            contexts += (nb == own) & (r >= d)
    return int(contexts.sum()) if sg else int((contexts > 0).sum())


def cuda_streams(counts: np.ndarray, sample: float, negative: int, ns_exponent: float, window: int,
                 context_inputs: bool) -> int:
    """How many examples the CUDA update may have in flight (its max_streams, S).

    Hogwild streams read rows, compute their updates from what they read, then add them;
    a row that S streams update at once gets S gradients computed from the same stale
    value. With load(w) the expected updates of word w's rows per example (output row:
    P(w is the positive target) + negative * P(w is a negative); input row: P(w is the
    center), or (window + 1) P(w is a context) where an example updates its contexts'
    input rows, context_inputs: CBOW and skip-gram's window batch), about S * load(w)
    such updates overlap.
    bench/word2vec_concurrency.py's lockstep model (every stream reads, then every update
    lands) of the planted-structure test's corpus learns at S * max load = 192 and
    diverges from 384; this keeps S * max load <= STREAM_LOAD = 96. Frequent words set
    it: on a 5.5 M-word English text (top word "the") S is about 900."""
    c = counts.astype(np.float64)
    kept = c * keep_probabilities(counts, sample)
    p_pos = kept / kept.sum()
    p_neg = c ** ns_exponent / (c ** ns_exponent).sum()
    load = max(float((p_pos + negative * p_neg).max()), float(p_pos.max()) * ((window + 1) if context_inputs else 1))
    return max(1, int(STREAM_LOAD / load))


class Word2Vec:
    """Skip-gram (``sg=1``) or CBOW (``sg=0``) with negative sampling, familiar to gensim users::

        model = Word2Vec(corpus_file="text.txt", vector_size=100, window=5, min_count=5, sg=1, workers=2)
        model.wv.most_similar("king")
        model.wv.save_word2vec_format("vectors.bin", binary=True)

    ``sentences``: a restartable iterable of token lists; ``corpus_file``: a UTF-8 text
    file, one sentence per line (long lines are cut every 10000 tokens). Training runs at
    construction when either is given. ``workers`` sets torch's CPU threads while
    training. ``compute_loss``: measure the loss on one block in eight (shown by the
    progress bar, kept in ``running_loss``; the others skip the log1p per target).
    ``world`` / ``syncs_per_epoch`` / ``hot_syncs_per_epoch``: training across
    processes (see the module's docstring; hot_syncs_per_epoch None means 64 for CBOW
    and 0 for skip-gram, whose hot rows are then merged with the rest only); ``corpus``,
    ``words_per_second`` and ``running_loss`` are then this rank's. ``window_batch``
    (skip-gram; not a gensim parameter): False (the default) takes the pairs one by one
    in word2vec.c's order; True updates each center's window as one batch with negatives
    shared by the window, faster but not word2vec.c's quality on every corpus (see the
    module's docstring).
    """

    def __init__(self, sentences: Optional[Iterable] = None, corpus_file: Optional[Union[str, os.PathLike]] = None,
                 vector_size: int = 100, alpha: float = 0.025, window: int = 5, min_count: int = 5,
                 max_vocab_size: Optional[int] = None, sample: float = 1e-3, seed: int = 1, workers: int = 3,
                 min_alpha: float = 0.0001, sg: int = 0, negative: int = 5, ns_exponent: float = 0.75,
                 cbow_mean: int = 1, epochs: int = 5, batch_words: int = 10000, device: str = "cpu",
                 progress: bool = True, compute_loss: bool = True, world: Optional[distributed.World] = None,
                 syncs_per_epoch: int = 16, hot_syncs_per_epoch: Optional[int] = None, window_batch: bool = False):
        self._check_args(vector_size, alpha, min_alpha, window, min_count, max_vocab_size, sample, workers, negative,
                         epochs, batch_words, cbow_mean)
        if not isinstance(syncs_per_epoch, int) or syncs_per_epoch < 1:
            raise ValueError(f"Word2Vec: syncs_per_epoch must be an int >= 1, got {syncs_per_epoch!r}")
        if hot_syncs_per_epoch is None:
            hot_syncs_per_epoch = 0 if sg else CBOW_HOT_SYNCS
        if not isinstance(hot_syncs_per_epoch, int) or hot_syncs_per_epoch < 0:
            raise ValueError(f"Word2Vec: hot_syncs_per_epoch must be None or an int >= 0, got {hot_syncs_per_epoch!r}")
        if not isinstance(window_batch, bool):
            raise ValueError(f"Word2Vec: window_batch must be True or False, got {window_batch!r}")
        dev = torch.device(device)
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"Word2Vec: device={device!r}: expected 'cpu' or 'cuda'")
        if dev.type == "cuda" and not (pyattn.build_info()["cuda"] and torch.cuda.is_available()):
            raise ValueError(f"Word2Vec: device={device!r}, but " + (
                "torch sees no CUDA GPU" if pyattn.build_info()["cuda"] else
                "pyattn was built without CUDA (rebuild where torch has CUDA and nvcc is installed)"))
        self.vector_size, self.alpha, self.min_alpha, self.window = vector_size, alpha, min_alpha, window
        self.min_count, self.max_vocab_size, self.sample, self.seed = min_count, max_vocab_size, sample, seed
        self.workers, self.sg, self.negative, self.ns_exponent = workers, int(bool(sg)), negative, ns_exponent
        self.epochs, self.batch_words, self.device = epochs, batch_words, dev
        self.progress, self.compute_loss = progress, compute_loss
        self.world = world if world is not None else distributed.World(0, 1, dev)
        self.syncs_per_epoch = syncs_per_epoch
        self.hot_syncs_per_epoch = hot_syncs_per_epoch
        self.window_batch = window_batch
        self.corpus: Optional[EncodedCorpus] = None
        self.wv: Optional[KeyedVectors] = None
        self.syn1neg: Optional[torch.Tensor] = None
        self.running_loss = float("nan")
        self.train_seconds = 0.0
        self.words_per_second = 0.0
        if sentences is not None and corpus_file is not None:
            raise ValueError("Word2Vec: give sentences or corpus_file, not both")
        if sentences is not None or corpus_file is not None:
            self.build_vocab(sentences=sentences, corpus_file=corpus_file)
            self.train()

    @staticmethod
    def _check_args(vector_size, alpha, min_alpha, window, min_count, max_vocab_size, sample, workers, negative,
                    epochs, batch_words, cbow_mean):
        def need(ok, what):
            if not ok:
                raise ValueError(f"Word2Vec: {what}")
        need(isinstance(vector_size, int) and vector_size > 0, f"vector_size must be a positive int, got {vector_size!r}")
        need(alpha > 0 and min_alpha >= 0, f"alpha must be > 0 and min_alpha >= 0, got {alpha!r}, {min_alpha!r}")
        need(isinstance(window, int) and window > 0, f"window must be a positive int, got {window!r}")
        need(isinstance(min_count, int) and min_count >= 1, f"min_count must be an int >= 1, got {min_count!r}")
        need(max_vocab_size is None or max_vocab_size > 0, f"max_vocab_size must be None or > 0, got {max_vocab_size!r}")
        need(sample >= 0, f"sample must be >= 0, got {sample!r}")
        need(isinstance(workers, int) and workers >= 1, f"workers must be an int >= 1, got {workers!r}")
        need(isinstance(negative, int) and negative >= 1, f"negative must be an int >= 1 (only negative sampling "
             f"is implemented, no hierarchical softmax), got {negative!r}")
        need(isinstance(epochs, int) and epochs >= 1, f"epochs must be an int >= 1, got {epochs!r}")
        need(batch_words >= 1, f"batch_words must be >= 1, got {batch_words!r}")
        need(cbow_mean == 1, "only cbow_mean=1 (mean of the context vectors) is implemented")

    # ---------------------------------------------------------------- vocabulary
    def build_vocab(self, sentences: Optional[Iterable] = None, corpus_file=None,
                    corpus: Optional[EncodedCorpus] = None) -> "Word2Vec":
        """Reads the corpus (sentences, corpus_file, or ``corpus``: one already read by
        pyattn.word2vec.corpus.encode, whose vocabulary stands as it is, so that several
        models train on one corpus read once) and draws the initial tables."""
        if sum(x is not None for x in (sentences, corpus_file, corpus)) != 1:
            raise ValueError("Word2Vec.build_vocab: give one of sentences, corpus_file or corpus")
        if corpus is not None and not isinstance(corpus, EncodedCorpus):
            raise TypeError(f"Word2Vec.build_vocab: corpus must be an EncodedCorpus (pyattn.word2vec.corpus.encode), "
                            f"got {type(corpus).__name__}")
        if corpus_file is not None:
            sentences = line_sentences(corpus_file)

        def read() -> EncodedCorpus:
            return corpus if corpus is not None else encode(sentences, self.min_count, self.max_vocab_size)

        if not self.world.distributed:
            self.corpus = read()
        else:  # rank 0 reads; every rank gets the corpus, or rank 0's error to raise
            whole = error = None
            if self.world.is_main:
                try:
                    whole = read()
                except (OSError, ValueError, TypeError) as e:
                    error = e
            whole, error = distributed.broadcast((whole, error), self.world)
            if error is not None:
                raise error
            self.corpus = shard(whole, self.world.rank, self.world.size)
        vocab = len(self.corpus.index_to_key)
        gen = torch.Generator().manual_seed(self.seed)
        # gensim 4's initialisation (KeyedVectors' prep_vectors): uniform in [-1/d, 1/d), twice
        # word2vec.c's range; CBOW's analogy accuracy gains 0.004 from it on English text
        # (bench/results/word2vec_cbow_gap_2026-12-05.md).
        # Both tables have 64-byte-aligned rows (aligned_rows): wv.vectors and syn1neg are
        # views with a padded row stride (np.ascontiguousarray gives a packed copy).
        w_in = aligned_rows(vocab, self.vector_size)
        w_in.copy_((torch.rand(vocab, self.vector_size, generator=gen) * 2 - 1) / self.vector_size)
        self.wv = KeyedVectors(self.corpus.index_to_key, w_in.numpy())
        self.syn1neg = aligned_rows(vocab, self.vector_size)
        return self

    # ------------------------------------------------------------------ training
    def train(self, epochs: Optional[int] = None) -> "Word2Vec":
        if self.corpus is None:
            raise RuntimeError("Word2Vec.train: build_vocab first (or pass sentences / corpus_file)")
        epochs = self.epochs if epochs is None else epochs
        c = self.corpus
        w_in = torch.from_numpy(self.wv.vectors)      # shares memory: wv sees the updates
        w_out = self.syn1neg
        dev = self.device
        table = alias_table(c.counts.astype(np.float64) ** self.ns_exponent).to(dev)
        rank = self.world.rank
        self._max_streams = 0  # the CPU runs one example per thread
        if dev.type == "cuda":  # train device copies; the vectors come back when training ends
            w_in, w_out = w_in.to(dev), w_out.to(dev)
            # a window batch updates every context's input row, as CBOW does
            self._max_streams = cuda_streams(c.counts, self.sample, self.negative, self.ns_exponent, self.window,
                                             not self.sg or self.window_batch)
        total_raw = c.raw_words * epochs
        bar = _progress(total_raw, self.progress and self.world.is_main)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.workers)
        loss_sum, loss_n, done_raw = 0.0, 0, 0.0
        bases = [w_in.clone(), w_out.clone()] if self.world.distributed else []  # the tables at the last merge
        hot = min(HOT_ROWS, len(c.counts))  # ids are in frequency order: the hot rows come first
        hot_tables, hot_bases = [w_in[:hot], w_out[:hot]], [x[:hot] for x in bases]
        t0 = time.perf_counter()
        try:
            for epoch, b, n_blocks, ids, sent, radius, start, stop in self._blocks(epochs, self.seed + rank):
                if b == 0 and epoch > 0 and loss_n:
                    self.running_loss = loss_sum / loss_n
                    loss_sum, loss_n = 0.0, 0
                lr = self._learning_rate(done_raw / total_raw)
                want_loss = self.compute_loss and b % 8 == 0 and stop > start
                seed = (self.seed * 1_000_003 + epoch) * 1_000_033 + b + (rank << 40)
                if stop > start:
                    loss = self._update(w_in, w_out, ids, sent, radius, start, stop, table, lr, seed, want_loss)
                if want_loss:
                    loss_sum += float(loss)
                    loss_n += window_examples(sent, radius, start, stop, self.window, self.sg)
                merge = (_merge_at(b, n_blocks, self.syncs_per_epoch, self.hot_syncs_per_epoch)
                         if self.world.distributed else None)  # one process: its blocks need not cover the points
                if merge == "whole":
                    distributed.merge_updates_([w_in, w_out], bases, self.world)
                elif merge == "hot":
                    distributed.merge_updates_(hot_tables, hot_bases, self.world)
                step_raw = (stop - start) / max(1, len(ids)) * c.raw_words
                done_raw += step_raw
                if bar is not None:
                    bar.update(step_raw)
                    if b % 16 == 0:
                        el = time.perf_counter() - t0
                        bar.set_postfix(epoch=epoch + 1, lr=f"{lr:.5f}",
                                        words_s=f"{done_raw / el / 1e6:.2f}M" if el > 0 else "-",
                                        loss=f"{loss_sum / loss_n:.4f}" if loss_n else "-")
            if loss_n:
                self.running_loss = loss_sum / loss_n
        finally:
            torch.set_num_threads(threads)
            if bar is not None:
                bar.close()
            if dev.type == "cuda":
                self.wv.vectors[...] = w_in.cpu().numpy()
                self.syn1neg.copy_(w_out.cpu())
        self.train_seconds = time.perf_counter() - t0
        self.words_per_second = c.raw_words * epochs / self.train_seconds
        self.wv.fill_norms()
        return self

    def _learning_rate(self, progress: float) -> float:
        """The learning rate once `progress` (0 to 1) of all epochs' raw words is done: linear
        from alpha to min_alpha, as in word2vec.c and gensim's iterable mode."""
        return max(self.min_alpha, self.alpha - (self.alpha - self.min_alpha) * progress)

    def _update(self, w_in, w_out, ids, sentence, radius, start, stop, table, lr, seed, want_loss) -> torch.Tensor:
        """One block's SGD step in place: centers ids[start:stop], their windows read from the
        epoch's token stream in the kernel (torch.ops.pyattn.{sgns,cbow}_stream_update_),
        negatives drawn from the alias `table` with `seed`; returns the summed loss (0-d
        float64)."""
        args = (w_in, w_out, ids, sentence, radius, start, stop, self.window, None, table, self.negative, lr, seed,
                want_loss, self._max_streams)
        if not self.sg:
            return torch.ops.pyattn.cbow_stream_update_(*args)
        return torch.ops.pyattn.sgns_stream_update_(*args, self.window_batch)

    def _blocks(self, epochs, seed):
        """Per epoch, on the training device: subsample and shrink the windows, then yield
        (epoch, block index, blocks this epoch, the epoch's kept tokens ids [N] int64, their
        sentence ids [N] and window radii [N], and the block's centers as start, stop:
        ids[start:stop]); the update kernel reads each center's window from ids itself. On
        the CPU those three are views of buffers that the next epoch overwrites. An epoch
        whose subsampling keeps nothing yields empty blocks, so that every rank meets its
        syncs. On CUDA a block is up to CUDA_BLOCK_WORDS tokens: the update kernel spreads
        a block's centers over up to thousands of ordered streams (warps), each wanting a
        long run of centers. Across processes an epoch has at least syncs_per_epoch
        and hot_syncs_per_epoch blocks."""
        c, dev = self.corpus, self.device
        block = max(1, self.batch_words) if dev.type == "cpu" else max(self.batch_words, CUDA_BLOCK_WORDS)
        all_ids = torch.from_numpy(c.ids).to(dev, torch.int64)
        lengths = torch.from_numpy(np.diff(np.concatenate([[0], c.sentence_ends])))
        sentence = torch.repeat_interleave(torch.arange(len(lengths)), lengths).to(dev)
        keep_p = torch.from_numpy(keep_probabilities(c.counts, self.sample)).to(dev)
        # The CPU runs pyattn's one-pass op into buffers kept across epochs: torch ops
        # (draws, a gather, boolean indexing, randint, and fresh memory for each) took
        # 80-120 ms per epoch of 5.4 M tokens, ~8 % of CBOW's training time; the op, ~20 ms.
        kept_buffers = [torch.empty_like(all_ids) for _ in range(3)] if dev.type == "cpu" else None
        gen = torch.Generator(device=dev).manual_seed(seed) if kept_buffers is None else None
        for epoch in range(epochs):
            if kept_buffers is not None:
                epoch_seed = (seed * 1_000_003 + epoch) & (2**63 - 1)
                n = int(torch.ops.pyattn.subsample_tokens_(all_ids, sentence, keep_p, self.window, epoch_seed,
                                                           *kept_buffers))
                ids, sent, radius = (buf[:n] for buf in kept_buffers)
            else:
                keep = torch.rand(len(all_ids), generator=gen, device=dev, dtype=torch.float64) < keep_p[all_ids]
                ids, sent = all_ids[keep], sentence[keep]
                radius = self.window - torch.randint(0, self.window, (len(ids),), generator=gen, device=dev)
            # at least one block per merge point, so that every rank merges at each (_merge_at)
            merges = max(self.syncs_per_epoch, self.hot_syncs_per_epoch) if self.world.distributed else 1
            n_blocks = max(1, -(-len(ids) // block), merges)
            step = -(-len(ids) // n_blocks)
            for b in range(n_blocks):
                yield epoch, b, n_blocks, ids, sent, radius, min(len(ids), b * step), min(len(ids), (b + 1) * step)


def _merge_at(b: int, n_blocks: int, syncs: int, hot_syncs: int) -> Optional[str]:
    """The merge at the end of block b of an epoch's n_blocks >= max(syncs, hot_syncs):
    "whole" (syncs of them, the last at the epoch's end), "hot" (the hot rows alone, at the
    other of max(syncs, hot_syncs) even points) or None. Which point does what depends on
    the point's index alone, so ranks whose epochs have different block counts make the
    same sequence of all_reduce calls."""
    points = max(syncs, hot_syncs)

    def due(step: int, steps: int, per: int) -> bool:  # one of `per` even events at the end of step?
        return (step + 1) * per // steps > step * per // steps

    if not due(b, n_blocks, points):
        return None
    point = (b + 1) * points // n_blocks  # 1 .. points
    return "whole" if due(point - 1, points, syncs) else "hot"


def _progress(total: float, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="w", unit_scale=True, desc="word2vec", smoothing=0.1)
