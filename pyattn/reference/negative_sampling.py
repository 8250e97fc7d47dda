"""Negative-sampling word2vec in NumPy float64: one batch of sequential SGD updates
(skip-gram and CBOW) and the differentiable skip-gram loss with its gradients.

Tables: ``w_in`` [V, D] (input / "syn0" vectors), ``w_out`` [V, D] (output / "syn1neg").
A batch is ``centers`` [N] and ``contexts`` [N, C] (token ids; -1 = empty slot, so one
array holds windows of different sizes); ``stream_contexts`` gives the contexts the
stream-form ops read from a token stream.

Skip-gram: every (center n, context slot c) with contexts[n, c] >= 0 is one pair, taken
in row-major order (``sgns_window_update`` is the window batch instead). Its input
vector is h = w_in[center]; its targets are the context word (label 1) and the
negatives negatives[n, c, :] (label 0). CBOW: one example per center n with at least
one context; h = mean of w_in over the valid contexts; targets are the center (label 1)
and negatives[n, :] (label 0).

Per example (word2vec.c semantics), for each target t in order with label y:
    x = w_out[t] . h;  g = lr * (y - sigmoid(x));  e += g * w_out[t];  w_out[t] += g * h
except that a target with |x| >= MAX_LOGIT (6, gensim's MAX_EXP) gets no update (g = 0),
as in gensim; on English text this lifts CBOW's analogy accuracy (bench/results/
word2vec_cbow_gap_2026-12-05.md) and saves the skipped updates.
and after all targets w_in[center] += e (skip-gram) or, for CBOW, every valid context
word gets the whole w_in[ctx] += e (gensim's cbow_mean=1 and word2vec.c: h is the mean,
the error is not divided among the context words).
h is read once per example, before its targets are processed. A negative equal to the
positive target is skipped (as word2vec.c and gensim do). The example's loss is
    -log sigmoid(x_pos) - sum over used negatives of log sigmoid(-x_neg)
with each x taken when its target is processed. Returns the summed loss.

The update functions take ``margins``: a list that, when given, gets |(|x| - MAX_LOGIT)|
for every logit, so that an fp32 check can redraw inputs whose logit sits so close to the
cutoff that rounding decides whether it updates.
"""

from __future__ import annotations

import numpy as np

MAX_LOGIT = 6.0  # kNegSamplingMaxLogit in pyattn/negative_sampling.h

def _log_sigmoid(x: float) -> float:
    return -float(np.logaddexp(0.0, -x))


def _sigmoid(x: float) -> float:
    return float(0.5 * (1.0 + np.tanh(0.5 * x)))


def _record_margins(margins, x) -> None:
    if margins is not None:
        margins.extend(np.abs(np.abs(np.ravel(x)) - MAX_LOGIT).tolist())


def _apply_targets(w_out, h, targets, labels, lr, margins=None):
    """Updates w_out in place; returns (e, loss) for one example."""
    e = np.zeros_like(h)
    loss = 0.0
    for t, y in zip(targets, labels):
        x = float(w_out[t] @ h)
        _record_margins(margins, x)
        g = lr * (y - _sigmoid(x)) if abs(x) < MAX_LOGIT else 0.0
        loss -= _log_sigmoid(x) if y else _log_sigmoid(-x)
        e += g * w_out[t]
        w_out[t] += g * h
    return e, loss


def _targets(pos: int, negs) -> tuple[list[int], list[int]]:
    ts, ys = [int(pos)], [1]
    for j in negs:
        if int(j) != int(pos):
            ts.append(int(j))
            ys.append(0)
    return ts, ys


def _center_examples(centers, contexts, negatives):
    """CBOW's and the window batch's examples: for each center with a valid context, in
    order, (its context ids, its targets and labels). negatives: [N, K]."""
    contexts = np.asarray(contexts).reshape(len(centers), -1)
    negatives = np.asarray(negatives).reshape(len(centers), -1)
    for n, c in enumerate(centers):
        ctx = [int(o) for o in contexts[n] if o >= 0]
        if ctx:
            yield (ctx, *_targets(c, negatives[n]))


def stream_contexts(tokens, sentence, radius, start, stop, window):
    """The contexts [stop - start, 2 * window + 1] that the stream-form updates
    (sgns_stream_update_ / cbow_stream_update_) read for centers tokens[start:stop]:
    slot window + d of center i holds tokens[i + d] when 0 < |d| <= radius[i], i + d is
    in the stream and sentence[i + d] == sentence[i], else -1 (word2vec.c's window)."""
    out = np.full((max(0, stop - start), 2 * window + 1), -1, dtype=np.int64)
    for row, i in enumerate(range(start, stop)):
        for d in range(-window, window + 1):
            j = i + d
            if d and abs(d) <= radius[i] and 0 <= j < len(tokens) and sentence[j] == sentence[i]:
                out[row, window + d] = tokens[j]
    return out


