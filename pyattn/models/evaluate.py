"""Using a trained checkpoint: perplexity of a corpus, BLEU of a parallel corpus, and
translating lines."""

from __future__ import annotations

from typing import Sequence

import torch

from pyattn.metrics import corpus_bleu, perplexity
from pyattn.models import checkpoint, data
from pyattn.models.seq2seq import Seq2Seq
from pyattn.models.train import build_lm, lm_nll, translate_ids


def load_lm(path: str):
    """(model or NGramLM, Vocab, context) from a train-lm checkpoint."""
    ckpt = checkpoint.load(path, "lm")
    vocab = data.Vocab(ckpt["vocab"])
    if ckpt["arch"] == "ngram":
        return ckpt["model"], vocab, None
    model = build_lm(ckpt["arch"], len(vocab), ckpt["config"], ckpt["impl"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), vocab, ckpt["context"]


def load_mt(path: str):
    """(Seq2Seq, source Vocab, target Vocab, max_tokens) from a train-mt checkpoint."""
    ckpt = checkpoint.load(path, "mt")
    src_vocab, tgt_vocab = data.Vocab(ckpt["src_vocab"]), data.Vocab(ckpt["tgt_vocab"])
    model = Seq2Seq(len(src_vocab), len(tgt_vocab), impl=ckpt["impl"], **ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), src_vocab, tgt_vocab, ckpt["max_tokens"]


def translate_lines(path: str, lines: Sequence[str], beam_size: int = 5) -> list[str]:
    model, src_vocab, tgt_vocab, max_tokens = load_mt(path)
    src = [src_vocab.encode(data.tokenize(line)) or [src_vocab.unk] for line in lines]
    hyps = translate_ids(model, src, tgt_vocab, beam_size, 2 * max_tokens + 5, torch.device("cpu"))
    return [" ".join(h) for h in hyps]


def evaluate(path: str, files: Sequence[str], beam_size: int = 5, batch_size: int = 16) -> str:
    """One line: the perplexity of ``files[0]`` under an LM checkpoint, or greedy and beam
    BLEU of the pairs in ``files[0]`` / ``files[1]`` under an MT checkpoint."""
    kind = checkpoint.load(path)["kind"]
    if kind == "lm":
        if len(files) != 1:
            raise ValueError(f"evaluate: a language model takes one corpus file, got {len(files)}")
        model, vocab, context = load_lm(path)
        stream = data.lm_stream(data.read_lines(files[0]), vocab)
        if context is None:
            return f"perplexity {model.perplexity(stream):.2f} over {len(stream)} tokens"
        nll, count = lm_nll(model, stream, context, batch_size, torch.device("cpu"))
        return f"perplexity {perplexity(nll, count):.2f} over {count} tokens"
    if len(files) != 2:
        raise ValueError(f"evaluate: a translation model takes a source and a target file, got {len(files)} files")
    model, src_vocab, tgt_vocab, max_tokens = load_mt(path)
    src, tgt = data.read_lines(files[0], "source"), data.read_lines(files[1], "target")
    if len(src) != len(tgt):
        raise ValueError(f"evaluate: {files[0]!r} has {len(src)} lines but {files[1]!r} has {len(tgt)}")
    src_ids = [src_vocab.encode(data.tokenize(s)) or [src_vocab.unk] for s in src]
    refs = [data.tokenize(t) for t in tgt]
    greedy = translate_ids(model, src_ids, tgt_vocab, 1, 2 * max_tokens + 5, torch.device("cpu"))
    beam = translate_ids(model, src_ids, tgt_vocab, beam_size, 2 * max_tokens + 5, torch.device("cpu"))
    return (f"BLEU on {len(src)} sentences: greedy {corpus_bleu(greedy, [refs]):.2f}, "
            f"beam {beam_size} {corpus_bleu(beam, [refs]):.2f}")
