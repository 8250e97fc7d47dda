"""A decoder-only Transformer language model on ``pyattn.nn.MultiheadAttention`` (or,
with ``attention="torch"``, the identical model on ``torch.nn.MultiheadAttention``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pyattn.models.checks import check_config, check_decoding, check_prefix, describe
from pyattn.nn import MultiheadAttention

__all__ = ["TransformerLM"]

POSITIONS = ("sinusoidal", "learned")


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """[max_len, d_model] fp32: entry (p, 2i) = sin(p / 10000^(2i/d)), (p, 2i+1) = cos of
    the same angle (Vaswani et al.); an odd d_model drops the last cosine."""
    position = torch.arange(max_len, dtype=torch.float64)[:, None]
    inverse_wavelength = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angle = position * inverse_wavelength  # [max_len, ceil(d/2)]
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)[:, :d_model].float()


class PreNormBlock(nn.Module):
    """x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x)); dropout on each branch."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, attention_cls: type) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = attention_cls(d_model, n_heads, dropout=dropout, batch_first=True)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, d_model]; causal_mask bool [T, T], True above the diagonal (not allowed)."""
        a = self.attention_norm(x)
        # is_causal=True tells both modules the mask is causal, so they may take a causal
        # kernel (torch's SDPA does) instead of reading the mask; need_weights=False keeps
        # pyattn on its fused kernel (no [T, T] weights formed).
        a, _ = self.attention(a, a, a, need_weights=False, attn_mask=causal_mask, is_causal=True)
        x = x + self.dropout(a)
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class TransformerLM(nn.Module):
    """Next-token language model: token embedding + positions, ``n_layers`` pre-LayerNorm
    blocks (causal self-attention, GELU MLP of width ``d_ff``, default ``4 * d_model``),
    a final LayerNorm, and an output projection whose weight *is* the token embedding's
    (``output.weight is token_embedding.weight``) plus a per-token bias.

    Scales: the token embedding is drawn from N(0, 1/d_model) and multiplied by
    sqrt(d_model) on input, so token vectors enter at unit scale, like the positions
    (sinusoidal entries lie in [-1, 1]; learned ones start at N(0, 1)), while the tied
    output projection sees small weights and starts with logits of order one.

    Positions: ``"sinusoidal"`` is a fixed table, a non-persistent buffer (not in the
    state_dict); ``"learned"`` is ``position_embedding`` [max_len, d_model].

    ``attention="pyattn"`` builds the blocks on ``pyattn.nn.MultiheadAttention``,
    ``"torch"`` on ``torch.nn.MultiheadAttention``: same state_dict keys and shapes, so
    either loads the other's and computes the same logits. (Dropout differs: each draws
    its own attention-dropout masks.)

    Decoding: :meth:`start` and :meth:`step` (see there) for ``pyattn.models.decoding``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_heads: int = 4,
        n_layers: int = 4,
        max_len: int = 512,
        d_ff: int | None = None,
        positions: str = "sinusoidal",
        dropout: float = 0.1,
        attention: str = "pyattn",
    ) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff  # checked after d_model, which it may come from
        check_config("TransformerLM", {"vocab_size": vocab_size, "d_model": d_model, "n_heads": n_heads,
                                       "n_layers": n_layers, "max_len": max_len, "d_ff": d_ff},
                     dropout, "attention", attention)
        if d_model % n_heads:
            raise ValueError(f"TransformerLM: d_model={d_model} must be divisible by n_heads={n_heads}")
        if positions not in POSITIONS:
            raise ValueError(f"TransformerLM: positions must be one of {POSITIONS}, got {positions!r}")
        self.vocab_size, self.d_model, self.max_len = vocab_size, d_model, max_len
        self.positions, self.attention_impl = positions, attention

        self.token_embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.token_embedding.weight, std=d_model**-0.5)
        self.embedding_scale = math.sqrt(d_model)
        if positions == "learned":
            self.position_embedding = nn.Embedding(max_len, d_model)
        else:
            self.register_buffer("position_table", sinusoidal_positions(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        attention_cls = MultiheadAttention if attention == "pyattn" else nn.MultiheadAttention
        self.blocks = nn.ModuleList(PreNormBlock(d_model, n_heads, d_ff, dropout, attention_cls)
                                    for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)
        self.output.weight = self.token_embedding.weight
        nn.init.zeros_(self.output.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens int64 [B, T] (1 <= T <= max_len) -> logits [B, T, vocab_size]; position t
        predicts token t + 1 from tokens 0..t."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
            raise ValueError(f"TransformerLM: tokens must be an integer tensor [B, T], got {describe(tokens)}")
        t = tokens.shape[1]
        if t == 0:
            raise ValueError("TransformerLM: tokens has 0 positions (tokens.size(1)); expected at least 1")
        if t > self.max_len:
            raise ValueError(f"TransformerLM: tokens has {t} positions (tokens.size(1)), more than "
                             f"max_len={self.max_len}")
        x = self.token_embedding(tokens) * self.embedding_scale
        if self.positions == "learned":
            x = x + self.position_embedding.weight[:t]
        else:
            x = x + self.position_table[:t].to(x.dtype)
        x = self.dropout(x)
        causal_mask = torch.ones(t, t, dtype=torch.bool, device=tokens.device).triu(1)
        for block in self.blocks:
            x = block(x, causal_mask)
        return self.output(self.final_norm(x))

    def start(self, prefix: torch.Tensor):
        """Begins decoding after ``prefix`` int64 [B, P], P >= 1: returns ``(step, state)``
        where ``step(prefix[:, -1], state)`` gives the log-probs of the token after the
        prefix. State: ``{"history": int64 [N, t]}``, the tokens before the one ``step``
        consumes (here ``prefix[:, :-1]``). Eval mode only (no dropout in decoding).

        ``step`` re-runs :meth:`forward` over the history and the new token (no key/value
        cache): a step at length t costs a forward over t tokens, simple and exactly the
        model's function. History plus the new token may not exceed ``max_len``.
        """
        check_decoding(self, "TransformerLM.start")
        check_prefix(prefix, "TransformerLM.start")
        return self.step, {"history": prefix[:, :-1]}

    def step(self, tokens: torch.Tensor, state: dict):
        """tokens int64 [N] (one per row), state ``{"history": [N, t]}`` -> (log_probs
        [N, vocab_size] of the token after ``tokens``, ``{"history": [N, t + 1]}``)."""
        check_decoding(self, "TransformerLM.step")
        history = state["history"]
        if not isinstance(tokens, torch.Tensor) or tokens.shape != history.shape[:1]:
            raise ValueError(f"TransformerLM.step: tokens must be [N] with N={history.shape[0]} (the state's rows), "
                             f"got {describe(tokens)}")
        if history.shape[1] >= self.max_len:
            raise ValueError(f"TransformerLM.step: the state holds {history.shape[1]} tokens, so this one would be "
                             f"past max_len={self.max_len}; decode at most max_len - prefix length + 1 tokens")
        history = torch.cat([history, tokens[:, None].to(history.dtype)], dim=1)
        logits = self(history)[:, -1]
        return torch.log_softmax(logits, dim=-1), {"history": history}

