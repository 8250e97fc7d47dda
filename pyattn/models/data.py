"""Text to token ids for the models: reading a corpus, a simple tokeniser, the vocabulary,
held-out splits, batches, and shards by rank.

Tokenisation is deliberately simple and documented: lowercase, then runs of letters or
digits are words and every other non-space character is a token of its own
(``"Can't open %s."`` -> ``can ' t open % s .``). A line is a sentence; a language
model reads the lines as one stream with ``<eos>`` after each.
"""

from __future__ import annotations

import glob
import gettext
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0..3 in every vocabulary

_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_", re.UNICODE)


def tokenize(line: str) -> list[str]:
    """Lowercased words (letter/digit runs) and single punctuation characters."""
    return _TOKEN.findall(line.lower())


def read_lines(path: Union[str, os.PathLike], what: str = "corpus") -> list[str]:
    """The non-empty lines of a UTF-8 text file; errors name the file and the problem."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise OSError(f"{what}: cannot read {name!r}: {e.strerror or e}") from e
    if b"\x00" in raw:
        raise ValueError(f"{what}: {name!r} contains NUL bytes; expected plain UTF-8 text")
    try:
        text = raw.decode("utf8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what}: {name!r} is not valid UTF-8 at byte {e.start}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{what}: {name!r} is empty (no non-blank line)")
    return lines


@dataclass
class Vocab:
    """Token <-> id. Ids 0..3 are <pad>, <unk>, <bos>, <eos>; the rest by falling count."""

    itos: list[str]

    def __post_init__(self):
        if tuple(self.itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"Vocab: the first tokens must be {SPECIALS}, got {self.itos[:4]}")
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: Optional[int] = None, min_count: int = 1) -> "Vocab":
        counts = Counter(t for tokens in token_lists for t in tokens)
        for s in SPECIALS:
            counts.pop(s, None)
        kept = [t for t, c in sorted(counts.items(), key=lambda tc: (-tc[1], tc[0])) if c >= min_count]
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + kept)

    pad, unk, bos, eos = range(len(SPECIALS))  # class constants, the ids of SPECIALS

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(t, 1) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens up to (not including) the first <eos>; <pad> and <bos> dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i not in (self.pad, self.bos):
                out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out


def lm_stream(lines: Sequence[str], vocab: Vocab) -> np.ndarray:
    """int64 [n]: every line's token ids followed by <eos>, lines in order."""
    ids: list[int] = []
    for line in lines:
        ids += vocab.encode(tokenize(line))
        ids.append(vocab.eos)
    return np.asarray(ids, dtype=np.int64)


def split_heldout(n: int, heldout: float, what: str = "corpus") -> int:
    """The index where the held-out tail of ``n`` items starts (at least one item on each side)."""
    if not 0.0 < heldout < 1.0:
        raise ValueError(f"{what}: heldout must be a fraction in (0, 1), got {heldout!r}")
    cut = int(round(n * (1.0 - heldout)))
    if cut < 1 or cut >= n:
        raise ValueError(f"{what}: {n} items are too few to hold out {heldout:.0%} and keep some for training")
    return cut


def shard(n: int, rank: int, world: int) -> slice:
    """The contiguous part of ``n`` items that ``rank`` of ``world`` processes trains on."""
    per = n // world
    return slice(rank * per, (rank + 1) * per)


def lm_windows(stream: np.ndarray, context: int) -> torch.Tensor:
    """The stream cut into non-overlapping windows of ``context + 1`` tokens, int64
    [windows, context + 1]: inputs are ``w[:, :-1]``, targets ``w[:, 1:]`` (a leftover
    tail shorter than a window is dropped)."""
    n = (len(stream) - 1) // context
    if n < 1:
        raise ValueError(f"corpus: {len(stream)} tokens are fewer than one window of context {context} + 1")
    starts = np.arange(n) * context
    return torch.from_numpy(stream[starts[:, None] + np.arange(context + 1)[None, :]])


# ------------------------------------------------------------------------ translation


def read_message_catalogs(lang: str, locale_dir: str = "/usr/share/locale") -> list[tuple[str, str]]:
    """English -> ``lang`` sentence pairs from the gettext catalogs that installed
    software carries (``<locale_dir>/<lang>/LC_MESSAGES/*.mo``: msgid -> msgstr).

    Plural forms, empty translations, headers and entries with a context are skipped;
    duplicates are kept once (the first catalog in sorted order wins). Catalogs that are
    not valid UTF-8 are skipped. Sorted by file name, so the result is reproducible."""
    paths = sorted(glob.glob(os.path.join(locale_dir, lang, "LC_MESSAGES", "*.mo")))
    if not paths:
        raise ValueError(f"translation corpus: no message catalogs under {os.path.join(locale_dir, lang, 'LC_MESSAGES')}")
    pairs: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        for src, tgt in catalog.items():
            if not isinstance(src, str) or not src or "\x04" in src or not isinstance(tgt, str) or not tgt.strip():
                continue  # plural entry, the header, a context entry, or untranslated
            src, tgt = " ".join(src.split()), " ".join(tgt.split())
            pairs.setdefault(src, tgt)
    return list(pairs.items())


def pad_batch(seqs: Sequence[Sequence[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 [B, max len] right-padded with ``pad``, and the lengths [B]."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    out = torch.full((len(seqs), int(lengths.max()) if len(seqs) else 0), pad, dtype=torch.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.int64)
    return out, lengths
