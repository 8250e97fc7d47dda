"""NumPy float64 references for every pyattn op.

Each ``<op>.py`` here is the slow, obvious implementation that pins the op's semantics
(shapes, mask conventions, edge cases such as fully masked rows). The kernels are tested
against these. Plain NumPy only: nothing here imports torch.
"""

from .attention import attention_bwd, attention_dropout_mask, attention_fwd, attention_keep, attention_weights
from .lstm import (
    lstm_cell_bwd,
    lstm_cell_fwd,
    lstm_fwd,
    lstm_pointwise_bwd,
    lstm_pointwise_fwd,
    lstm_seq_bwd,
    lstm_seq_fwd,
)
from .negative_sampling import cbow_update, sgns_loss, sgns_loss_grad, sgns_update
from .scaled_masked_softmax import (
    scaled_masked_softmax_bwd,
    scaled_masked_softmax_fwd,
    scaled_masked_softmax_mask_grad,
)
from .subsample_tokens import subsample_tokens

# The functions imported above (the submodules, attributes too, are not callable).
__all__ = sorted(name for name, obj in globals().items() if callable(obj) and not name.startswith("_"))
