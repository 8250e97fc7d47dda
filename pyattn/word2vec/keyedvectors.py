"""Word vectors by key: lookup, similarity queries, gensim-compatible evaluators, and the
word2vec text / binary file formats (those of word2vec.c, which gensim reads and writes)."""

from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]


class KeyedVectors:
    """``vectors[i]`` is the vector of ``index_to_key[i]``; keys are ordered by decreasing
    corpus frequency when they come from training (evaluators' ``restrict_vocab`` relies on it)."""

    def __init__(self, index_to_key: Sequence[str], vectors: np.ndarray):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(index_to_key):
            raise ValueError(
                f"KeyedVectors: vectors has shape {vectors.shape}, expected ({len(index_to_key)}, dim) for "
                f"{len(index_to_key)} keys"
            )
        self.index_to_key = list(index_to_key)
        self.key_to_index = {k: i for i, k in enumerate(self.index_to_key)}
        if len(self.key_to_index) != len(self.index_to_key):
            raise ValueError("KeyedVectors: index_to_key has duplicate keys")
        self.vectors = vectors
        self._norms: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ lookup
    @property
    def vector_size(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, key: str) -> bool:
        return key in self.key_to_index

    def get_index(self, key: str) -> int:
        try:
            return self.key_to_index[key]
        except KeyError:
            raise KeyError(f"Key {key!r} not present in vocabulary ({len(self)} keys)") from None

    def get_vector(self, key: str, norm: bool = False) -> np.ndarray:
        i = self.get_index(key)
        return self.unit_vectors()[i] if norm else self.vectors[i]

    def __getitem__(self, key_or_keys):
        if isinstance(key_or_keys, str):
            return self.get_vector(key_or_keys)
        return np.stack([self.get_vector(k) for k in key_or_keys])

    def unit_vectors(self) -> np.ndarray:
        """Rows scaled to unit length (zero rows stay zero); cached until vectors change."""
        if self._norms is None or self._norms.shape[0] != self.vectors.shape[0]:
            self._norms = np.linalg.norm(self.vectors, axis=1)
        n = self._norms
        return self.vectors / np.where(n > 0, n, 1.0)[:, None].astype(np.float32)

    def fill_norms(self) -> None:
        self._norms = None

    # -------------------------------------------------------------- similarity
    def similarity(self, w1: str, w2: str) -> float:
        a, b = self.get_vector(w1), self.get_vector(w2)
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        if na == 0 or nb == 0:
            return 0.0
        return float(np.dot(a, b) / (na * nb))

    def most_similar(self, positive: Union[str, Iterable] = (), negative: Union[str, Iterable] = (),
                     topn: int = 10, restrict_vocab: Optional[int] = None) -> list[tuple[str, float]]:
        """Keys nearest (cosine) to the mean of the unit vectors of ``positive`` minus those
        of ``negative`` (vectors may stand in for keys), the query keys excluded; like gensim's."""
        if isinstance(positive, (str, np.ndarray)):
            positive = [positive]
        if isinstance(negative, (str, np.ndarray)):
            negative = [negative]
        items = [(k, 1.0) for k in positive] + [(k, -1.0) for k in negative]
        if not items:
            raise ValueError("most_similar: give at least one positive or negative key")
        units = self.unit_vectors()
        mean = np.zeros(self.vector_size, dtype=np.float64)
        exclude = set()
        for k, w in items:
            if isinstance(k, np.ndarray):
                v = k.astype(np.float64)
                n = np.linalg.norm(v)
                mean += w * (v / n if n > 0 else v)
            else:
                i = self.get_index(k)
                exclude.add(i)
                mean += w * units[i]
        n = np.linalg.norm(mean)
        if n > 0:
            mean /= n
        end = len(self) if restrict_vocab is None else min(len(self), int(restrict_vocab))
        dists = units[:end] @ mean.astype(np.float32)
        want = min(end, topn + len(exclude))
        best = np.argpartition(-dists, want - 1)[:want] if want < end else np.arange(end)
        best = best[np.argsort(-dists[best], kind="stable")]
        out = [(self.index_to_key[i], float(dists[i])) for i in best if i not in exclude]
        return out[:topn]

    # -------------------------------------------------------------- evaluation
    def _ok_vocab(self, restrict_vocab: int, case_insensitive: bool) -> dict:
        keys = self.index_to_key[:restrict_vocab]
        if case_insensitive:  # the most frequent spelling wins
            return {k.upper(): self.key_to_index[k] for k in reversed(keys)}
        return {k: self.key_to_index[k] for k in reversed(keys)}

    def evaluate_word_pairs(self, pairs: PathLike, delimiter: str = "\t", encoding: str = "utf8",
                            restrict_vocab: int = 300000, case_insensitive: bool = True,
                            dummy4unknown: bool = False):
        """Spearman and Pearson correlation of the model's cosine similarities with human
        judgements in ``pairs`` (``word1<delim>word2<delim>score`` lines, ``#`` comments),
        with gensim's rules. Returns (pearson, spearman, oov_ratio in percent), the first
        two as scipy results (statistic, pvalue)."""
        from scipy import stats

        ok_vocab = self._ok_vocab(restrict_vocab, case_insensitive)
        gold, model, oov = [], [], 0
        original, self.key_to_index = self.key_to_index, ok_vocab
        try:
            with open(pairs, encoding=encoding) as fin:
                for line in fin:
                    if not line or line.startswith("#"):
                        continue
                    try:
                        parts = line.split(delimiter)
                        if case_insensitive:
                            parts = [p.upper() for p in parts]
                        a, b, sim = parts
                        sim = float(sim)
                    except (ValueError, TypeError):
                        continue
                    if a not in ok_vocab or b not in ok_vocab:
                        oov += 1
                        if dummy4unknown:
                            model.append(0.0)
                            gold.append(sim)
                        continue
                    gold.append(sim)
                    model.append(self.similarity(a, b))
        finally:
            self.key_to_index = original
        if not gold:
            raise ValueError(f"evaluate_word_pairs: no valid similarity judgements in {pairs}: "
                             f"wrong format or all pairs out of vocabulary")
        spearman = stats.spearmanr(gold, model)
        pearson = stats.pearsonr(gold, model)
        oov_ratio = float(oov) / (len(gold) if dummy4unknown else len(gold) + oov) * 100
        return pearson, spearman, oov_ratio

    def evaluate_word_analogies(self, analogies: PathLike, restrict_vocab: int = 300000,
                                case_insensitive: bool = True, dummy4unknown: bool = False):
        """Accuracy on ``a b c expected`` analogies (questions-words.txt format, ``: section``
        headers) by 3CosAdd over the top ``restrict_vocab`` keys, with gensim's rules.
        Returns (accuracy, sections); the last section is 'Total accuracy'."""
        ok_vocab = self._ok_vocab(restrict_vocab, case_insensitive)
        sections, section, oov, quads = [], None, 0, 0
        with open(analogies, "rb") as fin:
            for line_no, raw in enumerate(fin):
                line = raw.decode("utf8")
                if line.startswith(": "):
                    if section:
                        sections.append(section)
                    section = {"section": line.lstrip(": ").strip(), "correct": [], "incorrect": []}
                    continue
                if not section:
                    raise ValueError(f"evaluate_word_analogies: missing section header before line #{line_no} "
                                     f"in {analogies}")
                try:
                    words = [w.upper() for w in line.split()] if case_insensitive else line.split()
                    a, b, c, expected = words
                except ValueError:
                    continue
                quads += 1
                if any(w not in ok_vocab for w in (a, b, c, expected)):
                    oov += 1
                    if dummy4unknown:
                        section["incorrect"].append((a, b, c, expected))
                    continue
                original, self.key_to_index = self.key_to_index, ok_vocab
                try:
                    sims = self.most_similar(positive=[b, c], negative=[a], topn=5, restrict_vocab=restrict_vocab)
                finally:
                    self.key_to_index = original
                predicted, ignore = None, {a, b, c}
                for key, _ in sims:
                    predicted = key.upper() if case_insensitive else key
                    if predicted in ok_vocab and predicted not in ignore:
                        break
                (section["correct"] if predicted == expected else section["incorrect"]).append((a, b, c, expected))
        if section:
            sections.append(section)
        total = {
            "section": "Total accuracy",
            "correct": [q for s in sections for q in s["correct"]],
            "incorrect": [q for s in sections for q in s["incorrect"]],
        }
        sections.append(total)
        n = len(total["correct"]) + len(total["incorrect"])
        self.analogy_oov_ratio = float(oov) / quads * 100 if quads else 0.0
        return (len(total["correct"]) / n if n else 0.0), sections

    # ------------------------------------------------------------------- files
    def save_word2vec_format(self, path: PathLike, binary: bool = False) -> None:
        """word2vec.c's format: a ``vocab dim`` header, then one key and its vector per line
        (binary: the key, a space, dim little-endian float32s and a newline)."""
        with open(path, "wb") as f:
            f.write(f"{len(self)} {self.vector_size}\n".encode("utf8"))
            vecs = self.vectors.astype("<f4")
            for key, v in zip(self.index_to_key, vecs):
                if not key or any(ch.isspace() for ch in key):
                    raise ValueError(f"save_word2vec_format: key {key!r} is empty or contains whitespace")
                if binary:
                    f.write(key.encode("utf8") + b" " + v.tobytes() + b"\n")
                else:
                    f.write((key + " " + " ".join(repr(float(x)) for x in v) + "\n").encode("utf8"))

    @classmethod
    def load_word2vec_format(cls, path: PathLike, binary: bool = False, encoding: str = "utf8") -> "KeyedVectors":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise OSError(f"load_word2vec_format: cannot read {path}: {e.strerror or e}") from e
        nl = data.find(b"\n")
        try:
            count, dim = (int(x) for x in data[: nl if nl >= 0 else len(data)].split())
            if count < 0 or dim <= 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"load_word2vec_format: {path} does not start with a 'vocab_size dim' header") from None
        keys, vecs = [], np.empty((count, dim), dtype=np.float32)
        pos = nl + 1
        for i in range(count):
            if binary:
                sp = data.find(b" ", pos)
                if sp < 0 or sp + 1 + 4 * dim > len(data):
                    raise ValueError(f"load_word2vec_format: {path} ends after {i} of {count} vectors")
                key = data[pos:sp].lstrip(b"\n").decode(encoding)
                vecs[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=sp + 1)
                pos = sp + 1 + 4 * dim
            else:
                end = data.find(b"\n", pos)
                end = len(data) if end < 0 else end
                parts = data[pos:end].decode(encoding).rstrip().split(" ")
                if len(parts) != dim + 1:
                    raise ValueError(f"load_word2vec_format: line {i + 2} of {path} has {len(parts) - 1} values, "
                                     f"expected {dim}")
                key = parts[0]
                try:
                    vecs[i] = np.array(parts[1:], dtype=np.float32)
                except ValueError:
                    raise ValueError(f"load_word2vec_format: line {i + 2} of {path} has a non-numeric value") from None
                pos = end + 1
            keys.append(key)
        return cls(keys, vecs)

    def __repr__(self) -> str:
        return f"KeyedVectors({len(self)} keys, dim {self.vector_size})"
