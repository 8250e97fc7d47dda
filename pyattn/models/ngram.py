"""Count-based n-gram language model with add-δ smoothing interpolated down to unigrams (NumPy)."""

from __future__ import annotations

import math

import numpy as np

from pyattn.metrics import perplexity as _perplexity


class NGramLM:
    """An n-gram language model over token ids ``0 .. vocab_size - 1``.

    Smoothing (add-δ whose δ·V pseudo-counts are shared out by the next lower order, i.e.
    a Dirichlet prior centred on the lower-order model; V = vocab_size):

        P_0(w)       = 1 / V
        P_k(w | h_k) = (c(h_k w) + δ·V·P_{k-1}(w | h_{k-1})) / (c(h_k) + δ·V),   k = 1..order

    h_k is the k − 1 tokens before w (h_1 is empty, h_{k-1} drops h_k's oldest token);
    c(h w) counts that k-gram in the training stream and c(h) = Σ_w c(h w) counts h followed
    by any token. So P_1 is plain add-δ on unigrams, every P_k sums to 1 over the
    vocabulary for every context, and a context never seen (c(h) = 0) gives exactly the
    lower order's distribution: the model backs off. The first tokens of a stream, which
    have fewer than order − 1 tokens before them, use the highest order their history allows.

    The training data is one stream of ids; put sentence boundaries in it as ordinary
    tokens (an end-of-sentence id), as LM benchmark corpora do.
    """

    def __init__(self, order: int = 3, delta: float = 0.01):
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
            raise ValueError(f"NGramLM: order must be an int >= 1, got {order!r}")
        if not (isinstance(delta, (int, float, np.floating)) and math.isfinite(delta) and delta > 0):
            raise ValueError(f"NGramLM: delta must be a finite number > 0, got {delta!r}")
        self.order = int(order)
        self.delta = float(delta)
        self.vocab_size: int | None = None
        # Per order k (index k - 1), each ending in one sentinel entry (see fit):
        self._keys: list[np.ndarray] = []     # sorted k-gram keys: context rank * V + last token, then -1
        self._counts: list[np.ndarray] = []   # c(h w) of each key, then 0
        self._totals: list[np.ndarray] = []   # c(h) per rank of the (k-1)-gram h, then 0

    def fit(self, ids, vocab_size: int) -> NGramLM:
        """Counts every k-gram (k = 1..order) of the stream ``ids`` (1-D ints in [0, vocab_size))."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"NGramLM.fit: vocab_size must be an int >= 1, got {vocab_size!r}")
        ids = _check_ids(ids, "ids", int(vocab_size), ndim=1)
        if ids.size == 0:
            raise ValueError("NGramLM.fit: ids is empty; the model needs at least one token")
        n = ids.size
        # A k-gram's key is (rank of its first k - 1 tokens among the distinct (k-1)-grams)
        # * V + its last token: exact (no hash collisions) while n * V < 2**63.
        if n * int(vocab_size) >= 2**63:
            raise ValueError(f"NGramLM.fit: len(ids) * vocab_size = {n} * {vocab_size} must be below 2**63")
        self.vocab_size = v = int(vocab_size)
        self._keys, self._counts, self._totals = [], [], []
        prefix_rank = np.zeros(n, dtype=np.int64)  # [n]: rank of the (k-1)-gram starting at each position
        n_prefixes = 1  # the empty context is the single 0-gram, rank 0
        for k in range(1, self.order + 1):
            keys = prefix_rank[: max(n - k + 1, 0)] * v + ids[k - 1:]  # one per k-gram start
            distinct, prefix_rank, counts = np.unique(keys, return_inverse=True, return_counts=True)
            totals = np.bincount(distinct // v, weights=counts, minlength=n_prefixes)
            # Sentinels: rank -1 (not found) then reads count 0 and total 0, and a searchsorted
            # position one past the end reads a key no real key equals.
            self._keys.append(np.append(distinct, -1))
            self._counts.append(np.append(counts, 0).astype(np.float64))
            self._totals.append(np.append(totals, 0.0))
            n_prefixes = distinct.size
        return self

    def log_prob(self, ids) -> np.ndarray:
        """[len(ids)] float64: log P(ids[j] | the order − 1 ids before it) for every j, the
        first ids conditioned on the shorter history they have."""
        ids = self._check_query(ids, "ids", ndim=1)
        contexts = self._context_ranks(ids)
        return np.log(self._prob([c[:-1] for c in contexts], ids))

    def next_log_probs(self, contexts) -> np.ndarray:
        """[B, V] float64: log P(w | contexts[b]) for every token w, for contexts [B, C] of
        ids (C >= 0; only the last order − 1 of them matter)."""
        contexts = self._check_query(contexts, "contexts", ndim=2)
        last = [c[:, -1:] for c in self._context_ranks(contexts)]  # [B, 1] per order
        return np.log(self._prob(last, np.arange(self.vocab_size)[None, :]))

    def nll(self, ids) -> tuple[float, int]:
        """(sum of −log P over the stream ``ids``, number of tokens), nats."""
        return -float(self.log_prob(ids).sum()), int(np.size(ids))

    def perplexity(self, ids) -> float:
        """exp(mean −log P) over the stream ``ids``."""
        return _perplexity(*self.nll(ids))

    def _check_query(self, ids, name: str, ndim: int) -> np.ndarray:
        if self.vocab_size is None:
            raise RuntimeError("NGramLM: call fit(ids, vocab_size) before scoring")
        return _check_ids(ids, name, self.vocab_size, ndim)

    def _context_ranks(self, ids: np.ndarray) -> list[np.ndarray]:
        """For ids [..., T], per order k (index k - 1), [..., T + 1]: the rank of the
        (k-1)-gram that ends just before position j (j = T: after the last id), or -1 where
        that (k-1)-gram was never seen or would start before the sequence."""
        contexts = [np.zeros(ids.shape[:-1] + (ids.shape[-1] + 1,), dtype=np.int64)]
        not_found = np.full(ids.shape[:-1] + (1,), -1, dtype=np.int64)
        for k in range(1, self.order):
            grams = self._find(k, contexts[-1][..., :-1], ids)  # [..., T]: k-gram ending at j
            contexts.append(np.concatenate([not_found, grams], axis=-1))
        return contexts

    def _find(self, k: int, context_rank: np.ndarray, token: np.ndarray) -> np.ndarray:
        """Rank of the k-gram (context, token) in the order-k table, -1 if unseen; broadcasts."""
        keys = self._keys[k - 1]
        wanted = context_rank * self.vocab_size + token
        pos = np.searchsorted(keys[:-1], wanted)
        return np.where((context_rank >= 0) & (keys[pos] == wanted), pos, -1)

    def _prob(self, context_ranks: list[np.ndarray], token: np.ndarray) -> np.ndarray:
        """P_order(token | context) by the recursion in the class docstring; broadcasts."""
        pseudo = self.delta * self.vocab_size  # δ·V pseudo-counts per context
        p = np.full(np.broadcast_shapes(context_ranks[0].shape, token.shape), 1.0 / self.vocab_size)
        for k, context in enumerate(context_ranks, start=1):
            count = self._counts[k - 1][self._find(k, context, token)]
            p = (count + pseudo * p) / (self._totals[k - 1][context] + pseudo)
        return p


def _check_ids(ids, name: str, vocab_size: int, ndim: int) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"NGramLM: {name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.ndim != ndim:
        raise ValueError(f"NGramLM: {name} must have {ndim} dim(s), got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(
            f"NGramLM: {name} holds ids in [{ids.min()}, {ids.max()}], outside [0, vocab_size={vocab_size})"
        )
    return ids.astype(np.int64, copy=False)
