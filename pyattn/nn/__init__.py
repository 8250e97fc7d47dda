"""Drop-in torch.nn modules backed by pyattn's kernels (same constructors, forward
signatures and state_dicts as torch's)."""

from pyattn.nn.activation import MultiheadAttention
from pyattn.nn.rnn import LSTM, LSTMCell

__all__ = ["MultiheadAttention", "LSTM", "LSTMCell"]
