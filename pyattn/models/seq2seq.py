"""An LSTM encoder-decoder with Luong-style global attention, on pyattn's LSTM and fused
attention (or, with ``impl="torch"``, the identical model on torch's LSTM and SDPA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pyattn.functional import attention
from pyattn.models.checks import check_config, check_decoding, describe
from pyattn.nn import LSTM

__all__ = ["Seq2Seq"]



class Seq2Seq(nn.Module):
    """Encoder-decoder translator.

    * Encoder: source embedding -> dropout -> ``num_layers`` LSTM layers (bidirectional
      by default), run as a PackedSequence over each source's own length, so padding
      never enters it. Its outputs, the *memory*, are [B, S, E] with
      ``E = hidden_size * (2 if bidirectional_encoder else 1)`` (zeros past each length).
    * Bridge: the decoder's initial state per layer comes from the encoder's final one
      (both directions concatenated, [.., E]): ``h0 = tanh(init_h(h_n))``, ``c0 =
      init_c(c_n)``.
    * Decoder: target embedding -> dropout -> ``num_layers`` LSTM layers (hidden
      ``hidden_size``), giving ``h_t`` per target position. With teacher forcing the
      whole target runs in one LSTM call; decoding runs it one step at a time. (No input
      feeding, which would force a per-step loop in training.)
    * Attention (Luong's "general" score, scaled): ``q_t = W_a h_t`` (``query``,
      [H] -> [E]), context ``c_t = softmax(q_t . memory / sqrt(E)) @ memory`` over the
      source positions ``< src_lengths`` only (pyattn: ``attention(..., key_lengths=)``;
      torch: ``scaled_dot_product_attention`` with the equivalent bool mask).
    * Output: ``tanh(combine([c_t; h_t]))`` -> dropout -> ``output`` -> logits.

    ``impl="pyattn"`` uses ``pyattn.nn.LSTM`` and ``pyattn.functional.attention``,
    ``"torch"`` ``torch.nn.LSTM`` and ``torch.nn.functional.scaled_dot_product_attention``:
    the same state_dict and logits (dropout aside).

    Decoding: :meth:`start` and :meth:`step` (see there) for ``pyattn.models.decoding``.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, emb_size: int = 256, hidden_size: int = 256,
                 num_layers: int = 1, bidirectional_encoder: bool = True, dropout: float = 0.1,
                 impl: str = "pyattn") -> None:
        super().__init__()
        check_config("Seq2Seq", {"src_vocab": src_vocab, "tgt_vocab": tgt_vocab, "emb_size": emb_size,
                                 "hidden_size": hidden_size, "num_layers": num_layers}, dropout, "impl", impl)
        self.hidden_size, self.num_layers, self.impl = hidden_size, num_layers, impl
        self.bidirectional_encoder = bool(bidirectional_encoder)
        self.memory_size = hidden_size * (2 if bidirectional_encoder else 1)
        lstm_cls = LSTM if impl == "pyattn" else nn.LSTM
        between_layers = dropout if num_layers > 1 else 0.0  # both LSTMs warn about dropout on one layer

        self.src_embedding = nn.Embedding(src_vocab, emb_size)
        self.tgt_embedding = nn.Embedding(tgt_vocab, emb_size)
        self.encoder = lstm_cls(emb_size, hidden_size, num_layers, batch_first=True, dropout=between_layers,
                                bidirectional=self.bidirectional_encoder)
        self.init_h = nn.Linear(self.memory_size, hidden_size)
        self.init_c = nn.Linear(self.memory_size, hidden_size)
        self.decoder = lstm_cls(emb_size, hidden_size, num_layers, batch_first=True, dropout=between_layers)
        self.query = nn.Linear(hidden_size, self.memory_size, bias=False)
        self.combine = nn.Linear(self.memory_size + hidden_size, hidden_size)
        self.output = nn.Linear(hidden_size, tgt_vocab)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing. src int64 [B, S] right-padded, src_lengths int [B] (each in
        1..S; any device), tgt_in int64 [B, T] (BOS first) -> logits [B, T, tgt_vocab]:
        position t predicts target token t + 1 from ``tgt_in[:, :t + 1]`` and the source."""
        memory, key_lengths, hx = self.encode(src, src_lengths)
        if not isinstance(tgt_in, torch.Tensor) or tgt_in.dim() != 2 or tgt_in.is_floating_point() \
                or tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"Seq2Seq: tgt_in must be an integer tensor [B, T] with B={src.shape[0]} (src's), "
                             f"got {describe(tgt_in)}")
        logits, _ = self._decode(tgt_in, memory, key_lengths, hx)
        return logits

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor):
        """src [B, S], src_lengths [B] -> (memory [B, S, E], key_lengths int64 [B] on the
        memory's device, decoder initial state (h0, c0) each [num_layers, B, H])."""
        if not isinstance(src, torch.Tensor) or src.dim() != 2 or src.is_floating_point() or src.shape[1] == 0:
            raise ValueError(f"Seq2Seq: src must be an integer tensor [B, S] with S >= 1, got {describe(src)}")
        b, s = src.shape
        if not isinstance(src_lengths, torch.Tensor) or tuple(src_lengths.shape) != (b,) \
                or src_lengths.is_floating_point() or src_lengths.dtype == torch.bool:
            raise ValueError(f"Seq2Seq: src_lengths must be an integer tensor [B] with B={b} (src's rows), "
                             f"got {describe(src_lengths)}")
        lengths = src_lengths.cpu()  # pack_padded_sequence wants them on the CPU
        if b and (int(lengths.min()) < 1 or int(lengths.max()) > s):
            raise ValueError(f"Seq2Seq: src_lengths must lie in [1, {s}] (src.size(1)), got "
                             f"min {int(lengths.min())}, max {int(lengths.max())}")
        x = self.dropout(self.src_embedding(src))
        packed, (h_n, c_n) = self.encoder(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        memory, _ = pad_packed_sequence(packed, batch_first=True, total_length=s)  # [B, S, E]

        def per_layer(final):  # [layers * D, B, H] -> [layers, B, D * H]: the directions side by side
            d = 2 if self.bidirectional_encoder else 1
            return final.unflatten(0, (self.num_layers, d)).permute(0, 2, 1, 3).flatten(2)

        hx = (torch.tanh(self.init_h(per_layer(h_n))), self.init_c(per_layer(c_n)))
        return memory, lengths.to(device=memory.device, dtype=torch.int64), hx

    def _decode(self, tgt: torch.Tensor, memory: torch.Tensor, key_lengths: torch.Tensor, hx):
        """tgt [B, T], memory [B, S, E], key_lengths [B], hx (h, c) [num_layers, B, H] ->
        (logits [B, T, V], (h, c) after the last target token)."""
        y = self.dropout(self.tgt_embedding(tgt))
        out, hx = self.decoder(y, hx)  # [B, T, H]
        q = self.query(out)[:, None]  # [B, 1 head, T, E]
        keys = memory[:, None]  # [B, 1, S, E], also the values
        if self.impl == "pyattn":
            context = attention(q, keys, keys, key_lengths=key_lengths)
        else:
            attend = torch.arange(memory.shape[1], device=memory.device) < key_lengths[:, None]  # [B, S]
            context = F.scaled_dot_product_attention(q, keys, keys, attn_mask=attend[:, None, None, :])
        attentional = torch.tanh(self.combine(torch.cat([context[:, 0], out], dim=-1)))  # [B, T, H]
        return self.output(self.dropout(attentional)), hx

    def start(self, src: torch.Tensor, src_lengths: torch.Tensor):
        """Encodes the source and returns ``(step, state)``; ``step(bos, state)`` gives the
        log-probs of the first target token (``forward(src, src_lengths, tgt_in)[:, t]``
        is what the t-th step returns when fed ``tgt_in[:, t]``). Eval mode only.

        State (every tensor rows first, N = B at the start): ``{"memory": [N, S, E],
        "key_lengths": int64 [N], "h": [N, num_layers, H], "c": [N, num_layers, H]}``.
        """
        check_decoding(self, "Seq2Seq.start")
        memory, key_lengths, (h, c) = self.encode(src, src_lengths)
        return self.step, {"memory": memory, "key_lengths": key_lengths, "h": h.transpose(0, 1),
                           "c": c.transpose(0, 1)}

    def step(self, tokens: torch.Tensor, state: dict):
        """tokens int64 [N], state as :meth:`start`'s -> (log_probs [N, tgt_vocab], the
        state after ``tokens``: same memory and key lengths, new h and c)."""
        check_decoding(self, "Seq2Seq.step")
        n = state["memory"].shape[0]
        if not isinstance(tokens, torch.Tensor) or tuple(tokens.shape) != (n,):
            raise ValueError(f"Seq2Seq.step: tokens must be [N] with N={n} (the state's rows), got {describe(tokens)}")
        hx = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())
        logits, (h, c) = self._decode(tokens[:, None], state["memory"], state["key_lengths"], hx)
        return torch.log_softmax(logits[:, 0], dim=-1), {**state, "h": h.transpose(0, 1), "c": c.transpose(0, 1)}

