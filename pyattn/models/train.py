"""The trainers behind ``python -m pyattn.models``: language models (perplexity on a
held-out split) and the seq2seq translator (BLEU, greedy and beam), single-process or
under torchrun with DistributedDataParallel, the data sharded by rank.

Held-out splits are the tail of the corpus (LM: the last lines; MT: the last pairs after
a seeded shuffle, so that every catalog contributes to both sides). Every rank runs the
same number of steps on its own shard; batches are drawn with a generator seeded by
(seed, rank), so a run is reproducible for a given world size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from pyattn.metrics import corpus_bleu, perplexity
from pyattn.models import checkpoint, data
from pyattn.models.checks import IMPLS
from pyattn import distributed as dist_util
from pyattn.models.decoding import beam_search, greedy_search
from pyattn.models.lstm_lm import LSTMLM
from pyattn.models.ngram import NGramLM
from pyattn.models.seq2seq import Seq2Seq
from pyattn.models.transformer_lm import TransformerLM



def build_lm(arch: str, vocab_size: int, config: dict, impl: str) -> torch.nn.Module:
    """``config``: the model's keyword arguments other than the vocabulary and the
    implementation switch (``impl``: pyattn's modules or torch's, same state_dict)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if arch == "transformer":
        return TransformerLM(vocab_size, attention=impl, **config)
    if arch == "lstm":
        return LSTMLM(vocab_size, lstm=impl, **config)
    raise ValueError(f"arch must be 'transformer', 'lstm' or 'ngram', got {arch!r}")


def _logits(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # LSTMLM also returns its state


@dataclass
class Progress:
    """Loss per step, and a tqdm bar with loss and tokens/s on the main rank."""

    total: int
    enabled: bool
    desc: str
    losses: list = field(default_factory=list)

    def __post_init__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, unit="step", disable=not self.enabled, dynamic_ncols=True)
        self.started = time.perf_counter()
        self.tokens = 0

    def update(self, loss: float, tokens: int) -> None:
        self.losses.append(loss)
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}")
        self.bar.update()

    def close(self) -> float:
        """Tokens per second over the run (all ranks' tokens when ``tokens`` counted them)."""
        self.bar.close()
        return self.tokens / max(time.perf_counter() - self.started, 1e-9)


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0))))


