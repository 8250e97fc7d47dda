"""Negative sampling: the fused sgns_loss op inside a training step against the usual
nn.Embedding + logsigmoid version, and (when gensim is importable) Word2Vec training
against gensim's on a small real corpus that runs in seconds (gensim's own
lee_background.cor). The full comparison on a larger corpus is bench/word2vec_vs_gensim.py.

FLOP counts are nominal: 2·dim per dot or axpy, 6·dim·(k+1) per (center, context) pair
for fwd+bwd; for training, pairs ≈ raw words · window (mean shrunken window · 2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pyattn.functional import sgns_loss

from . import Case, Target

OP = "word2vec"


@dataclass
class _LossInputs:
    emb_in: torch.nn.Embedding
    emb_out: torch.nn.Embedding
    centers: torch.Tensor
    contexts: torch.Tensor
    negatives: torch.Tensor


def _loss_inputs(vocab, dim, batch, k) -> _LossInputs:
    gen = torch.Generator().manual_seed(0)
    emb_in = torch.nn.Embedding(vocab, dim, sparse=True)
    emb_out = torch.nn.Embedding(vocab, dim, sparse=True)
    with torch.no_grad():
        emb_in.weight.copy_((torch.rand(vocab, dim, generator=gen) - 0.5) / dim)
        emb_out.weight.copy_(torch.randn(vocab, dim, generator=gen) * 0.1)
    ids = lambda *s: torch.randint(0, vocab, s, generator=gen)  # noqa: E731
    return _LossInputs(emb_in, emb_out, ids(batch), ids(batch), ids(batch, k))


def _step(loss_fn):
    def step(inp: _LossInputs):
        inp.emb_in.weight.grad = None
        inp.emb_out.weight.grad = None
        loss = loss_fn(inp)
        loss.backward()
        return loss.detach()
    return step


def _ours_loss(inp: _LossInputs):
    return sgns_loss(inp.emb_in, inp.emb_out, inp.centers, inp.contexts, inp.negatives)


def _peer_loss(inp: _LossInputs):
    h = inp.emb_in(inp.centers)                                   # [B, D]
    pos = (inp.emb_out(inp.contexts) * h).sum(-1)                  # [B]
    neg = torch.bmm(inp.emb_out(inp.negatives), h.unsqueeze(-1)).squeeze(-1)   # [B, k]
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).mean()


def _loss_case(device, vocab, dim, batch, k, target=None) -> Case:
    return Case(
        op=OP,
        name=f"sgns_loss step V{vocab} D{dim} B{batch} k{k} sparse",
        device=device,
        dtype=torch.float32,
        inputs=lambda: _loss_inputs(vocab, dim, batch, k),
        ours=_step(_ours_loss),
        peer=_step(_peer_loss),
        peer_name="nn.Embedding(sparse=True) gathers + bmm + logsigmoid, autograd backward",
        work=6.0 * batch * (k + 1) * dim,
        unit="FLOP",
        target=target,
    )


def _lee_corpus():
    from gensim.test.utils import datapath  # noqa: F401  (ImportError: no gensim, no row)

    path = datapath("lee_background.cor")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return path


def _train_case(device, sg: bool) -> Case:
    path = _lee_corpus()
    words = sum(len(line.split()) for line in open(path, encoding="utf8"))
    kw = dict(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, epochs=5, workers=2, sg=int(sg))

    def ours(_):
        from pyattn.word2vec import Word2Vec

        return Word2Vec(corpus_file=path, progress=False, **kw).wv.vectors

    def peer(_):
        from gensim.models import Word2Vec as GensimWord2Vec

        return GensimWord2Vec(corpus_file=path, **kw).wv.vectors

    def check(a, b):
        if a.shape != b.shape:
            return f"vocabulary/dims differ: {a.shape} vs gensim's {b.shape}"
        return None if np.isfinite(a).all() else "non-finite vectors"

    return Case(
        op=OP,
        name=f"Word2Vec {'skip-gram' if sg else 'CBOW'} lee_background.cor ({words} words) x5 epochs, 2 workers",
        device=device,
        dtype=torch.float32,
        inputs=lambda: None,
        ours=ours,
        peer=peer,
        peer_name=f"gensim Word2Vec(sg={int(sg)}), same parameters",
        work=6.0 * 100 * 6 * words * 5 * 5,
        unit="FLOP",
        target=Target(2.0 if sg else 1.5),
        check=check,
    )


def cases(device: str) -> list[Case]:
    if torch.device(device).type != "cpu":  # the loss op only: gensim trains on the CPU
        return [_loss_case(device, 50_000, 100, 4096, 5)]
    out = [_loss_case(device, 50_000, 100, 4096, 5, target=Target(3.0))]
    try:
        out += [_train_case(device, sg=True), _train_case(device, sg=False)]
    except (ImportError, FileNotFoundError):
        pass  # gensim not installed: no training rows
    return out
