"""``LSTM`` and ``LSTMCell`` with torch's constructors, parameter names, shapes,
initialisation and forward semantics, so torch state_dicts load both ways and give the
same outputs and gradients (dropout aside: its random masks differ).
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from pyattn import functional as F

__all__ = ["LSTM", "LSTMCell"]


class LSTMCell(nn.Module):
    """As ``torch.nn.LSTMCell(input_size, hidden_size, bias=True, device=None, dtype=None)``.

    Parameters ``weight_ih [4H, C]``, ``weight_hh [4H, H]``, ``bias_ih``, ``bias_hh [4H]``,
    each drawn from U(-1/sqrt(H), 1/sqrt(H)) in that order (torch's). ``forward(input,
    hx=None)`` takes ``[N, C]`` or ``[C]`` and returns ``(h', c')``.

    In fp32 on the CPU the module keeps its two weights packed for pyattn's GEMM and
    re-packs them only when they change (their ``_version`` or storage), so a Python loop
    of steps packs once. A change made through ``.data`` is invisible to the version
    counter: call ``repack()`` after one.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **kw))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()
        self.repack()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for w in self.parameters():
            nn.init.uniform_(w, -stdv, stdv)

    def repack(self) -> None:
        """Drops the packed weights; the next fp32 CPU forward packs them again."""
        self._packed: Optional[torch.Tensor] = None  # a cache, not state: not in state_dict
        self._packed_key: Optional[tuple] = None

    def _packed_weights(self) -> Optional[torch.Tensor]:
        """[weight_ih | weight_hh] packed (lstm_cell_pack), re-made when either changed;
        None where the op would not use it (not fp32 on the CPU) or under torch.compile."""
        w_ih, w_hh = self.weight_ih, self.weight_hh
        if w_ih.dtype != torch.float32 or w_ih.device.type != "cpu" or torch.compiler.is_compiling():
            return None
        key = (w_ih._version, w_hh._version, w_ih.data_ptr(), w_hh.data_ptr())
        if key != self._packed_key:
            with torch.no_grad():
                self._packed = torch.ops.pyattn.lstm_cell_pack(w_ih, w_hh)
            self._packed_key = key
        return self._packed

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def forward(self, input: torch.Tensor, hx: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"LSTMCell: input has {input.shape[-1]} features (input.size(-1)), expected input_size={self.input_size}"
            )
        if hx is not None:
            want = (*input.shape[:-1], self.hidden_size)
            if hx[0].shape != want or hx[1].shape != want:
                name, t = ("hx[0] (h)", hx[0]) if hx[0].shape != want else ("hx[1] (c)", hx[1])
                raise ValueError(f"LSTMCell: {name} has shape {tuple(t.shape)}, expected {want}")
        return F.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self._packed_weights())


