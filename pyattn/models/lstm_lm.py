"""A multi-layer LSTM language model on ``pyattn.nn.LSTM`` (or, with ``lstm="torch"``, the
identical model on ``torch.nn.LSTM``), with tied input and output embeddings."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pyattn.models.checks import check_config, check_decoding, check_prefix, describe
from pyattn.nn import LSTM

__all__ = ["LSTMLM"]


State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [B, num_layers, hidden_size]: rows first


class LSTMLM(nn.Module):
    """Next-token language model: embedding (dim ``hidden_size``, so that the output can
    share it) -> dropout -> ``num_layers`` LSTM layers (dropout between them) -> dropout
    -> output projection whose weight *is* the embedding's (``output.weight is
    embedding.weight``) plus a per-token bias.

    The embedding is drawn from N(0, 1/hidden_size): rows of about unit norm whatever the
    width, large enough to move the LSTM's gates, and, as the output weight, dotted with
    an LSTM output in (-1, 1)^H, logits of order one at most.

    The LSTM runs with ``batch_first=True`` (the model's tokens are [B, T]; the state_dict
    does not depend on it). The state is rows first, ``(h, c)`` each
    ``[B, num_layers, hidden_size]``: the LSTM's own ``[num_layers, B, H]`` transposed,
    so that the batch is dim 0 everywhere at this level (decoding reorders rows on dim 0).

    ``lstm="pyattn"`` uses ``pyattn.nn.LSTM``, ``"torch"`` ``torch.nn.LSTM``: the same
    state_dict, so either loads the other's and gives the same logits (dropout aside).
    """

    def __init__(self, vocab_size: int, hidden_size: int = 512, num_layers: int = 2, dropout: float = 0.2,
                 lstm: str = "pyattn") -> None:
        super().__init__()
        check_config("LSTMLM", {"vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": num_layers},
                     dropout, "lstm", lstm)
        self.vocab_size, self.hidden_size, self.num_layers, self.lstm_impl = vocab_size, hidden_size, num_layers, lstm
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        nn.init.normal_(self.embedding.weight, std=hidden_size**-0.5)
        self.dropout = nn.Dropout(dropout)
        lstm_cls = LSTM if lstm == "pyattn" else nn.LSTM
        # Between-layer dropout only exists with two layers or more (both LSTMs warn otherwise).
        self.lstm = lstm_cls(hidden_size, hidden_size, num_layers, batch_first=True,
                             dropout=dropout if num_layers > 1 else 0.0)
        self.output = nn.Linear(hidden_size, vocab_size)
        self.output.weight = self.embedding.weight
        nn.init.zeros_(self.output.bias)

    def forward(self, tokens: torch.Tensor, state: Optional[State] = None) -> tuple[torch.Tensor, State]:
        """tokens int64 [B, T], state ``(h, c)`` [B, num_layers, hidden_size] each or None
        (zeros) -> (logits [B, T, vocab_size], the state after the last token). Running
        two halves of a sequence, the second from the first's state, equals one run."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
            raise ValueError(f"LSTMLM: tokens must be an integer tensor [B, T], got {describe(tokens)}")
        hx = None
        if state is not None:
            want = (tokens.shape[0], self.num_layers, self.hidden_size)
            if not isinstance(state, (tuple, list)) or len(state) != 2 \
                    or any(not isinstance(s, torch.Tensor) or tuple(s.shape) != want for s in state):
                got = [describe(s) for s in state] if isinstance(state, (tuple, list)) else describe(state)
                raise ValueError(f"LSTMLM: state must be (h, c), each of shape {want} "
                                 f"[B, num_layers, hidden_size], got {got}")
            hx = tuple(s.transpose(0, 1).contiguous() for s in state)  # the LSTM's [num_layers, B, H]
        x = self.dropout(self.embedding(tokens))
        out, (h, c) = self.lstm(x, hx)  # out [B, T, H]
        return self.output(self.dropout(out)), (h.transpose(0, 1), c.transpose(0, 1))

    def start(self, prefix: torch.Tensor):
        """Begins decoding after ``prefix`` int64 [B, P], P >= 1: runs the model over
        ``prefix[:, :-1]`` and returns ``(step, state)`` where ``step(prefix[:, -1],
        state)`` gives the log-probs of the token after the prefix. The state is
        :meth:`forward`'s, ``(h, c)`` [N, num_layers, hidden_size] (zeros for P = 1).
        Eval mode only (no dropout in decoding)."""
        check_decoding(self, "LSTMLM.start")
        check_prefix(prefix, "LSTMLM.start")
        if prefix.shape[1] > 1:
            _, state = self(prefix[:, :-1])
        else:
            w = self.embedding.weight
            zeros = w.new_zeros(prefix.shape[0], self.num_layers, self.hidden_size)
            state = (zeros, zeros)
        return self.step, state

    def step(self, tokens: torch.Tensor, state: State):
        """tokens int64 [N], state ``(h, c)`` [N, num_layers, hidden_size] -> (log_probs
        [N, vocab_size] of the token after ``tokens``, the new state)."""
        check_decoding(self, "LSTMLM.step")
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1:
            raise ValueError(f"LSTMLM.step: tokens must be [N], one token per row, got {describe(tokens)}")
        logits, state = self(tokens[:, None], state)
        return torch.log_softmax(logits[:, 0], dim=-1), state

