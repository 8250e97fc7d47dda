"""Command line for pyattn's models:

    python -m pyattn.models train-lm --arch transformer|lstm|ngram CORPUS -o CKPT [options]
    python -m pyattn.models prepare-mt --lang de -o PREFIX      (PREFIX.en / PREFIX.de from message catalogs)
    python -m pyattn.models train-mt SRC TGT -o CKPT [options]
    python -m pyattn.models translate CKPT [INPUT]               (one sentence per line; stdin by default)
    python -m pyattn.models evaluate CKPT CORPUS | CKPT SRC TGT  (perplexity or BLEU)

Under ``torchrun --nproc_per_node N -m pyattn.models train-lm ...`` training runs with
DistributedDataParallel (gloo on the CPU, NCCL with ``--device cuda``), the data sharded
by rank; the main rank prints and writes the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

ARCH_DEFAULTS = {
    "transformer": {"d_model": 256, "n_heads": 4, "n_layers": 4, "dropout": 0.1},
    "lstm": {"hidden_size": 512, "num_layers": 2, "dropout": 0.2},
}


def _lm_config(args) -> dict:
    if args.arch == "ngram":
        return {}
    config = dict(ARCH_DEFAULTS[args.arch])
    overrides = {"transformer": {"d_model": args.d_model, "n_heads": args.heads, "n_layers": args.layers,
                                 "positions": args.positions},
                 "lstm": {"hidden_size": args.hidden, "num_layers": args.layers}}[args.arch]
    config.update({k: v for k, v in overrides.items() if v is not None})
    if args.dropout is not None:
        config["dropout"] = args.dropout
    return config


def _print_main(*a, **kw) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(*a, **kw)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="checkpoint file (state_dict + config + vocabulary)")
    p.add_argument("--impl", choices=("pyattn", "torch"), default="pyattn",
                   help="pyattn's modules (default) or torch's, same state_dict")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--heldout", type=float, default=0.05, help="fraction held out for evaluation")
    p.add_argument("--vocab-size", type=int, default=20000)
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from --output's checkpoint")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyattn.models", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lm = sub.add_parser("train-lm", help="train a language model; prints the held-out perplexity")
    lm.add_argument("corpus", help="UTF-8 text, one sentence or paragraph per line")
    lm.add_argument("--arch", required=True, choices=("transformer", "lstm", "ngram"))
    lm.add_argument("--context", type=int, default=128, help="tokens per training window")
    lm.add_argument("--d-model", type=int, default=None)
    lm.add_argument("--heads", type=int, default=None)
    lm.add_argument("--layers", type=int, default=None)
    lm.add_argument("--hidden", type=int, default=None)
    lm.add_argument("--positions", choices=("sinusoidal", "learned"), default=None)
    lm.add_argument("--order", type=int, default=3, help="n-gram order")
    lm.add_argument("--delta", type=float, default=0.01, help="n-gram add-delta")
    _common(lm)
    mt = sub.add_parser("train-mt", help="train the attentional seq2seq translator; prints greedy and beam BLEU")
    mt.add_argument("src")
    mt.add_argument("tgt")
    mt.add_argument("--emb", type=int, default=None)
    mt.add_argument("--hidden", type=int, default=None)
    mt.add_argument("--layers", type=int, default=None)
    mt.add_argument("--max-tokens", type=int, default=30, help="drop pairs longer than this on either side")
    mt.add_argument("--beam", type=int, default=5)
    mt.add_argument("--eval-sentences", type=int, default=500)
    _common(mt)
    prep = sub.add_parser("prepare-mt", help="write an English -> LANG parallel corpus from installed message catalogs")
    prep.add_argument("--lang", required=True, help="e.g. de, fr")
    prep.add_argument("--locale-dir", default="/usr/share/locale")
    prep.add_argument("-o", "--output", required=True, help="prefix: writes PREFIX.en and PREFIX.LANG")
    tr = sub.add_parser("translate", help="translate lines with a train-mt checkpoint")
    tr.add_argument("checkpoint")
    tr.add_argument("input", nargs="?", default="-")
    tr.add_argument("--beam", type=int, default=5)
    ev = sub.add_parser("evaluate", help="perplexity (LM checkpoint + corpus) or BLEU (MT checkpoint + src + tgt)")
    ev.add_argument("checkpoint")
    ev.add_argument("files", nargs="+")
    ev.add_argument("--beam", type=int, default=5)
    ev.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)

    try:
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        if args.cmd == "train-lm":
            from pyattn.models.train import train_lm

            result = train_lm(args.corpus, args.output, arch=args.arch, impl=args.impl, config=_lm_config(args),
                              context=args.context, batch_size=args.batch_size, steps=args.steps,
                              lr=args.lr or (3e-4 if args.arch == "transformer" else 2e-3), heldout=args.heldout,
                              vocab_size=args.vocab_size, seed=args.seed, resume=args.resume, device=args.device,
                              progress=not args.no_progress, order=args.order, delta=args.delta)
            _report(args, {"arch": args.arch, "impl": args.impl, **vars(result)},
                    f"held-out perplexity {result.heldout_perplexity:.2f} over {result.heldout_tokens} tokens"
                    + (f"; {result.train_tokens_per_s:,.0f} training tokens/s" if result.train_tokens_per_s else ""))
        elif args.cmd == "train-mt":
            from pyattn.models.train import train_mt

            config = {k: v for k, v in (("emb_size", args.emb), ("hidden_size", args.hidden),
                                        ("num_layers", args.layers), ("dropout", args.dropout)) if v is not None}
            result = train_mt(args.src, args.tgt, args.output, impl=args.impl, config=config,
                              batch_size=args.batch_size, steps=args.steps, lr=args.lr or 2e-3, heldout=args.heldout,
                              vocab_size=args.vocab_size, max_tokens=args.max_tokens, beam_size=args.beam,
                              eval_sentences=args.eval_sentences, seed=args.seed, resume=args.resume,
                              device=args.device, progress=not args.no_progress)
            _report(args, vars(result), f"BLEU on {result.heldout_sentences} held-out sentences: greedy "
                    f"{result.bleu_greedy:.2f}, beam {result.beam_size} {result.bleu_beam:.2f}")
        elif args.cmd == "prepare-mt":
            from pyattn.models.data import read_message_catalogs

            pairs = read_message_catalogs(args.lang, args.locale_dir)
            for suffix, side in (("en", 0), (args.lang, 1)):
                with open(f"{args.output}.{suffix}", "w", encoding="utf8") as f:
                    f.writelines(p[side] + "\n" for p in pairs)
            print(f"wrote {len(pairs)} pairs to {args.output}.en and {args.output}.{args.lang}")
        elif args.cmd == "translate":
            from pyattn.models.evaluate import translate_lines

            lines = sys.stdin.read().splitlines() if args.input == "-" else open(args.input, encoding="utf8").read().splitlines()
            for line in translate_lines(args.checkpoint, lines, args.beam):
                print(line)
        else:
            from pyattn.models.evaluate import evaluate

            print(evaluate(args.checkpoint, args.files, beam_size=args.beam, batch_size=args.batch_size))
    except (OSError, ValueError) as e:
        print(f"pyattn.models {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _report(args, fields: dict, text: str) -> None:
    if args.json:
        _print_main(json.dumps(fields, default=str))
    else:
        _print_main(text)


if __name__ == "__main__":
    sys.exit(main())
