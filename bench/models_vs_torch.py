"""The models of pyattn.models on real text, side by side in one run (issue 17):

    python bench/models_vs_torch.py CORPUS [--mt-src SRC --mt-tgt TGT] [--json OUT]

1. Perplexity on the held-out tail of CORPUS: the n-gram baseline, then the LSTM LM and
   the Transformer LM (pyattn's modules) after a stated training budget.
2. Training speed, pyattn's modules against torch's: the same model (same seed, same
   state_dict, same batches), steps timed interleaved (ours, theirs, ours, ...), tokens/s
   as medians, held-out perplexity of both after the same steps, and the modules pyattn
   replaces (self-attention, the LSTM) timed alone, forward+backward: their speed ratio
   and their share of our step, from which the whole-step ratio can be read.
3. With --mt-src/--mt-tgt: the seq2seq translator (greedy and beam BLEU).

CORPUS is plain text, one line per sentence or paragraph (bench/make_debian_corpus.py
builds an 11 M-word one from Debian packages); only its first --max-lines lines are read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from pyattn.models import data
from pyattn.models.ngram import NGramLM
from pyattn.models.train import build_lm, lm_nll, train_lm, train_mt
from pyattn.metrics import perplexity


def _load(corpus: str, max_lines: int, heldout: float, vocab_size: int):
    lines = data.read_lines(corpus)[:max_lines]
    cut = data.split_heldout(len(lines), heldout)
    vocab = data.Vocab.build((data.tokenize(line) for line in lines[:cut]), max_size=vocab_size)
    return vocab, data.lm_stream(lines[:cut], vocab), data.lm_stream(lines[cut:], vocab)


def _loss(model, w):
    out = model(w[:, :-1])
    logits = out[0] if isinstance(out, tuple) else out
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))


def _layer_seconds(models: dict, arch: str, batch: int, context: int, repeats: int, seed: int) -> dict:
    """Forward+backward seconds (median of ``repeats``, ours and torch's interleaved) of
    the modules pyattn replaces, summed over the model: every block's self-attention
    (TransformerLM) or the whole LSTM stack (LSTMLM), on random inputs of the shapes the
    training step feeds them."""
    gen = torch.Generator().manual_seed(seed)
    if arch == "transformer":
        width, layers = models["pyattn"].d_model, len(models["pyattn"].blocks)
        causal_mask = torch.ones(context, context, dtype=torch.bool).triu(1)

        def call(model, x):
            out, _ = model.blocks[0].attention(x, x, x, need_weights=False, attn_mask=causal_mask, is_causal=True)
            return out
    else:
        width, layers = models["pyattn"].hidden_size, 1

        def call(model, x):
            return model.lstm(x)[0]
    x = torch.randn(batch, context, width, generator=gen)
    grad = torch.randn(batch, context, width, generator=gen)
    times = {"pyattn": [], "torch": []}
    for r in range(repeats + 1):
        for impl in (("pyattn", "torch") if r % 2 == 0 else ("torch", "pyattn")):
            xi = x.clone().requires_grad_()
            t0 = time.perf_counter()
            call(models[impl], xi).backward(grad)
            if r > 0:  # the first call of each pays one-time costs
                times[impl].append(time.perf_counter() - t0)
    return {impl: layers * statistics.median(t) for impl, t in times.items()}


def speed(arch: str, config: dict, vocab, train_ids, heldout_ids, context: int, batch: int, steps: int,
          lr: float, seed: int) -> dict:
    """Both implementations of one model trained side by side on the same batches."""
    models, opts = {}, {}
    for impl in ("pyattn", "torch"):
        torch.manual_seed(seed)
        models[impl] = build_lm(arch, len(vocab), dict(config), impl)
        opts[impl] = torch.optim.AdamW(models[impl].parameters(), lr=lr)
    models["torch"].load_state_dict(models["pyattn"].state_dict())
    windows = data.lm_windows(train_ids, context)
    gen = torch.Generator().manual_seed(seed)
    times = {"pyattn": [], "torch": []}
    for step in range(steps):
        w = windows[torch.randint(0, len(windows), (batch,), generator=gen)]
        order = ("pyattn", "torch") if step % 2 == 0 else ("torch", "pyattn")
        for impl in order:
            models[impl].train()
            t0 = time.perf_counter()
            opts[impl].zero_grad(set_to_none=True)
            _loss(models[impl], w).backward()
            opts[impl].step()
            times[impl].append(time.perf_counter() - t0)
    tokens = batch * context
    row = {"arch": arch, "config": config, "context": context, "batch": batch, "steps": steps}
    for impl in ("pyattn", "torch"):
        warm = times[impl][2:]  # the first steps pay one-time costs (allocator, packing)
        row[f"{impl}_tokens_per_s"] = tokens / statistics.median(warm)
        nll, count = lm_nll(models[impl], heldout_ids, context, batch, torch.device("cpu"))
        row[f"{impl}_heldout_perplexity"] = perplexity(nll, count)
    row["speedup"] = row["pyattn_tokens_per_s"] / row["torch_tokens_per_s"]
    # What the whole-step ratio is made of: the replaced modules alone, and their share
    # of our step (a layer ratio X on a share S gives at most 1 / (1 - S (1 - 1/X))).
    layers = _layer_seconds(models, arch, batch, context, repeats=max(5, steps // 4), seed=seed)
    step_seconds = tokens / row["pyattn_tokens_per_s"]
    row["layer_seconds"] = layers
    row["layer_speedup"] = layers["torch"] / layers["pyattn"]
    row["layer_share_of_step"] = layers["pyattn"] / step_seconds
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("--max-lines", type=int, default=200000)
    ap.add_argument("--vocab-size", type=int, default=10000)
    ap.add_argument("--heldout", type=float, default=0.02)
    ap.add_argument("--ppl-steps", type=int, default=300, help="training budget of the perplexity runs")
    ap.add_argument("--speed-steps", type=int, default=12)
    ap.add_argument("--mt-src")
    ap.add_argument("--mt-tgt")
    ap.add_argument("--mt-steps", type=int, default=1500)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--skip", nargs="*", default=[], choices=("ppl", "speed", "mt"))
    args = ap.parse_args()
    rows = {"threads": torch.get_num_threads(), "torch": torch.__version__, "corpus": args.corpus,
            "max_lines": args.max_lines}
    vocab, train_ids, heldout_ids = _load(args.corpus, args.max_lines, args.heldout, args.vocab_size)
    rows["train_tokens"], rows["heldout_tokens"], rows["vocab"] = len(train_ids), len(heldout_ids), len(vocab)
    print(f"corpus: {len(train_ids)} training tokens, {len(heldout_ids)} held out, vocabulary {len(vocab)}", flush=True)

    if "ppl" not in args.skip:
        for order in (2, 3):
            t0 = time.perf_counter()
            ngram = NGramLM(order=order, delta=0.01).fit(train_ids, len(vocab))
            rows[f"ngram{order}"] = {"heldout_perplexity": ngram.perplexity(heldout_ids),
                                     "seconds": time.perf_counter() - t0}
            print(f"{order}-gram: held-out perplexity {rows[f'ngram{order}']['heldout_perplexity']:.1f}", flush=True)
        tmp = f"/tmp/pyattn_models_corpus_{args.max_lines}.txt"
        with open(tmp, "w", encoding="utf8") as f:
            f.writelines(line + "\n" for line in data.read_lines(args.corpus)[: args.max_lines])
        for arch, config, lr, context, batch in (
            ("lstm", {"hidden_size": 256, "num_layers": 2, "dropout": 0.1}, 3e-3, 64, 32),
            ("transformer", {"d_model": 256, "n_heads": 4, "n_layers": 4, "dropout": 0.1}, 1e-3, 64, 32),
        ):
            t0 = time.perf_counter()
            result = train_lm(tmp, f"/tmp/pyattn_models_{arch}.pt", arch=arch, config=config, context=context,
                              batch_size=batch, steps=args.ppl_steps, lr=lr, heldout=args.heldout,
                              vocab_size=args.vocab_size, progress=False)
            rows[f"{arch}_lm"] = {"config": config, "context": context, "batch": batch, "lr": lr,
                                  "steps": args.ppl_steps, "seconds": time.perf_counter() - t0, **vars(result)}
            print(f"{arch} LM, {args.ppl_steps} steps of {batch}x{context} tokens: held-out perplexity "
                  f"{result.heldout_perplexity:.1f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    if "speed" not in args.skip:
        for arch, config, context, batch, lr in (
            ("transformer", {"d_model": 256, "n_heads": 4, "n_layers": 4, "max_len": 512, "dropout": 0.0}, 512, 4,
             1e-3),
            ("lstm", {"hidden_size": 512, "num_layers": 2, "dropout": 0.0}, 128, 16, 3e-3),
        ):
            row = speed(arch, config, vocab, train_ids, heldout_ids, context, batch, args.speed_steps, lr, seed=0)
            rows[f"{arch}_speed"] = row
            print(f"{arch} speed: pyattn {row['pyattn_tokens_per_s']:.0f} tok/s, torch {row['torch_tokens_per_s']:.0f} "
                  f"tok/s ({row['speedup']:.2f}x); held-out perplexity after {row['steps']} steps "
                  f"{row['pyattn_heldout_perplexity']:.1f} vs {row['torch_heldout_perplexity']:.1f}; "
                  f"the replaced modules: {row['layer_speedup']:.2f}x torch's, "
                  f"{100 * row['layer_share_of_step']:.0f}% of our step", flush=True)

    if args.mt_src and "mt" not in args.skip:
        t0 = time.perf_counter()
        result = train_mt(args.mt_src, args.mt_tgt, "/tmp/pyattn_models_mt.pt", steps=args.mt_steps, batch_size=64,
                          config={"emb_size": 256, "hidden_size": 256}, progress=False)
        rows["seq2seq"] = {"seconds": time.perf_counter() - t0, **vars(result)}
        print(f"seq2seq, {args.mt_steps} steps: BLEU greedy {result.bleu_greedy:.2f}, beam {result.beam_size} "
              f"{result.bleu_beam:.2f} on {result.heldout_sentences} held-out sentences", flush=True)
        for src, ref, hyp in result.examples:
            print(f"  src: {src}\n  ref: {ref}\n  hyp: {hyp}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, default=str)


if __name__ == "__main__":
    main()
