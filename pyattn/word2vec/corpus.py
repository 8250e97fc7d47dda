"""Reading a corpus once into int32 token ids, counting words on the way.

One pass: each block of sentences is counted with collections.Counter and mapped to
provisional ids (first-seen order) with C-level map(); after the pass the vocabulary is
fixed (min_count, frequency order) and the provisional ids are remapped with one NumPy
gather. Epochs then only touch int arrays.
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Union

import numpy as np

MAX_SENTENCE_LEN = 10000  # longer lines are split, as gensim's LineSentence does


def line_sentences(path: Union[str, os.PathLike]) -> Iterator[List[str]]:
    """Whitespace-separated tokens per line of a UTF-8 text file, in pieces of at most
    MAX_SENTENCE_LEN tokens. Raises OSError / ValueError naming the file on failure."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise OSError(f"word2vec: cannot read corpus file {os.fspath(path)!r}: {e.strerror or e}") from e
    with f:
        offset = 0
        for line_no, raw in enumerate(f, 1):
            if b"\x00" in raw:
                raise ValueError(f"word2vec: corpus file {os.fspath(path)!r} line {line_no} contains NUL bytes; "
                                 f"expected plain UTF-8 text (is it a binary or compressed file?)")
            try:
                tokens = raw.decode("utf8").split()
            except UnicodeDecodeError as e:
                raise ValueError(f"word2vec: corpus file {os.fspath(path)!r} is not valid UTF-8 at byte "
                                 f"{offset + e.start} (line {line_no})") from None
            offset += len(raw)
            for s in range(0, len(tokens), MAX_SENTENCE_LEN):
                yield tokens[s : s + MAX_SENTENCE_LEN]


@dataclass
class EncodedCorpus:
    index_to_key: list          # kept words, most frequent first
    counts: np.ndarray          # [vocab] int64 raw counts of the kept words
    ids: np.ndarray             # [n] int32 ids of the in-vocabulary tokens, corpus order
    sentence_ends: np.ndarray   # [sentences] int64: end offset of each sentence in ids
    raw_words: int              # tokens read, in or out of vocabulary


def encode(sentences: Iterable, min_count: int = 5, max_vocab_size: Optional[int] = None,
           block_tokens: int = 1 << 20) -> EncodedCorpus:
    """``sentences``: an iterable of token lists (strings). max_vocab_size prunes the
    counts while reading as gensim does (words below a rising count threshold are
    dropped whenever the table outgrows it); it bounds the count table, not the id map."""
    counts: Counter = Counter()
    prov: dict = {}
    prov_ids = array("i")
    lengths = array("q")
    min_reduce = 1
    block: list = []
    block_len = 0

    def flush():
        nonlocal min_reduce
        if not block:
            return
        tokens = [t for s in block for t in s]
        counts.update(tokens)
        for w in dict.fromkeys(tokens):  # unique words in first-seen order
            if w not in prov:
                prov[w] = len(prov)
        prov_ids.extend(map(prov.__getitem__, tokens))
        block.clear()
        if max_vocab_size is not None:
            while len(counts) > max_vocab_size:
                for w in [w for w, c in counts.items() if c < min_reduce + 1]:
                    del counts[w]
                min_reduce += 1

    for n, sent in enumerate(sentences):
        if isinstance(sent, str):
            raise TypeError(f"word2vec: sentence {n} is a str; expected a list of tokens (split it first)")
        try:
            sent = list(sent)
        except TypeError:
            raise TypeError(f"word2vec: sentence {n} is a {type(sent).__name__}; expected a list of tokens") from None
        if sent and not isinstance(sent[0], str):
            raise TypeError(f"word2vec: sentence {n} holds {type(sent[0]).__name__} tokens; expected str")
        lengths.append(len(sent))
        block.append(sent)
        block_len += len(sent)
        if block_len >= block_tokens:
            flush()
            block_len = 0
    flush()

    raw_words = len(prov_ids)
    if raw_words == 0:
        raise ValueError("word2vec: the corpus is empty (no tokens)")
    kept = [w for w, c in counts.items() if c >= min_count]
    if not kept:
        raise ValueError(f"word2vec: no word occurs at least min_count={min_count} times "
                         f"({len(counts)} distinct words, {raw_words} tokens); lower min_count")
    kept.sort(key=lambda w: (-counts[w], prov[w]))   # frequency, then first appearance
    remap = np.full(len(prov), -1, dtype=np.int32)
    remap[np.fromiter((prov[w] for w in kept), dtype=np.int64, count=len(kept))] = np.arange(len(kept), dtype=np.int32)
    ids = remap[np.frombuffer(prov_ids, dtype=np.int32)]
    keep = ids >= 0
    # sentence ends after dropping out-of-vocabulary tokens
    ends = np.cumsum(np.frombuffer(lengths, dtype=np.int64))
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    sentence_ends = kept_before[ends]
    return EncodedCorpus(
        index_to_key=kept,
        counts=np.array([counts[w] for w in kept], dtype=np.int64),
        ids=ids[keep],
        sentence_ends=sentence_ends,
        raw_words=raw_words,
    )


def shard(corpus: EncodedCorpus, rank: int, size: int) -> EncodedCorpus:
    """Rank ``rank`` of ``size``'s contiguous share of the sentences, cut at sentence ends
    nearest to equal shares of the tokens; the vocabulary and counts stay whole.
    raw_words becomes the share's part of the total, in proportion to its tokens.
    Raises ValueError when some rank would get no tokens (a corpus too small for size)."""
    if size == 1:
        return corpus
    n = len(corpus.ids)
    ends = corpus.sentence_ends
    # cut[r]: sentences before rank r's share (whole sentences ending at or before r/size of the tokens)
    cut = [0] + [int(np.searchsorted(ends, n * r // size, side="right")) for r in range(1, size)] + [len(ends)]
    first_token = [int(ends[c - 1]) if c > 0 else 0 for c in cut]
    tokens = [first_token[r + 1] - first_token[r] for r in range(size)]
    if min(tokens) == 0:
        raise ValueError(f"word2vec: the corpus ({n} in-vocabulary tokens in {len(ends)} sentences) is too small to "
                         f"share among {size} processes: rank {tokens.index(0)} would get no tokens")
    lo, hi = first_token[rank], first_token[rank + 1]
    return EncodedCorpus(
        index_to_key=corpus.index_to_key,
        counts=corpus.counts,
        ids=corpus.ids[lo:hi],
        sentence_ends=ends[cut[rank]:cut[rank + 1]] - lo,
        raw_words=max(1, round(corpus.raw_words * (hi - lo) / n)),
    )