def _train_steps(model, optimizer, start: int, steps: int, lr: float, batch: Callable, loss_of: Callable,
                 progress: Progress, world: dist_util.World, clip: float = 1.0) -> None:
    """Steps ``start .. steps-1``: ``batch(step)`` gives this rank's inputs and its token
    count, ``loss_of(model, inputs)`` the mean loss; gradients averaged by DDP."""
    model.train()
    for step in range(start, steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup=max(1, steps // 20))
        inputs, tokens = batch(step)
        loss = loss_of(model, inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        progress.update(loss.item(), tokens * world.size)


# ------------------------------------------------------------------ language models


@dataclass
class LmResult:
    heldout_perplexity: float
    heldout_tokens: int
    train_tokens_per_s: Optional[float]  # None for the n-gram model
    steps: int


def _lm_data(corpus: str, heldout: float, vocab_size: int, world: dist_util.World):
    lines = data.read_lines(corpus)
    cut = data.split_heldout(len(lines), heldout)
    vocab = None
    if world.is_main:
        vocab = data.Vocab.build((data.tokenize(line) for line in lines[:cut]),
                                 max_size=vocab_size if vocab_size > 0 else None)
    vocab = dist_util.broadcast(vocab, world)
    return vocab, data.lm_stream(lines[:cut], vocab), data.lm_stream(lines[cut:], vocab)


@torch.no_grad()
def lm_nll(model: torch.nn.Module, stream: np.ndarray, context: int, batch_size: int,
           device: torch.device) -> tuple[float, int]:
    """(sum of token NLLs, tokens) of ``stream`` read in windows of ``context`` tokens,
    each window from a fresh state (what training saw)."""
    model.eval()
    windows = data.lm_windows(stream, context)
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = windows[i : i + batch_size].to(device)
        logits = _logits(model(w[:, :-1]))
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), w[:, 1:].reshape(-1),
                                 reduction="sum").item()
        count += w[:, 1:].numel()
    return total, count


def train_lm(corpus: str, output: str, *, arch: str, impl: str = "pyattn", config: Optional[dict] = None,
             context: int = 128, batch_size: int = 16, steps: int = 1000, lr: float = 1e-3, heldout: float = 0.05,
             vocab_size: int = 20000, seed: int = 0, resume: bool = False, device: str = "cpu",
             progress: bool = True, order: int = 3, delta: float = 0.01) -> LmResult:
    """Trains ``arch`` ('transformer', 'lstm' or 'ngram') on the training part of
    ``corpus``, writes ``output`` (checkpoint) and ``output + '.loss.png'``, and returns
    the held-out perplexity. ``config``: model keyword arguments (dims, layers, dropout)."""
    world = dist_util.init(device)
    try:
        vocab, train_ids, heldout_ids = _lm_data(corpus, heldout, vocab_size, world)
        if arch == "ngram":
            return _train_ngram(output, vocab, train_ids, heldout_ids, order, delta, world)
        torch.manual_seed(seed)
        config = dict(config or {})
        if arch == "transformer":
            config.setdefault("max_len", context)
        model = build_lm(arch, len(vocab), config, impl).to(world.device)
        if arch == "transformer" and context > model.max_len:
            raise ValueError(f"train-lm: context {context} is longer than the model's positions ({model.max_len})")
        optimizer = _optimizer(model, lr)
        start, losses = 0, []
        if resume:
            ckpt = checkpoint.load(output, "lm")
            checkpoint.check_vocab(ckpt, "vocab", vocab.itos, output)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            start, losses = ckpt["step"], list(ckpt["losses"])
        windows = data.lm_windows(train_ids, context)
        windows = windows[data.shard(len(windows), world.rank, world.size)]
        if len(windows) == 0:
            raise ValueError(f"train-lm: the corpus gives too few windows of {context + 1} tokens for {world.size} ranks")
        ddp = torch.nn.parallel.DistributedDataParallel(model) if world.distributed else model
        gen = torch.Generator().manual_seed(seed * 1000003 + world.rank)

        def batch(step):
            w = windows[torch.randint(0, len(windows), (batch_size,), generator=gen)].to(world.device)
            return w, w[:, 1:].numel()

        def loss_of(m, w):
            logits = _logits(m(w[:, :-1]))
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), w[:, 1:].reshape(-1))

        bar = Progress(steps - start, progress and world.is_main, f"train-lm {arch} ({impl})", losses)
        _train_steps(ddp, optimizer, start, steps, lr, batch, loss_of, bar, world)
        tokens_per_s = bar.close()
        nll, count = dist_util.sum_all(list(lm_nll(model, heldout_ids[data.shard(len(heldout_ids), world.rank,
                                                                               world.size)], context, batch_size,
                                                   world.device)), world)
        if world.is_main:
            checkpoint.save(output, kind="lm", arch=arch, impl=impl, config=config, context=context,
                            vocab=vocab.itos, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            step=steps, losses=bar.losses)
            checkpoint.plot_losses(output + ".loss.png", bar.losses, f"{arch} LM ({impl}) on {corpus}")
        return LmResult(perplexity(nll, int(count)), int(count), tokens_per_s, steps)
    finally:
        dist_util.shutdown(world)


def _train_ngram(output, vocab, train_ids, heldout_ids, order, delta, world) -> LmResult:
    """Counts on the whole training part (cheap: no sharding needed), perplexity on held-out."""
    model = NGramLM(order=order, delta=delta)
    model.fit(train_ids, len(vocab))
    ppl = model.perplexity(heldout_ids)
    if world.is_main:
        checkpoint.save(output, kind="lm", arch="ngram", config={"order": order, "delta": delta},
                        vocab=vocab.itos, model=model, step=0, losses=[])
    return LmResult(ppl, len(heldout_ids), None, 0)


# ------------------------------------------------------------------------ translation


@dataclass
class MtResult:
    bleu_greedy: float
    bleu_beam: float
    beam_size: int
    heldout_sentences: int
    train_pairs: int
    train_tokens_per_s: float
    steps: int
    examples: list  # a few (source, reference, beam hypothesis) strings


def _mt_pairs(src_path: str, tgt_path: str, max_tokens: int):
    src, tgt = data.read_lines(src_path, "source"), data.read_lines(tgt_path, "target")
    if len(src) != len(tgt):
        raise ValueError(f"train-mt: {src_path!r} has {len(src)} lines but {tgt_path!r} has {len(tgt)}; "
                         f"expected one translation per line")
    pairs = [(data.tokenize(s), data.tokenize(t)) for s, t in zip(src, tgt)]
    return [(s, t) for s, t in pairs if 0 < len(s) <= max_tokens and 0 < len(t) <= max_tokens]