def sgns_update(w_in, w_out, centers, contexts, negatives, lr, margins=None):
    """Skip-gram batch update. negatives: [N, C, K]. Returns (new w_in, new w_out, loss)."""
    w_in = np.array(w_in, dtype=np.float64)
    w_out = np.array(w_out, dtype=np.float64)
    contexts = np.asarray(contexts).reshape(len(centers), -1)
    negatives = np.asarray(negatives).reshape(contexts.shape + (-1,))
    loss = 0.0
    for n, c in enumerate(centers):
        for s, o in enumerate(contexts[n]):
            if o < 0:
                continue
            h = w_in[c].copy()
            ts, ys = _targets(o, negatives[n, s])
            e, l = _apply_targets(w_out, h, ts, ys, lr, margins)
            w_in[c] += e
            loss += l
    return w_in, w_out, loss


def sgns_window_update(w_in, w_out, centers, contexts, negatives, lr, margins=None):
    """Skip-gram's window batch (pWord2Vec's HogBatch; ``window_batch=True`` of the ops).
    negatives: [N, K], one draw per center. Returns (new w_in, new w_out, loss).

    Center n with valid contexts o_1..o_m is one example: inputs H = w_in[o_i]
    (word2vec.c's orientation), targets U = w_out[t_j] with t_0 = center (label 1) and the
    negatives not equal to it (label 0). With X = H U^T taken from the rows as they stand,
    G = lr * (labels - sigmoid(X)), 0 where |X| >= MAX_LOGIT; then w_in[o_i] += (G U)_i and
    w_out[t_j] += (G^T H)_j, both from those rows (a row that comes twice gets both).
    The loss sums -log sigmoid(+-x) over every (input, target) pair.
    """
    w_in = np.array(w_in, dtype=np.float64)
    w_out = np.array(w_out, dtype=np.float64)
    loss = 0.0
    for ctx, ts, ys in _center_examples(centers, contexts, negatives):
        h, u = w_in[ctx], w_out[ts]                    # [m, D], [nt, D]
        x = h @ u.T                                     # [m, nt]
        _record_margins(margins, x)
        y = np.asarray(ys, dtype=np.float64)
        loss += float(np.logaddexp(0.0, -np.where(y == 1, x, -x)).sum())
        g = np.where(np.abs(x) < MAX_LOGIT, lr * (y - 0.5 * (1.0 + np.tanh(0.5 * x))), 0.0)
        np.add.at(w_in, ctx, g @ u)
        np.add.at(w_out, ts, g.T @ h)
    return w_in, w_out, loss


def cbow_update(w_in, w_out, centers, contexts, negatives, lr, margins=None):
    """CBOW batch update. negatives: [N, K]. Returns (new w_in, new w_out, loss)."""
    w_in = np.array(w_in, dtype=np.float64)
    w_out = np.array(w_out, dtype=np.float64)
    loss = 0.0
    for ctx, ts, ys in _center_examples(centers, contexts, negatives):
        h = w_in[ctx].mean(axis=0)
        e, l = _apply_targets(w_out, h, ts, ys, lr, margins)
        for o in ctx:
            w_in[o] += e
        loss += l
    return w_in, w_out, loss


def sgns_loss(w_in, w_out, centers, contexts, negatives):
    """Per-pair skip-gram loss, no updates: centers [B], contexts [B], negatives [B, K].

    loss[b] = -log sigmoid(w_out[o] . w_in[c]) - sum_k log sigmoid(-w_out[n_k] . w_in[c])
    (every negative counts, even one equal to the context). Returns loss [B].
    """
    h = np.asarray(w_in, dtype=np.float64)[centers]                    # [B, D]
    u = np.asarray(w_out, dtype=np.float64)
    xp = np.einsum("bd,bd->b", u[contexts], h)
    xn = np.einsum("bkd,bd->bk", u[negatives], h)
    return np.logaddexp(0.0, -xp) + np.logaddexp(0.0, xn).sum(axis=1)


def sgns_loss_grad(w_in, w_out, centers, contexts, negatives, dloss):
    """Gradients of sum(dloss * sgns_loss(...)) with respect to w_in and w_out (dense)."""
    w_in = np.asarray(w_in, dtype=np.float64)
    w_out = np.asarray(w_out, dtype=np.float64)
    centers, contexts, negatives = np.asarray(centers), np.asarray(contexts), np.asarray(negatives)
    h = w_in[centers]
    up, un = w_out[contexts], w_out[negatives]
    xp = np.einsum("bd,bd->b", up, h)
    xn = np.einsum("bkd,bd->bk", un, h)
    gp = -(1.0 / (1.0 + np.exp(xp))) * dloss                   # d loss / d xp = -sigmoid(-xp)
    gn = (1.0 / (1.0 + np.exp(-xn))) * np.asarray(dloss)[:, None]   # d loss / d xn = sigmoid(xn)
    d_in = np.zeros_like(w_in)
    d_out = np.zeros_like(w_out)
    np.add.at(d_in, centers, gp[:, None] * up + np.einsum("bk,bkd->bd", gn, un))
    np.add.at(d_out, contexts, gp[:, None] * h)
    np.add.at(d_out, negatives.reshape(-1), (gn[:, :, None] * h[:, None, :]).reshape(-1, h.shape[1]))
    return d_in, d_out
