"""Command line: ``python -m pyattn.word2vec train CORPUS -o VECTORS [options]`` and
``python -m pyattn.word2vec evaluate VECTORS --pairs FILE --analogies FILE``.

``torchrun --nproc_per_node N -m pyattn.word2vec train CORPUS -o VECTORS ...`` trains
across N processes (gloo on the CPU, NCCL with ``--device cuda``): rank 0 reads the
corpus, each rank trains on its share, the ranks merge their tables (summing their
updates) ``--syncs-per-epoch`` times per epoch and the most frequent words' rows
``--hot-syncs-per-epoch`` times, and rank 0 writes VECTORS."""

from __future__ import annotations

import argparse
import sys


def _is_binary(path: str, flag) -> bool:
    return flag if flag is not None else path.endswith(".bin")


def _train(args) -> int:
    from pyattn import distributed
    from pyattn.word2vec import Word2Vec

    world = distributed.init(args.device)
    try:
        alpha = args.alpha if args.alpha is not None else (0.025 if args.sg else 0.05)
        m = Word2Vec(corpus_file=args.corpus, vector_size=args.vector_size, window=args.window,
                     negative=args.negative, ns_exponent=args.ns_exponent, sample=args.sample,
                     min_count=args.min_count, max_vocab_size=args.max_vocab_size, alpha=alpha,
                     min_alpha=args.min_alpha, epochs=args.epochs, workers=args.workers, seed=args.seed,
                     sg=args.sg, progress=not args.no_progress, device=str(world.device), world=world,
                     syncs_per_epoch=args.syncs_per_epoch, hot_syncs_per_epoch=args.hot_syncs_per_epoch,
                     window_batch=bool(args.window_batch))
        # every rank's words and time: the run's words/s is all the words over the slowest rank
        words = distributed.sum_all([float(m.corpus.raw_words * m.epochs)], world)[0]
        seconds = distributed.max_all([m.train_seconds], world)[0]
        if world.is_main:
            m.wv.save_word2vec_format(args.output, binary=_is_binary(args.output, args.binary))
            ranks = f" on {world.size} processes" if world.distributed else ""
            print(f"{len(m.wv)} words x {m.vector_size} dims -> {args.output}; {words:.0f} words{ranks} in "
                  f"{seconds:.1f} s ({words / seconds / 1e6:.2f} M words/s), loss {m.running_loss:.4f}")
    finally:
        distributed.shutdown(world)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyattn.word2vec", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train vectors on a UTF-8 text corpus (one sentence per line)")
    t.add_argument("corpus")
    t.add_argument("-o", "--output", required=True, help="vectors file (word2vec format; binary if it ends in .bin)")
    t.add_argument("--sg", type=int, default=1, choices=(0, 1), help="1: skip-gram (default), 0: CBOW")
    t.add_argument("--size", "--vector-size", dest="vector_size", type=int, default=100)
    t.add_argument("--window", type=int, default=5)
    t.add_argument("--negative", type=int, default=5)
    t.add_argument("--ns-exponent", type=float, default=0.75)
    t.add_argument("--sample", type=float, default=1e-3)
    t.add_argument("--min-count", type=int, default=5)
    t.add_argument("--max-vocab-size", type=int, default=None)
    t.add_argument("--alpha", type=float, default=None, help="default 0.025 (skip-gram) / 0.05 (CBOW)")
    t.add_argument("--min-alpha", type=float, default=0.0001)
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--workers", type=int, default=3)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--binary", dest="binary", action="store_true", default=None)
    t.add_argument("--text", dest="binary", action="store_false")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--device", default="cpu", help="cpu, or cuda (under torchrun: each rank its local GPU)")
    t.add_argument("--window-batch", type=int, default=0, choices=(0, 1),
                   help="skip-gram: 0 (default) takes the pairs one by one in word2vec.c's order; 1 updates "
                        "each center's window as one batch with shared negatives (pWord2Vec): faster, but "
                        "its quality departs from word2vec.c's by the corpus")
    t.add_argument("--syncs-per-epoch", type=int, default=16,
                   help="under torchrun: how often per epoch the ranks merge their tables")
    t.add_argument("--hot-syncs-per-epoch", type=int, default=None,
                   help="under torchrun: how often per epoch the ranks merge the rows of the most frequent words "
                        "(0: only with the rest; default 64 for CBOW, 0 for skip-gram)")
    e = sub.add_parser("evaluate", help="evaluate vectors on word-pair similarities and/or analogies")
    e.add_argument("vectors")
    e.add_argument("--binary", dest="binary", action="store_true", default=None)
    e.add_argument("--text", dest="binary", action="store_false")
    e.add_argument("--pairs", action="append", default=[], help="word1<TAB>word2<TAB>score file (e.g. wordsim353.tsv)")
    e.add_argument("--analogies", action="append", default=[], help="questions-words.txt-style file")
    e.add_argument("--restrict-vocab", type=int, default=300000)
    e.add_argument("--case-sensitive", action="store_true")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "train":
            return _train(args)
        else:
            from pyattn.word2vec import KeyedVectors

            if not args.pairs and not args.analogies:
                ap.error("evaluate: give --pairs and/or --analogies")
            kv = KeyedVectors.load_word2vec_format(args.vectors, binary=_is_binary(args.vectors, args.binary))
            ci = not args.case_sensitive
            for p in args.pairs:
                pearson, spearman, oov = kv.evaluate_word_pairs(p, restrict_vocab=args.restrict_vocab,
                                                                case_insensitive=ci)
                print(f"{p}: Spearman {spearman[0]:.4f}  Pearson {pearson[0]:.4f}  OOV {oov:.1f}%")
            for a in args.analogies:
                acc, sections = kv.evaluate_word_analogies(a, restrict_vocab=args.restrict_vocab,
                                                           case_insensitive=ci)
                n = len(sections[-1]["correct"]) + len(sections[-1]["incorrect"])
                print(f"{a}: accuracy {acc:.4f} on {n} questions  OOV {kv.analogy_oov_ratio:.1f}%")
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
