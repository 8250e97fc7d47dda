"""Word2Vec on CUDA against pyattn's CPU trainer on one corpus, in one run: issue 15's CUDA
rows (words/s end to end on one card with gensim's defaults; WS353 and analogy accuracy
within 0.02 of the CPU trainer's). Made for a lent GPU: needs neither gensim nor a
network, and fits a few minutes (scripts/gpu_check.sh runs it as its word2vec step).

    python bench/word2vec_cuda.py CORPUS --wordsim wordsim353.tsv --analogies questions-words.txt
        [--seeds 1,2] [--cpu-workers N] [--stream-loads 48,192,384] [--epochs 5] [--out results.md]

The corpus is read once (pyattn.word2vec.corpus.encode) and every model trains on it:
  1. per model (skip-gram pairs, CBOW, skip-gram window batch) and seed, the CPU trainer
     with --cpu-workers threads (default: every core) and the CUDA trainer. words/s: raw
     words x epochs over Word2Vec.train's time; on CUDA that is end to end (tables to the
     GPU, subsampling and windows there, one update launch per block, vectors back).
     Quality: pyattn's evaluators (the same numbers as gensim's, tests/test_word2vec.py).
  2. the CUDA data pipeline alone (subsampling, window radii, blocks), every epoch.
  3. per STREAM_LOAD in --stream-loads, with the first seed: the CUDA trainer with that
     bound on streams x the busiest row's load (pyattn.word2vec.model.cuda_streams; the
     default is model.STREAM_LOAD), showing speed against quality as the examples in
     flight grow.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import pyattn
from pyattn.word2vec import Word2Vec
from pyattn.word2vec import model as w2v_model
from pyattn.word2vec.corpus import encode, line_sentences

MODELS = (("skip-gram", 1, False), ("CBOW", 0, False), ("skip-gram window batch", 1, True))  # the first


def evaluate(kv, wordsim, analogies):
    """(WS353 Spearman, analogy accuracy) with gensim's rules."""
    _, spearman, _ = kv.evaluate_word_pairs(wordsim)
    acc, _ = kv.evaluate_word_analogies(analogies)
    return float(spearman[0]), float(acc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("--wordsim", required=True, help="word-pair similarity file (gensim's wordsim353.tsv)")
    ap.add_argument("--analogies", required=True, help="analogy file (questions-words.txt)")
    ap.add_argument("--seeds", default="1,2", help="comma-separated seeds, one run per model, device and seed")
    ap.add_argument("--cpu-workers", type=int, default=os.cpu_count())
    ap.add_argument("--stream-loads", default="48,192,384",
                    help=f"CUDA runs at these STREAM_LOAD bounds (default bound {w2v_model.STREAM_LOAD}); '' for none")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    loads = [int(s) for s in args.stream_loads.split(",") if s]
    if not (torch.cuda.is_available() and pyattn.build_info()["cuda"]):
        ap.error("needs a CUDA GPU and pyattn built with CUDA")

    t = time.perf_counter()
    corpus = encode(line_sentences(args.corpus))  # gensim's min_count 5
    read_s = time.perf_counter() - t
    lines = [f"# word2vec: pyattn's CUDA trainer against its CPU trainer", "",
             f"- corpus: `{os.path.basename(args.corpus)}`, {corpus.raw_words} words, vocabulary "
             f"{len(corpus.index_to_key)} (read in {read_s:.1f} s); {args.epochs} epochs, gensim's defaults",
             f"- GPU: {torch.cuda.get_device_name(0)}; CPU: {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, the CPU trainer with {args.cpu_workers} workers",
             f"- torch {torch.__version__}, CUDA {torch.version.cuda}; pyattn {pyattn.build_info()}", "",
             "| model | device | seed | STREAM_LOAD | max streams | train s | words/s | WS353 | analogy |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    print("\n".join(lines), flush=True)

    def save():  # after every run, so that a run cut short by a time limit leaves its rows
        if args.out:
            with open(args.out, "w") as f:
                f.write("\n".join(lines) + "\n")

    results = {}  # (model name, device) -> [(words/s, WS353, analogy)]

    def train(sg, window_batch, device, seed, stream_load=w2v_model.STREAM_LOAD, epochs=args.epochs):
        w2v_model.STREAM_LOAD = stream_load  # read by cuda_streams when train() starts
        try:
            m = Word2Vec(vector_size=100, window=5, negative=5, sample=1e-3, alpha=0.025, epochs=epochs, sg=sg,
                         window_batch=window_batch, seed=seed, device=device, progress=False, compute_loss=False,
                         workers=args.cpu_workers)
            return m.build_vocab(corpus=corpus).train()
        finally:
            w2v_model.STREAM_LOAD = default_load

    def report(name, device, seed, m, stream_load="", wanted=True):
        ws, an = evaluate(m.wv, args.wordsim, args.analogies)
        if wanted:
            results.setdefault((name, device), []).append((m.words_per_second, ws, an))
        streams = m._max_streams if device == "cuda" else ""
        lines.append(f"| {name} | {device} | {seed} | {stream_load} | {streams} | {m.train_seconds:.2f} | "
                     f"{m.words_per_second / 1e6:.2f} M | {ws:.4f} | {an:.4f} |")
        print(lines[-1], flush=True)
        save()

    default_load = w2v_model.STREAM_LOAD
    train(1, False, "cuda", seeds[0], epochs=1)  # warm-up: CUDA context, kernel loading, allocator
    for name, sg, window_batch in MODELS:
        for seed in seeds:
            for device in ("cuda", "cpu"):
                report(name, device, seed, train(sg, window_batch, device, seed))

    m = Word2Vec(epochs=args.epochs, seed=seeds[0], device="cuda", progress=False).build_vocab(corpus=corpus)
    torch.cuda.synchronize()
    t = time.perf_counter()
    blocks = sum(1 for _ in m._blocks(args.epochs, seeds[0]))
    torch.cuda.synchronize()
    pipeline_s = time.perf_counter() - t

    for load in loads:
        for name, sg, window_batch in MODELS:
            if window_batch:
                continue
            report(name, "cuda", seeds[0], train(sg, window_batch, "cuda", seeds[0], load), load, wanted=False)

    lines += ["", f"CUDA data pipeline alone (subsampling, radii, {blocks} blocks over {args.epochs} epochs): "
              f"{pipeline_s:.3f} s", "",
              "| model | CUDA words/s (median) | CPU words/s (median) | CUDA / CPU | WS353 CUDA minus CPU (mean) | "
              "analogy CUDA minus CPU (mean) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, _, _ in MODELS:
        gpu, cpu = results[(name, "cuda")], results[(name, "cpu")]
        g_wps, c_wps = statistics.median(r[0] for r in gpu), statistics.median(r[0] for r in cpu)
        lines.append(f"| {name} | {g_wps / 1e6:.2f} M | {c_wps / 1e6:.2f} M | {g_wps / c_wps:.2f}x | "
                     f"{statistics.mean(r[1] for r in gpu) - statistics.mean(r[1] for r in cpu):+.4f} | "
                     f"{statistics.mean(r[2] for r in gpu) - statistics.mean(r[2] for r in cpu):+.4f} |")
    print("\n".join(lines[-len(MODELS) - 5:]))
    save()


if __name__ == "__main__":
    main()