def translate_ids(model: Seq2Seq, src: list, tgt_vocab: data.Vocab, beam_size: int, max_len: int,
                  device: torch.device, batch_size: int = 64) -> list:
    """Token lists decoded from the source id lists (greedy for beam_size 1, else beam)."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(src), batch_size):
            ids, lengths = data.pad_batch(src[i : i + batch_size])
            step, state = model.start(ids.to(device), lengths.to(device))
            if beam_size == 1:
                tokens, _ = greedy_search(step, state, tgt_vocab.bos, tgt_vocab.eos, max_len)
                out += [tgt_vocab.decode(t.tolist()) for t in tokens]
            else:
                hyps = beam_search(step, state, tgt_vocab.bos, tgt_vocab.eos, beam_size, max_len)
                out += [tgt_vocab.decode(h[0][0].tolist()) for h in hyps]
    return out


def train_mt(src: str, tgt: str, output: str, *, impl: str = "pyattn", config: Optional[dict] = None,
             batch_size: int = 32, steps: int = 2000, lr: float = 2e-3, heldout: float = 0.05,
             vocab_size: int = 16000, max_tokens: int = 30, beam_size: int = 5, eval_sentences: int = 500,
             seed: int = 0, resume: bool = False, device: str = "cpu", progress: bool = True) -> MtResult:
    """Trains a Seq2Seq on line-aligned ``src``/``tgt`` files (pairs longer than
    ``max_tokens`` tokens on either side are dropped), writes the checkpoint, and
    returns greedy and beam BLEU on up to ``eval_sentences`` held-out pairs."""
    world = dist_util.init(device)
    try:
        pairs = _mt_pairs(src, tgt, max_tokens)
        order = np.random.default_rng(seed).permutation(len(pairs))
        pairs = [pairs[i] for i in order]
        cut = data.split_heldout(len(pairs), heldout, "translation corpus")
        train_pairs, test_pairs = pairs[:cut], pairs[cut:][:eval_sentences]
        vocabs = None
        if world.is_main:
            vocabs = (data.Vocab.build((s for s, _ in train_pairs), max_size=vocab_size),
                      data.Vocab.build((t for _, t in train_pairs), max_size=vocab_size))
        src_vocab, tgt_vocab = dist_util.broadcast(vocabs, world)
        torch.manual_seed(seed)
        config = dict(config or {})
        model = Seq2Seq(len(src_vocab), len(tgt_vocab), impl=impl, **config).to(world.device)
        optimizer = _optimizer(model, lr)
        start, losses = 0, []
        if resume:
            ckpt = checkpoint.load(output, "mt")
            checkpoint.check_vocab(ckpt, "src_vocab", src_vocab.itos, output)
            checkpoint.check_vocab(ckpt, "tgt_vocab", tgt_vocab.itos, output)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            start, losses = ckpt["step"], list(ckpt["losses"])
        mine = train_pairs[data.shard(len(train_pairs), world.rank, world.size)]
        src_ids = [src_vocab.encode(s) for s, _ in mine]
        tgt_ids = [tgt_vocab.encode(t) for _, t in mine]
        ddp = torch.nn.parallel.DistributedDataParallel(model) if world.distributed else model
        gen = torch.Generator().manual_seed(seed * 1000003 + world.rank)

        def batch(step):
            idx = torch.randint(0, len(mine), (batch_size,), generator=gen).tolist()
            s, s_len = data.pad_batch([src_ids[i] for i in idx])
            t, _ = data.pad_batch([[tgt_vocab.bos] + tgt_ids[i] + [tgt_vocab.eos] for i in idx])
            d = world.device
            return (s.to(d), s_len.to(d), t.to(d)), int((t[:, 1:] != tgt_vocab.pad).sum())

        def loss_of(m, inputs):
            s, s_len, t = inputs
            logits = m(s, s_len, t[:, :-1])
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), t[:, 1:].reshape(-1),
                                   ignore_index=tgt_vocab.pad)

        bar = Progress(steps - start, progress and world.is_main, f"train-mt ({impl})", losses)
        _train_steps(ddp, optimizer, start, steps, lr, batch, loss_of, bar, world)
        tokens_per_s = bar.close()
        if world.is_main:
            checkpoint.save(output, kind="mt", impl=impl, config=config, max_tokens=max_tokens,
                            src_vocab=src_vocab.itos, tgt_vocab=tgt_vocab.itos, model=model.state_dict(),
                            optimizer=optimizer.state_dict(), step=steps, losses=bar.losses)
            checkpoint.plot_losses(output + ".loss.png", bar.losses, f"seq2seq ({impl}) on {src}")
        test_src = [src_vocab.encode(s) for s, _ in test_pairs]
        refs = [t for _, t in test_pairs]
        max_len = max_tokens + 5
        greedy = translate_ids(model, test_src, tgt_vocab, 1, max_len, world.device)
        beam = translate_ids(model, test_src, tgt_vocab, beam_size, max_len, world.device)
        examples = [(" ".join(s), " ".join(t), " ".join(h)) for (s, t), h in list(zip(test_pairs, beam))[:5]]
        return MtResult(corpus_bleu(greedy, [refs]), corpus_bleu(beam, [refs]), beam_size, len(test_pairs),
                        len(train_pairs), tokens_per_s, steps, examples)
    finally:
        dist_util.shutdown(world)
