"""Drop-in torch.nn modules backed by pyattn's kernels."""

from pyattn.nn.rnn import LSTM, LSTMCell

__all__ = ["LSTM", "LSTMCell"]
