"""Classic NLP models built on pyattn's modules, with the same model on torch's modules
one switch away (same state_dict) for side-by-side runs:

- :class:`TransformerLM` (pre-LayerNorm blocks of ``pyattn.nn.MultiheadAttention``) and
  :class:`LSTMLM` (``pyattn.nn.LSTM``), the neural language models;
- :class:`NGramLM`, the count-based baseline (add-delta with backoff);
- :class:`Seq2Seq`, an LSTM encoder-decoder that attends with ``pyattn.functional.attention``;
- :func:`greedy_search` and :func:`beam_search` over one step-function interface.

Trainers and the command line: :mod:`pyattn.models.train`, ``python -m pyattn.models``.
"""

from pyattn.models.decoding import beam_search, greedy_search
from pyattn.models.lstm_lm import LSTMLM
from pyattn.models.ngram import NGramLM
from pyattn.models.seq2seq import Seq2Seq
from pyattn.models.transformer_lm import TransformerLM

__all__ = ["TransformerLM", "LSTMLM", "NGramLM", "Seq2Seq", "beam_search", "greedy_search"]
