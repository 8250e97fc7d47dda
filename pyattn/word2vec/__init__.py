"""Word2vec on pyattn's negative-sampling kernels: a gensim-like trainer
(:class:`Word2Vec`), word vectors with gensim's evaluators (:class:`KeyedVectors`), and a
command line (``python -m pyattn.word2vec train|evaluate``)."""

from __future__ import annotations

import pyattn  # noqa: F401  (registers the ops)

from .corpus import line_sentences
from .keyedvectors import KeyedVectors
from .model import Word2Vec

__all__ = ["Word2Vec", "KeyedVectors", "line_sentences"]
