"""Word2Vec: pyattn against gensim on one corpus, side by side in one run.

    python bench/word2vec_vs_gensim.py CORPUS [--sg 1] [--sg 0] [--workers 2] [--epochs 5] [--seed 1]
        [--rounds 1] [--device cpu] [--device cuda] [--gensim-input corpus_file]
        [--gensim-input corpus_iterable] [--window-batch 1] [--window-batch 0] [--wordsim PATH]
        [--analogies PATH] [--out results.md]

Both train with gensim's defaults (vector_size 100, window 5, negative 5, sample 1e-3,
min_count 5, alpha 0.025, 5 epochs, no loss computed) and the same worker
count; words/s counts raw corpus words x epochs over the training time only (the
vocabulary scan is timed separately). Quality: WordSim353 Spearman and questions-words
accuracy with gensim's evaluators on each model's vectors (the files default to the
copies gensim ships in gensim/test/test_data). gensim must be importable (an optional
dependency: use a venv with --system-site-packages). With several --device, pyattn trains
once on each (its words/s on CUDA is end to end: corpus in memory, pipeline on the GPU,
vectors copied back), gensim once per --gensim-input: corpus_file (the default, its
fastest) or corpus_iterable (sentences from LineSentence). The two differ in quality
as well as speed: corpus_file decays each worker's learning rate by that worker's
progress (bench/results/word2vec_cbow_gap_2026-12-05.md). Skip-gram runs pyattn once per
--window-batch: 0 (the default) takes the pairs in word2vec.c's order, 1 updates each
center's window as one batch.

--rounds N trains every run N times, with seeds seed, seed + 1, ...: each round trains
pyattn and gensim back to back, pyattn first in rounds 1, 3, ... and gensim first in
rounds 2, 4, ..., and a speedup compares runs of the same round. A shared VM's speed can change
twofold between runs a minute apart (bench/results/word2vec_rounds_2026-12-05.md), so a
single pair can land in different states; the summary gives each speedup's median and
range over the rounds, and each quality measure's mean difference from gensim.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def _evaluate(kv, wordsim, analogies):
    _, spearman, oov = kv.evaluate_word_pairs(wordsim)
    acc, sections = kv.evaluate_word_analogies(analogies)
    n = len(sections[-1]["correct"]) + len(sections[-1]["incorrect"])
    return float(spearman[0]), oov, acc, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("--sg", type=int, action="append", choices=(0, 1))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1, help="both trainers' seed (run several to see the noise)")
    ap.add_argument("--rounds", type=int, default=1, help="train each run this many times, seeds seed, seed + 1, ...")
    ap.add_argument("--device", action="append", choices=("cpu", "cuda"), help="pyattn's device (repeatable)")
    ap.add_argument("--gensim-input", action="append", choices=("corpus_file", "corpus_iterable"),
                    help="how gensim reads the corpus (repeatable; default corpus_file); speedups are against the first")
    ap.add_argument("--window-batch", type=int, action="append", choices=(1, 0),
                    help="pyattn skip-gram's window_batch (repeatable; default 0)")
    ap.add_argument("--wordsim")
    ap.add_argument("--analogies")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")

    import gensim
    from gensim.models import Word2Vec as GW2V
    from gensim.models.word2vec import LineSentence
    from gensim.test.utils import datapath

    import pyattn
    import torch
    from pyattn.word2vec import KeyedVectors, Word2Vec

    wordsim = args.wordsim or datapath("wordsim353.tsv")
    analogies = args.analogies or datapath("questions-words.txt")
    lines = [f"# word2vec: pyattn vs gensim {gensim.__version__}", "",
             f"corpus: `{args.corpus}` ({os.path.getsize(args.corpus) / 1e6:.1f} MB); workers {args.workers}; "
             f"epochs {args.epochs}; seeds {args.seed}..{args.seed + args.rounds - 1} (one per round); "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
             f"torch {torch.__version__}; pyattn cpu_isa {pyattn.build_info()['cpu_isa']}", "",
             "| model | round | impl | vocab | train s | words/s | speedup | WS353 Spearman | WS353 OOV % | "
             "analogy acc | analogies answered |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    summary = ["", "| model | impl | rounds | speedup median (range) | WS353 minus gensim's (mean) | "
               "analogy minus gensim's (mean) |", "| --- | --- | --- | --- | --- | --- |"]
    for sg in args.sg or [1, 0]:
        name = "skip-gram" if sg else "CBOW"
        per_impl: dict = {}  # impl -> [(speedup, WS353 diff, analogy diff)] over rounds

        def train_ours(kw):
            runs = []  # (device, window_batch, model, vocab seconds)
            for device in args.device or ["cpu"]:
                for batch in (args.window_batch or [0]) if sg else [0]:
                    ours = Word2Vec(progress=False, device=device, window_batch=bool(batch), **kw)
                    t = time.perf_counter()
                    ours.build_vocab(corpus_file=args.corpus)
                    runs.append((device, batch, ours, time.perf_counter() - t))
                    ours.train()
            return runs

        def train_gensim(kw):
            g_runs = []  # (input mode, model, vocab seconds, train seconds, words/s)
            for mode in args.gensim_input or ["corpus_file"]:
                # corpus_file: gensim's fastest input (each worker reads its part of the file, and
                # decays its learning rate by its own progress); corpus_iterable: the usual
                # sentences= input, with one linearly decaying rate, as word2vec.c and pyattn
                data = ({"corpus_file": args.corpus} if mode == "corpus_file" else
                        {"corpus_iterable": LineSentence(args.corpus, max_sentence_length=10000)})
                theirs = GW2V(**kw)
                t = time.perf_counter()
                theirs.build_vocab(**data)
                g_vocab_s = time.perf_counter() - t
                t = time.perf_counter()
                theirs.train(**data, total_examples=theirs.corpus_count, total_words=theirs.corpus_total_words,
                             epochs=args.epochs)
                g_train = time.perf_counter() - t
                g_runs.append((mode, theirs, g_vocab_s, g_train, theirs.corpus_total_words * args.epochs / g_train))
            return g_runs

        for rnd in range(args.rounds):
            # compute_loss=False is gensim's default: neither trainer spends time on the loss
            kw = dict(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, epochs=args.epochs,
                      workers=args.workers, sg=sg, alpha=0.025, seed=args.seed + rnd, compute_loss=False)
            if rnd % 2 == 0:
                runs = train_ours(kw)
                g_runs = train_gensim(kw)
            else:
                g_runs = train_gensim(kw)
                runs = train_ours(kw)
            g_wps = g_runs[0][4]
            g_eval = _evaluate(KeyedVectors(list(g_runs[0][1].wv.index_to_key), g_runs[0][1].wv.vectors),
                               wordsim, analogies)
            rows = []  # (impl, vocab, train s, vocab s, words/s, evaluation)
            for device, batch, ours, vocab_s in runs:
                notes = ([] if device == "cpu" else [device]) + (["window batch"] if batch else [])
                impl = "pyattn" + (f" ({', '.join(notes)})" if notes else "")
                rows.append((impl, len(ours.wv), ours.train_seconds, vocab_s, ours.words_per_second,
                             _evaluate(ours.wv, wordsim, analogies)))
            for i, (mode, theirs, g_vocab_s, g_train, wps) in enumerate(g_runs):
                e_theirs = g_eval if i == 0 else _evaluate(
                    KeyedVectors(list(theirs.wv.index_to_key), theirs.wv.vectors), wordsim, analogies)
                rows.append((f"gensim ({mode})", len(theirs.wv), g_train, g_vocab_s, wps, e_theirs))
            for impl, vocab, train_s, vocab_s, wps, e in rows:
                lines.append(f"| {name} | {rnd + 1} | {impl} | {vocab} | {train_s:.1f} (+{vocab_s:.1f} vocab) | "
                             f"{wps / 1e6:.3f} M | {wps / g_wps:.2f}x | {e[0]:.4f} | {e[1]:.1f} | {e[2]:.4f} | {e[3]} |")
                per_impl.setdefault(impl, []).append((wps / g_wps, e[0] - g_eval[0], e[2] - g_eval[2]))
            print("\n".join(lines[-len(rows):]), flush=True)
        for impl, got in per_impl.items():
            if impl == f"gensim ({(args.gensim_input or ['corpus_file'])[0]})":
                continue
            speedups = sorted(x[0] for x in got)
            summary.append(f"| {name} | {impl} | {len(got)} | {statistics.median(speedups):.2f}x "
                           f"({speedups[0]:.2f}–{speedups[-1]:.2f}x) | {statistics.mean(x[1] for x in got):+.4f} | "
                           f"{statistics.mean(x[2] for x in got):+.4f} |")
    lines += summary
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
