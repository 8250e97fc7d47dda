"""The update kernels on 64-byte-aligned rows against packed rows, in one process.

Word2Vec keeps both tables in pyattn.word2vec.model.aligned_rows: each row starts on a
64-byte boundary (dim 100 gets a row stride of 112 floats). With packed 400-byte rows,
three rows in four start mid cache line, and every vector load and store of those rows
straddles two lines. This script trains one epoch of a corpus's blocks, as the trainer
makes them, into two pairs of tables that start equal, one packed and one aligned, the
blocks alternating between them, so that both see the machine in the same state (this
VM's speed swings 2-3x over minutes). It prints the update time of each.

    python bench/word2vec_aligned_rows.py CORPUS [--sg 1] [--workers 2] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pyattn  # noqa: E402,F401
from pyattn.word2vec import Word2Vec  # noqa: E402
from pyattn.word2vec.model import alias_table, aligned_rows  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--sg", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    model = Word2Vec(sg=args.sg, workers=args.workers, progress=False, seed=1).build_vocab(corpus_file=args.corpus)
    table = alias_table(model.corpus.counts.astype(np.float64) ** model.ns_exponent)
    op = torch.ops.pyattn.sgns_stream_update_ if args.sg else torch.ops.pyattn.cbow_stream_update_
    torch.set_num_threads(args.workers)
    print(f"{'skip-gram pairs' if args.sg else 'CBOW'}, {args.workers} threads, dim {model.vector_size}, "
          f"vocabulary {len(model.wv)}")
    for rnd in range(args.rounds):
        packed = [torch.from_numpy(model.wv.vectors).contiguous(), model.syn1neg.contiguous()]  # copies
        aligned = [aligned_rows(*t.shape).copy_(t) for t in packed]
        seconds = {"packed": 0.0, "aligned": 0.0}
        for i, (_, _, _, ids, sent, radius, start, stop) in enumerate(model._blocks(1, rnd)):
            name = "packed" if i % 2 == 0 else "aligned"
            w_in, w_out = packed if name == "packed" else aligned
            extra = (False,) if args.sg else ()  # window_batch
            t = time.perf_counter()
            op(w_in, w_out, ids, sent, radius, start, stop, model.window, None, table, model.negative, 0.02, i,
               False, 0, *extra)
            seconds[name] += time.perf_counter() - t
        print(f"round {rnd}: packed {seconds['packed']:.3f} s, aligned {seconds['aligned']:.3f} s: "
              f"{seconds['packed'] / seconds['aligned']:.3f}x", flush=True)


if __name__ == "__main__":
    main()