class LSTM(nn.Module):
    """As ``torch.nn.LSTM(input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None,
    dtype=None)``.

    Parameters per layer k and direction (suffix ``_reverse`` for the backward one), in
    torch's order: ``weight_ih_lk [4H, in]``, ``weight_hh_lk [4H, P]``, ``bias_ih_lk``,
    ``bias_hh_lk [4H]``, ``weight_hr_lk [P, H]`` (with proj_size > 0), with P = proj_size
    or H and ``in`` = input_size for layer 0, else D*P. All drawn from
    U(-1/sqrt(H), 1/sqrt(H)) in registration order, as torch does.

    ``forward(input, hx=None)``: input ``[T, N, C]`` (``[N, T, C]`` with batch_first),
    unbatched ``[T, C]``, or a ``PackedSequence``; hx ``(h_0 [L*D, N, P], c_0 [L*D, N, H])``
    (unbatched: without N). Returns ``(output, (h_n, c_n))`` like torch.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(f"LSTM: dropout should be a number in [0, 1] (probability of zeroing), got {dropout!r}")
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"LSTM: hidden_size must be a positive int, got {hidden_size!r}")
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"LSTM: num_layers must be a positive int, got {num_layers!r}")
        if proj_size < 0:
            raise ValueError(f"LSTM: proj_size must be >= 0, got {proj_size}")
        if proj_size >= hidden_size:
            raise ValueError(f"LSTM: proj_size {proj_size} must be smaller than hidden_size {hidden_size}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"LSTM: dropout={dropout} has no effect with num_layers=1: it is applied to the output of "
                "every layer except the last"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        kw = {"device": device, "dtype": dtype}
        ndir = 2 if bidirectional else 1
        real_h = proj_size if proj_size > 0 else hidden_size
        self._weight_names: list[tuple] = []  # per (layer, direction): names of (w_ih, w_hh, b_ih, b_hh, w_hr)
        for layer in range(num_layers):
            for d in range(ndir):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                in_size = input_size if layer == 0 else real_h * ndir
                shapes = {
                    "weight_ih": (4 * hidden_size, in_size),
                    "weight_hh": (4 * hidden_size, real_h),
                    "bias_ih": (4 * hidden_size,) if bias else None,
                    "bias_hh": (4 * hidden_size,) if bias else None,
                    "weight_hr": (proj_size, hidden_size) if proj_size > 0 else None,
                }
                names = []
                for base, shape in shapes.items():
                    if shape is None:
                        names.append(None)
                        continue
                    self.register_parameter(base + sfx, nn.Parameter(torch.empty(shape, **kw)))
                    names.append(base + sfx)
                self._weight_names.append(tuple(names))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            nn.init.uniform_(w, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    def flatten_parameters(self) -> None:
        """A no-op, for code written for torch.nn.LSTM (whose cuDNN path wants one buffer)."""

    @property
    def all_weights(self) -> list[list[torch.Tensor]]:
        """Per layer and direction, the parameters present, in torch's order."""
        return [[getattr(self, n) for n in names if n is not None] for names in self._weight_names]

    def _weights(self) -> list[tuple]:
        return [tuple(None if n is None else getattr(self, n) for n in names) for names in self._weight_names]

    def forward(self, input, hx: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
        ndir = 2 if self.bidirectional else 1
        real_h = self.proj_size if self.proj_size > 0 else self.hidden_size
        packed = isinstance(input, PackedSequence)
        if packed:
            x, batch_sizes, sorted_idx, unsorted_idx = input
            n = int(batch_sizes[0])
            batched = True
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                x = x.transpose(0, 1)
            batch_sizes = sorted_idx = unsorted_idx = None
            n = x.shape[1]
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"LSTM: input has {x.shape[-1]} features (input.size(-1)), expected input_size={self.input_size}"
            )
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("LSTM: hx must be a tuple (h_0, c_0)")
            h0, c0 = hx
            if not batched:
                for name, t in (("hx[0] (h_0)", h0), ("hx[1] (c_0)", c0)):
                    if t.dim() != 2:
                        raise ValueError(f"LSTM: for unbatched 2-D input, {name} should also be 2-D but got {t.dim()}-D")
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            for name, t, size in (("hx[0] (h_0)", h0, real_h), ("hx[1] (c_0)", c0, self.hidden_size)):
                want = (self.num_layers * ndir, n, size)
                if tuple(t.shape) != want:
                    raise ValueError(f"LSTM: {name} has shape {tuple(t.shape)}, expected {want}")
            if sorted_idx is not None:  # the sequences' order inside the packed batch
                h0, c0 = h0.index_select(1, sorted_idx), c0.index_select(1, sorted_idx)
            hx = (h0, c0)
        out, (h_n, c_n) = F.lstm(
            x,
            hx,
            self._weights(),
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            training=self.training,
            batch_sizes=batch_sizes,
        )
        if packed:
            if unsorted_idx is not None:
                h_n, c_n = h_n.index_select(1, unsorted_idx), c_n.index_select(1, unsorted_idx)
            return PackedSequence(out, batch_sizes, sorted_idx, unsorted_idx), (h_n, c_n)
        if not batched:
            return out.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, (h_n, c_n)
