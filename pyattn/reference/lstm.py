"""Reference for the LSTM cell and the LSTM over a sequence, in NumPy float64.

Gate order and formulas are torch's (``nn.LSTM``, ``nn.LSTMCell``), with ``H`` the hidden
size, ``C`` the input size and ``P`` the size of ``h`` (``P = H``, or ``proj_size``)::

    gates = x @ w_ih.T + h @ w_hh.T + b_ih + b_hh          [N, 4H], split as i, f, g, o
    i, f, o = sigmoid(gates_i), sigmoid(gates_f), sigmoid(gates_o);  g = tanh(gates_g)
    c' = f * c + i * g                                       [N, H]
    h' = o * tanh(c')                                        [N, H]
    h' = (o * tanh(c')) @ w_hr.T   with a projection         [N, P]

Shapes: ``x`` [N, C], ``h`` [N, P], ``c`` [N, H], ``w_ih`` [4H, C], ``w_hh`` [4H, P],
``b_ih``/``b_hh`` [4H] or None, ``w_hr`` [P, H] or None.

A sequence is ``x`` [T, N, C] run from t = 0 to T-1 (or T-1 down to 0 with
``reverse=True``), giving ``y`` [T, N, P] (the h of every step) and the final (h, c).
A packed sequence (``batch_sizes`` given, non-increasing, as in
``torch.nn.utils.rnn.PackedSequence``) is ``x`` [sum(batch_sizes), C]: step t holds the
first ``batch_sizes[t]`` sequences, rows ``off_t .. off_t + batch_sizes[t]``. A sequence
that ends keeps its last state as its final state; in reverse, a sequence starts (from
h0, c0) at its own last step. Plain NumPy: nothing here imports torch.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

__all__ = [
    "LstmCellCache",
    "lstm_cell_fwd",
    "lstm_cell_bwd",
    "lstm_pointwise_fwd",
    "lstm_pointwise_bwd",
    "lstm_seq_fwd",
    "lstm_seq_bwd",
    "lstm_fwd",
]


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _sigmoid(z):
    # exp of a non-positive argument only: no overflow warnings for large |z|.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def lstm_pointwise_fwd(gates, c):
    """The fused pointwise part: pre-activation gates [N, 4H] and c [N, H] to
    (h [N, H], c' [N, H], act [N, 4H] = sigmoid/tanh of the gates, in i, f, g, o order)."""
    gates, c = _f64(gates), _f64(c)
    hsz = c.shape[-1]
    if gates.shape[-1] != 4 * hsz:
        raise ValueError(f"gates has {gates.shape[-1]} columns, expected 4 * {hsz}")
    zi, zf, zg, zo = (gates[..., k * hsz:(k + 1) * hsz] for k in range(4))
    i, f, g, o = _sigmoid(zi), _sigmoid(zf), np.tanh(zg), _sigmoid(zo)
    c_new = f * c + i * g
    h = o * np.tanh(c_new)
    return h, c_new, np.concatenate([i, f, g, o], axis=-1)


def lstm_pointwise_bwd(dh, dc_new, act, c, c_new):
    """Gradients of the pointwise part: (d gates [N, 4H] (pre-activation), dc [N, H]).

    ``dh`` is the gradient reaching h (before any projection), ``dc_new`` the gradient
    reaching c' from later steps (zeros for a last step)."""
    dh, dc_new, act, c, c_new = map(_f64, (dh, dc_new, act, c, c_new))
    hsz = c.shape[-1]
    i, f, g, o = (act[..., k * hsz:(k + 1) * hsz] for k in range(4))
    tc = np.tanh(c_new)
    dct = dc_new + dh * o * (1.0 - tc * tc)
    dgates = np.concatenate(
        [dct * g * i * (1.0 - i), dct * c * f * (1.0 - f), dct * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1
    )
    return dgates, dct * f


class LstmCellCache(NamedTuple):
    x: np.ndarray
    h: np.ndarray
    c: np.ndarray
    act: np.ndarray
    c_new: np.ndarray
    h_pre: np.ndarray  # o * tanh(c'), before the projection


def _gates(x, h, w_ih, w_hh, b_ih, b_hh):
    z = x @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        z = z + b_ih
    if b_hh is not None:
        z = z + b_hh
    return z


def lstm_cell_fwd(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    """One step: returns (h' [N, P], c' [N, H], cache for :func:`lstm_cell_bwd`)."""
    x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr = map(_f64, (x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr))
    h_pre, c_new, act = lstm_pointwise_fwd(_gates(x, h, w_ih, w_hh, b_ih, b_hh), c)
    h_new = h_pre @ w_hr.T if w_hr is not None else h_pre
    return h_new, c_new, LstmCellCache(x, h, c, act, c_new, h_pre)


def lstm_cell_bwd(dh_new, dc_new, cache: LstmCellCache, w_ih, w_hh, w_hr=None):
    """Backward of one step. ``dh_new`` [N, P] and ``dc_new`` [N, H] (or None = 0).

    Returns a dict: dx [N, C], dh [N, P], dc [N, H], dw_ih, dw_hh, db [4H] (the gradient
    of b_ih and of b_hh alike), dw_hr [P, H] (None without a projection).
    """
    w_ih, w_hh, w_hr = map(_f64, (w_ih, w_hh, w_hr))
    dh_new = _f64(dh_new) if dh_new is not None else np.zeros((cache.c.shape[0], w_hh.shape[1]))
    dc_new = _f64(dc_new) if dc_new is not None else np.zeros_like(cache.c)
    dh_pre = dh_new @ w_hr if w_hr is not None else dh_new
    dgates, dc = lstm_pointwise_bwd(dh_pre, dc_new, cache.act, cache.c, cache.c_new)
    return dict(
        dx=dgates @ w_ih,
        dh=dgates @ w_hh,
        dc=dc,
        dw_ih=dgates.T @ cache.x,
        dw_hh=dgates.T @ cache.h,
        db=dgates.sum(axis=0),
        dw_hr=dh_new.T @ cache.h_pre if w_hr is not None else None,
    )


def _steps(x, batch_sizes, reverse):
    """[(t, offset, rows)] in processing order; x is [T, N, C] or packed [sum, C]."""
    if batch_sizes is None:
        T, N = x.shape[0], x.shape[1]
        steps = [(t, t * N, N) for t in range(T)]
    else:
        bs = [int(b) for b in batch_sizes]
        if any(b2 > b1 for b1, b2 in zip(bs, bs[1:])):
            raise ValueError(f"batch_sizes must be non-increasing, got {bs}")
        offs = np.concatenate([[0], np.cumsum(bs)[:-1]]).astype(int)
        steps = [(t, int(offs[t]), bs[t]) for t in range(len(bs))]
    return steps[::-1] if reverse else steps


def lstm_seq_fwd(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, batch_sizes=None, reverse=False):
    """One layer, one direction, over a sequence.

    Args:
        x: [T, N, C], or [sum(batch_sizes), C] with ``batch_sizes`` (packed).
        h0: [N, P]; c0: [N, H] (N = batch_sizes[0] when packed).

    Returns:
        (y, h_n [N, P], c_n [N, H], caches): y is [T, N, P] (or [sum, P]); caches the
        per-step :class:`LstmCellCache` in processing order, for :func:`lstm_seq_bwd`.
    """
    x, h0, c0 = _f64(x), _f64(h0), _f64(c0)
    flat = x.reshape(-1, x.shape[-1])
    p_size = h0.shape[-1]
    h_state, c_state = h0.copy(), c0.copy()
    y = np.zeros((flat.shape[0], p_size))
    caches = []
    for _, off, n in _steps(x, batch_sizes, reverse):
        # copies: the cache must not see the state updated in place below
        h_new, c_new, cache = lstm_cell_fwd(
            flat[off:off + n], h_state[:n].copy(), c_state[:n].copy(), w_ih, w_hh, b_ih, b_hh, w_hr
        )
        y[off:off + n] = h_new
        h_state[:n], c_state[:n] = h_new, c_new
        caches.append(cache)
    return y.reshape(x.shape[:-1] + (p_size,)), h_state, c_state, caches


def lstm_seq_bwd(dy, dh_n, dc_n, x, caches, w_ih, w_hh, w_hr=None, batch_sizes=None, reverse=False):
    """Backward through time of :func:`lstm_seq_fwd` (``dy``, ``dh_n``, ``dc_n`` may be None).

    Returns a dict: dx (x's shape), dh0 [N, P], dc0 [N, H], dw_ih, dw_hh, db [4H],
    dw_hr (None without a projection).
    """
    x = _f64(x)
    w_ih, w_hh, w_hr = map(_f64, (w_ih, w_hh, w_hr))
    flat = x.reshape(-1, x.shape[-1])
    steps = _steps(x, batch_sizes, reverse)
    n0 = np.shape(dh_n)[0] if dh_n is not None else max((n for _, _, n in steps), default=x.shape[1] if x.ndim == 3 else 0)
    p_size, h_size = w_hh.shape[1], w_hh.shape[0] // 4
    dyf = np.zeros((flat.shape[0], p_size)) if dy is None else _f64(dy).reshape(-1, p_size)
    dh_state = np.zeros((n0, p_size)) if dh_n is None else _f64(dh_n).copy()
    dc_state = np.zeros((n0, h_size)) if dc_n is None else _f64(dc_n).copy()
    dx = np.zeros_like(flat)
    grads = dict(dw_ih=np.zeros_like(w_ih), dw_hh=np.zeros_like(w_hh), db=np.zeros(4 * h_size),
                 dw_hr=np.zeros_like(w_hr) if w_hr is not None else None)
    for (_, off, n), cache in zip(steps[::-1], caches[::-1]):
        g = lstm_cell_bwd(dyf[off:off + n] + dh_state[:n], dc_state[:n], cache, w_ih, w_hh, w_hr)
        dx[off:off + n] = g["dx"]
        dh_state[:n], dc_state[:n] = g["dh"], g["dc"]
        for k in grads:
            if grads[k] is not None:
                grads[k] += g[k]
    return dict(dx=dx.reshape(x.shape), dh0=dh_state, dc0=dc_state, **grads)


def lstm_fwd(x, h0: Optional[np.ndarray], c0: Optional[np.ndarray], params, num_layers, bidirectional=False):
    """Stacked (and bidirectional) LSTM forward, no dropout, for x [T, N, C].

    ``params[layer][direction]`` is (w_ih, w_hh, b_ih, b_hh, w_hr); h0 [L*D, N, P],
    c0 [L*D, N, H] as in torch (or None = zeros). Returns (y [T, N, D*P], h_n, c_n).
    """
    x = _f64(x)
    ndir = 2 if bidirectional else 1
    w_hh0 = _f64(params[0][0][1])
    p_size, h_size, n = w_hh0.shape[1], w_hh0.shape[0] // 4, x.shape[1]
    h0 = np.zeros((num_layers * ndir, n, p_size)) if h0 is None else _f64(h0)
    c0 = np.zeros((num_layers * ndir, n, h_size)) if c0 is None else _f64(c0)
    hs, cs, inp = [], [], x
    for layer in range(num_layers):
        outs = []
        for d in range(ndir):
            k = layer * ndir + d
            y, hn, cn, _ = lstm_seq_fwd(inp, h0[k], c0[k], *params[layer][d], reverse=d == 1)
            outs.append(y)
            hs.append(hn)
            cs.append(cn)
        inp = np.concatenate(outs, axis=-1)
    return inp, np.stack(hs), np.stack(cs)

