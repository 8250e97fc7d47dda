"""Negative sampling: the in-place update ops (skip-gram, CBOW) and the sgns_loss op.

Checked against pyattn/reference/negative_sampling.py (NumPy float64).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyattn  # noqa: F401
from conftest import assert_close, Tol, to_np
from pyattn.functional import sgns_loss
from pyattn.reference import negative_sampling as ref

OPS = torch.ops.pyattn
USER_ERRORS = (RuntimeError, ValueError, TypeError)


def _tables(rng, vocab, dim, dtype):
    w_in = torch.tensor(rng.normal(0, 0.5, (vocab, dim)), dtype=dtype)
    w_out = torch.tensor(rng.normal(0, 0.5, (vocab, dim)), dtype=dtype)
    return w_in, w_out


def _distinct_batch(rng, vocab, n, slots, k, cbow):
    """Every id in the batch distinct, so the update order cannot matter."""
    per = 1 + slots + (k if cbow else slots * k)
    ids = rng.permutation(vocab)[: n * per].reshape(n, per)
    centers = ids[:, 0]
    contexts = ids[:, 1 : 1 + slots].copy()
    contexts[rng.random(contexts.shape) < 0.2] = -1   # some empty window slots
    contexts[:, 0] = ids[:, 1]                         # at least one context per center
    negs = ids[:, 1 + slots :].reshape((n, k) if cbow else (n, slots, k))
    return centers, contexts, negs


def _colliding_batch(rng, vocab, n, slots, k, cbow):
    """Ids drawn with repeats (rows collide across examples), and no empty window slot."""
    centers = rng.integers(0, vocab, n)
    contexts = rng.integers(0, vocab, (n, slots))
    negs = rng.integers(0, vocab, (n, k) if cbow else (n, slots, k))
    return centers, contexts, negs


def _clear_of_cutoff(margins, dtype) -> bool:
    """Whether every logit of the reference lies more than 1e-4 from the cutoff |x| = 6
    (margins from its ``margins`` argument); always so for fp64. An fp32 logit is within
    ~1e-6 of the fp64 one, and one on the other side of the cutoff gets (or skips) a whole
    update: a difference that rounding makes, not the kernel. About one fp32 case in 10^5
    to 10^6 draws such a logit; the tests below then draw again."""
    return dtype == torch.float64 or min(margins, default=np.inf) > 1e-4


REDRAWS = 10  # draws a test makes at most to find one clear of the cutoff


def _run(cbow, w_in, w_out, centers, contexts, negs, lr):
    op = OPS.cbow_update_ if cbow else OPS.sgns_update_
    return op(w_in, w_out, torch.tensor(centers), torch.tensor(contexts), torch.tensor(negs), None,
              negs.shape[-1], lr, 0, True)


@pytest.mark.parametrize("cbow", [False, True], ids=["sg", "cbow"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("dim", [1, 7, 29, 100, 131])
def test_update_distinct_matches_reference(cbow, dtype, dim, rng, cpu_isa):
    vocab, n, slots, k = 4000, 12, 4, 5
    fn = ref.cbow_update if cbow else ref.sgns_update
    for _ in range(REDRAWS):
        w_in, w_out = _tables(rng, vocab, dim, dtype)
        centers, contexts, negs = _distinct_batch(rng, vocab, n, slots, k, cbow)
        margins = []
        e_in, e_out, e_loss = fn(to_np(w_in), to_np(w_out), centers, contexts, negs, 0.05, margins)
        if _clear_of_cutoff(margins, dtype):
            break
    loss = _run(cbow, w_in, w_out, centers, contexts, negs, 0.05)
    tol = Tol(1e-12, 1e-10) if dtype == torch.float64 else Tol(2e-6, 2e-5)
    assert_close(w_in, e_in, tol=tol, msg="w_in")
    assert_close(w_out, e_out, tol=tol, msg="w_out")
    assert abs(loss.item() - e_loss) <= (1e-10 if dtype == torch.float64 else 1e-5) * abs(e_loss)


@pytest.mark.parametrize("cbow", [False, True], ids=["sg", "cbow"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_update_skips_saturated_targets(cbow, dtype, rng):
    """Targets whose logit has |x| >= 6 (gensim's MAX_EXP) keep their w_out row; the
    rest update as the reference. At dim 16, vectors of std s give logits of std
    4 s^2 (skip-gram), or 4 s^2 / sqrt(c) for CBOW's mean of c contexts: s = 1 and 1.6
    make both kinds occur. Skip-gram gets one pair per center, so every logit comes from
    the initial rows. About 13 % of skip-gram's logits saturate: its 40 x 6 of them all
    land on one side with probability ~1e-14."""
    vocab, dim, k = 3000, 16, 5
    n, slots, std = (20, 3, 1.6) if cbow else (40, 1, 1.0)
    fn = ref.cbow_update if cbow else ref.sgns_update
    for _ in range(REDRAWS):
        w_in = torch.tensor(rng.normal(0, std, (vocab, dim)), dtype=dtype)
        w_out = torch.tensor(rng.normal(0, std, (vocab, dim)), dtype=dtype)
        centers, contexts, negs = _distinct_batch(rng, vocab, n, slots, k, cbow)
        before_in, before_out = to_np(w_in), to_np(w_out)
        margins = []
        e_in, e_out, e_loss = fn(before_in, before_out, centers, contexts, negs, 0.05, margins)
        if _clear_of_cutoff(margins, dtype):
            break
    # Every id is distinct, so each target's logit is the one its initial rows give.
    if cbow:
        h = np.stack([before_in[[o for o in row if o >= 0]].mean(0) for row in contexts])
        targets = np.concatenate([centers[:, None], negs], 1)
        logits = np.einsum("nd,ntd->nt", h, before_out[targets])
    else:
        pairs = contexts >= 0
        targets = np.concatenate([contexts[..., None], negs], 2)[pairs]
        h = before_in[np.broadcast_to(centers[:, None], contexts.shape)[pairs]]
        logits = np.einsum("nd,ntd->nt", h, before_out[targets])
    saturated = np.abs(logits) >= ref.MAX_LOGIT
    assert saturated.any() and not saturated.all(), f"the draw should mix both kinds, {saturated.mean():.2f} saturated"
    loss = _run(cbow, w_in, w_out, centers, contexts, negs, 0.05)
    tol = Tol(1e-12, 1e-10) if dtype == torch.float64 else Tol(2e-6, 2e-5)
    assert_close(w_in, e_in, tol=tol, msg="w_in")
    assert_close(w_out, e_out, tol=tol, msg="w_out")
    assert np.array_equal(to_np(w_out)[targets[saturated]], before_out[targets[saturated]]), "a saturated row moved"
    assert not np.allclose(to_np(w_out)[targets[~saturated]], before_out[targets[~saturated]])
    assert abs(loss.item() - e_loss) <= (1e-10 if dtype == torch.float64 else 1e-5) * abs(e_loss)


@pytest.mark.parametrize("cbow", [False, True], ids=["sg", "cbow"])
def test_update_repeated_indices_single_thread_is_sequential(cbow, rng):
    """Repeated ids: with one thread the kernel is exactly the sequential reference."""
    vocab, dim, n, slots, k = 30, 16, 40, 4, 3
    w_in, w_out = _tables(rng, vocab, dim, torch.float64)
    centers, contexts, negs = _colliding_batch(rng, vocab, n, slots, k, cbow)
    contexts[:, 1][rng.random(n) < 0.3] = -1
    fn = ref.cbow_update if cbow else ref.sgns_update
    e_in, e_out, e_loss = fn(to_np(w_in), to_np(w_out), centers, contexts, negs, 0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loss = _run(cbow, w_in, w_out, centers, contexts, negs, 0.1)
    finally:
        torch.set_num_threads(threads)
    assert_close(w_in, e_in, tol=Tol(1e-11, 1e-9), msg="w_in")
    assert_close(w_out, e_out, tol=Tol(1e-11, 1e-9), msg="w_out")
    assert abs(loss.item() - e_loss) <= 1e-9 * abs(e_loss)


def _run_window_batch(w_in, w_out, centers, contexts, negs, lr):
    return OPS.sgns_update_(w_in, w_out, torch.tensor(centers), torch.tensor(contexts), torch.tensor(negs), None,
                            negs.shape[-1], lr, 0, True, 0, True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("dim", [1, 7, 16, 29, 100, 131])
def test_window_batch_matches_reference(dtype, dim, rng, cpu_isa):
    """Skip-gram's window batch against the reference on ids that repeat within a window
    and across centers (one thread: centers in order). Vectors of std 1 at dim 16 give
    logits of std 4: saturated targets (no update) occur beside the others."""
    vocab, n, slots, k = 12, 30, 6, 4
    for _ in range(REDRAWS):
        w_in, w_out = _tables(rng, vocab, dim, dtype)
        if dim == 16:
            w_in, w_out = w_in * 2, w_out * 2
        centers, contexts, _ = _colliding_batch(rng, vocab, n, slots, k, True)
        contexts[rng.random(contexts.shape) < 0.3] = -1
        contexts[3] = -1                                   # a center without contexts: no example
        negs = rng.integers(0, vocab, (n, k))
        margins = []
        e_in, e_out, e_loss = ref.sgns_window_update(to_np(w_in), to_np(w_out), centers, contexts, negs, 0.05, margins)
        if _clear_of_cutoff(margins, dtype):
            break
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loss = _run_window_batch(w_in, w_out, centers, contexts, negs, 0.05)
    finally:
        torch.set_num_threads(threads)
    tol = Tol(1e-11, 1e-9) if dtype == torch.float64 else Tol(1e-5, 1e-4)
    assert_close(w_in, e_in, tol=tol, msg="w_in")
    assert_close(w_out, e_out, tol=tol, msg="w_out")
    assert abs(loss.item() - e_loss) <= (1e-9 if dtype == torch.float64 else 1e-5) * abs(e_loss)


def test_window_batch_is_not_the_pair_order(rng):
    """The window batch takes every logit from the rows as they stand at the center; the
    pair order (and the batch computed pair by pair) would differ. Guards the test above
    against a reference that collapsed into the pair order."""
    vocab, dim, n, slots, k = 12, 8, 10, 4, 3
    w_in, w_out = _tables(rng, vocab, dim, torch.float64)
    centers, contexts, _ = _colliding_batch(rng, vocab, n, slots, k, True)
    negs = rng.integers(0, vocab, (n, k))
    batch = ref.sgns_window_update(to_np(w_in), to_np(w_out), centers, contexts, negs, 0.1)
    # the same pairs, one at a time, in word2vec.c's orientation (input: the context)
    pair_in, pair_out = to_np(w_in), to_np(w_out)
    for c, row, neg in zip(centers, contexts, negs):
        for o in row:
            pair_in, pair_out, _ = ref.sgns_update(pair_in, pair_out, [o], [[c]], neg[None, None], 0.1)
    assert not np.allclose(batch[0], pair_in, rtol=1e-6, atol=1e-9)


def _token_stream(rng, length, vocab, window):
    """A token stream: sentences of 1-9 tokens, radii in [0, window] (0: no context)."""
    tokens = rng.integers(0, vocab, length)
    sentence = np.repeat(np.arange(length), rng.integers(1, 10, length))[:length]
    radius = rng.integers(0, window + 1, length)
    return tokens, sentence, radius


@pytest.mark.parametrize("kind", ["sg", "sg-batch", "cbow"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("start, stop", [(0, 120), (37, 90), (0, 5), (115, 120), (60, 60)])
def test_stream_update_equals_the_contexts_form(kind, dtype, start, stop, rng):
    """The stream form reads the windows that the reference's stream_contexts builds and
    draws the same negatives: with one thread it equals the contexts form exactly, and
    with explicit negatives (fp64) it matches the sequential reference."""
    vocab, dim, length, window, k = 25, 12, 120, 3, 4
    cbow, batch = kind == "cbow", kind == "sg-batch"
    tokens, sentence, radius = _token_stream(rng, length, vocab, window)
    if stop > start:  # the first center has a context, so that something must be updated
        radius[start], sentence[start + 1] = window, sentence[start]
    contexts = ref.stream_contexts(tokens, sentence, radius, start, stop, window)
    stream = [torch.tensor(a) for a in (tokens, sentence, radius)]
    table = torch.tensor(rng.integers(0, vocab, 50))
    negs = rng.integers(0, vocab, (stop - start, k) if cbow or batch else (stop - start, 2 * window + 1, k))
    w_in, w_out = _tables(rng, vocab, dim, dtype)
    start_in, start_out = to_np(w_in), to_np(w_out)
    matrix_op = OPS.cbow_update_ if cbow else OPS.sgns_update_
    stream_op = OPS.cbow_stream_update_ if cbow else OPS.sgns_stream_update_
    extra = () if cbow else (True, 0, batch)  # compute_loss, max_streams, window_batch
    a_in, a_out, b_in, b_out = w_in.clone(), w_out.clone(), w_in.clone(), w_out.clone()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a_loss = matrix_op(a_in, a_out, stream[0][start:stop], torch.tensor(contexts), None, table, k, 0.1, 5, *extra)
        b_loss = stream_op(b_in, b_out, *stream, start, stop, window, None, table, k, 0.1, 5, *extra)
        loss = stream_op(w_in, w_out, *stream, start, stop, window, torch.tensor(negs), None, k, 0.1, 5, *extra)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a_in, b_in) and torch.equal(a_out, b_out) and a_loss.item() == b_loss.item()
    if start == stop:
        assert np.array_equal(to_np(b_out), start_out) and b_loss.item() == 0
        return
    assert not np.array_equal(to_np(b_out), start_out), "nothing was updated"
    if dtype == torch.float64:
        fn = ref.cbow_update if cbow else ref.sgns_window_update if batch else ref.sgns_update
        e_in, e_out, e_loss = fn(start_in, start_out, tokens[start:stop], contexts, negs, 0.1)
        assert_close(w_in, e_in, tol=Tol(1e-11, 1e-9), msg="w_in")
        assert_close(w_out, e_out, tol=Tol(1e-11, 1e-9), msg="w_out")
        assert abs(loss.item() - e_loss) <= 1e-9 * abs(e_loss)


@pytest.mark.parametrize("kind", ["sg", "sg-batch", "cbow"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_stream_update_on_padded_rows_equals_packed(kind, dtype, rng):
    """Tables whose rows are padded (a row stride past dim, as Word2Vec's aligned rows)
    give exactly the packed tables' result with one thread, and the padding is untouched."""
    vocab, dim, length, window, k = 25, 21, 150, 3, 4
    cbow, batch = kind == "cbow", kind == "sg-batch"
    tokens, sentence, radius = _token_stream(rng, length, vocab, window)
    stream = [torch.tensor(a) for a in (tokens, sentence, radius)]
    table = torch.tensor(rng.integers(0, vocab, 50))
    w_in, w_out = _tables(rng, vocab, dim, dtype)
    fill = float(rng.normal())
    p_in, p_out = (torch.full((vocab, dim + 11), fill, dtype=dtype)[:, :dim] for _ in range(2))
    p_in.copy_(w_in)
    p_out.copy_(w_out)
    op = OPS.cbow_stream_update_ if cbow else OPS.sgns_stream_update_
    extra = () if cbow else (True, 0, batch)  # compute_loss, max_streams, window_batch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loss = op(w_in, w_out, *stream, 0, length, window, None, table, k, 0.1, 5, *extra)
        p_loss = op(p_in, p_out, *stream, 0, length, window, None, table, k, 0.1, 5, *extra)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(p_in, w_in) and torch.equal(p_out, w_out) and p_loss.item() == loss.item()
    for padded in (p_in, p_out):
        whole = torch.as_strided(padded, (vocab, dim + 11), padded.stride())
        assert bool((whole[:, dim:] == fill).all()), "an update wrote past a row's end"


def test_stream_update_bad_inputs():
    w = torch.zeros(10, 4)
    tokens, sentence, radius = torch.arange(10), torch.zeros(10, dtype=torch.long), torch.ones(10, dtype=torch.long)
    tab = torch.arange(10)

    def call(tokens=tokens, sentence=sentence, radius=radius, start=0, stop=10, window=2):
        OPS.sgns_stream_update_(w.clone(), w.clone(), tokens, sentence, radius, start, stop, window, None, tab, 2,
                                0.1, 0)

    call()
    with pytest.raises(USER_ERRORS, match="tokens has 2 dims"):
        call(tokens=tokens[None])
    with pytest.raises(USER_ERRORS, match="sentence has shape"):
        call(sentence=sentence[:9])
    with pytest.raises(USER_ERRORS, match="radius has shape"):
        call(radius=radius[:3])
    with pytest.raises(USER_ERRORS, match="sentence has dtype"):
        call(sentence=sentence.float())
    with pytest.raises(USER_ERRORS, match="start, stop = 4, 11"):
        call(start=4, stop=11)
    with pytest.raises(USER_ERRORS, match="start, stop = 5, 4"):
        call(start=5, stop=4)
    with pytest.raises(USER_ERRORS, match="window is 0"):
        call(window=0)
    with pytest.raises(USER_ERRORS, match=r"radius\[start:stop\] holds values in \[-1, 1\]"):
        call(radius=torch.tensor([1] * 9 + [-1]))
    with pytest.raises(USER_ERRORS, match=r"in \[0, 3\], expected them in \[0, window\] = \[0, 2\]"):
        call(radius=torch.tensor([0] * 9 + [3]))
    call(radius=torch.tensor([0] * 9 + [3]), stop=9)  # only the centers' radii matter
    with pytest.raises(USER_ERRORS, match="token id 12 is out of range"):
        call(tokens=torch.tensor([0] * 9 + [12]))
    with pytest.raises(USER_ERRORS, match="tokens holds the id -3"):
        call(tokens=torch.tensor([0] * 9 + [-3]), stop=8)  # a context of the block's last center


@pytest.mark.parametrize("kind", ["sg", "sg-batch", "cbow"])
def test_update_hogwild_loose_and_loss_falls(kind, rng):
    """Many threads, repeated ids, drawn negatives: close to the sequential result, loss falls."""
    cbow = kind == "cbow"
    vocab, dim, n, slots, k = 50, 24, 3000, 4, 5
    w_in, w_out = _tables(rng, vocab, dim, torch.float32)
    w_in *= 0.1
    w_out *= 0.1
    # planted structure: center c's context is (c + 1) % vocab or (c + 2) % vocab
    centers = torch.tensor(rng.integers(0, vocab, n))
    contexts = torch.stack([(centers + 1) % vocab, (centers + 2) % vocab, centers * 0 - 1, (centers + 1) % vocab], 1)
    table = torch.arange(vocab, dtype=torch.int32).repeat(10)
    op = OPS.cbow_update_ if cbow else OPS.sgns_update_
    extra = (0, True) if kind == "sg-batch" else ()
    losses = [op(w_in, w_out, centers, contexts, None, table, k, 0.05, epoch, True, *extra).item()
              for epoch in range(6)]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("cbow", [False, True], ids=["sg", "cbow"])
def test_update_hogwild_close_to_sequential(cbow, rng):
    """Two threads on a small vocabulary (rows collide): the update stays near the sequential one."""
    vocab, dim, n, slots, k = 40, 32, 400, 4, 5
    w_in, w_out = _tables(rng, vocab, dim, torch.float32)
    centers, contexts, negs = _colliding_batch(rng, vocab, n, slots, k, cbow)
    fn = ref.cbow_update if cbow else ref.sgns_update
    e_in, e_out, _ = fn(to_np(w_in), to_np(w_out), centers, contexts, negs, 0.005)
    start_in, start_out = to_np(w_in), to_np(w_out)
    _run(cbow, w_in, w_out, centers, contexts, negs, 0.005)
    for got, want, start in ((w_in, e_in, start_in), (w_out, e_out, start_out)):
        step = np.linalg.norm(want - start)
        assert np.linalg.norm(to_np(got) - want) <= 0.1 * step


def test_drawn_negatives_are_deterministic_and_from_table(rng):
    vocab, dim = 100, 8
    w_in, w_out = _tables(rng, vocab, dim, torch.float32)
    centers = torch.arange(20)
    contexts = (centers + 1).unsqueeze(1)
    table = torch.tensor([7, 9], dtype=torch.int64)
    a_in, a_out = w_in.clone(), w_out.clone()
    OPS.sgns_update_(a_in, a_out, centers, contexts, None, table, 5, 0.1, 42, True)
    b_in, b_out = w_in.clone(), w_out.clone()
    torch.set_num_threads(1)
    try:
        OPS.sgns_update_(b_in, b_out, centers, contexts, None, table, 5, 0.1, 42, True)
    finally:
        torch.set_num_threads(2)
    assert torch.equal(a_in, b_in) and torch.equal(a_out, b_out)
    changed = (a_out != w_out).any(1).nonzero().flatten().tolist()
    assert set(changed) <= {7, 9} | set(range(1, 21))
    assert {7, 9} <= set(changed)


def _drawn_counts(table, vocab, draws_per_center=5, centers=20000, window_batch=False):
    """How often each id was drawn as a negative, read off a linearised update: D = 1,
    w_in = 1, w_out = 0 and a tiny lr make each draw of t add -lr/2 to w_out[t] (one
    context per center, so the window batch draws as often as the pair order)."""
    lr = 1e-9
    w_in = torch.ones(vocab + 1, 1, dtype=torch.float64)
    w_out = torch.zeros(vocab + 1, 1, dtype=torch.float64)
    c = torch.full((centers,), vocab)                 # id `vocab` is never in the table
    ctx = torch.full((centers, 1), vocab)
    # One thread: Hogwild updates from two threads to one row may lose increments (the
    # draws themselves do not depend on the thread count).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.ops.pyattn.sgns_update_(w_in, w_out, c, ctx, None, table, draws_per_center, lr, 7, False, 0,
                                      window_batch)
    finally:
        torch.set_num_threads(threads)
    return (-2 * w_out[:vocab, 0] / lr).round().numpy()


@pytest.mark.parametrize("window_batch", [False, True], ids=["pairs", "window-batch"])
@pytest.mark.parametrize("kind", ["alias", "slots32", "slots64"])
def test_drawn_negatives_follow_the_noise_distribution(kind, window_batch, rng):
    from pyattn.word2vec.model import alias_table

    vocab = 50
    weights = rng.random(vocab) ** 3 + 0.01
    weights[3] = 0.0                                   # never drawn
    if kind == "alias":
        table = alias_table(weights)
    else:
        slots = np.rint(weights / weights.sum() * 100000).astype(np.int64)
        table = torch.from_numpy(np.repeat(np.arange(vocab), slots)).to(torch.int32 if kind == "slots32" else torch.int64)
        weights = slots.astype(np.float64)
    counts = _drawn_counts(table, vocab, window_batch=window_batch)
    n = counts.sum()
    assert n == 100000
    expected = weights / weights.sum() * n
    assert counts[3] == 0
    # chi-square with 48 degrees of freedom: mean 48, sd ~10; 120 is far in the tail
    keep = expected > 0
    chi2 = float((((counts - expected) ** 2)[keep] / expected[keep]).sum())
    assert chi2 < 120, chi2


def test_alias_table_bad_weights():
    from pyattn.word2vec.model import alias_table

    for bad in ([], [0.0, 0.0], [1.0, -1.0], [np.nan]):
        with pytest.raises(ValueError, match="weights"):
            alias_table(np.array(bad))


@pytest.mark.parametrize("cbow", [False, True], ids=["sg", "cbow"])
def test_update_bad_inputs(cbow):
    op = OPS.cbow_update_ if cbow else OPS.sgns_update_
    w = torch.zeros(10, 4)
    c = torch.arange(3)
    ctx = torch.zeros(3, 2, dtype=torch.long)
    tab = torch.arange(10)
    with pytest.raises(USER_ERRORS, match="w_in has 1 dims"):
        op(torch.zeros(10), w, c, ctx, None, tab, 2, 0.1, 0)
    with pytest.raises(USER_ERRORS, match="w_in has dtype"):
        op(w.half(), w.clone(), c, ctx, None, tab, 2, 0.1, 0)
    with pytest.raises(USER_ERRORS, match="contexts has shape"):
        op(w.clone(), w.clone(), c, ctx[:2], None, tab, 2, 0.1, 0)
    with pytest.raises(USER_ERRORS, match="centers has dtype"):
        op(w.clone(), w.clone(), c.float(), ctx, None, tab, 2, 0.1, 0)
    with pytest.raises(USER_ERRORS, match="need a table"):
        op(w.clone(), w.clone(), c, ctx, None, None, 2, 0.1, 0)
    with pytest.raises(USER_ERRORS, match="token id 10 is out of range"):
        op(w.clone(), w.clone(), c, ctx, None, torch.tensor([10]), 2, 0.1, 0)
    with pytest.raises(USER_ERRORS, match="token id 12 is out of range"):
        op(w.clone(), w.clone(), torch.tensor([12, 1, 2]), ctx, None, tab, 2, 0.1, 0)
    # a negative id is an absent one, skipped: it must not hide an earlier id past the vocabulary
    with pytest.raises(USER_ERRORS, match="token id 12 is out of range"):
        op(w.clone(), w.clone(), torch.tensor([12, -1, 2]), ctx, None, tab, 2, 0.1, 0)
    negs = torch.tensor([[11, 1], [2, 3], [-1, 4]])  # [n, k] for CBOW, [n, slots, k] for skip-gram
    negs = negs if cbow else negs[:, None].expand(3, 2, 2).contiguous()
    with pytest.raises(USER_ERRORS, match="token id 11 is out of range"):
        op(w.clone(), w.clone(), c, ctx, negs, None, 2, 0.1, 0)
    with pytest.raises(USER_ERRORS, match="negatives has shape"):
        op(w.clone(), w.clone(), c, ctx, torch.zeros(3, 1, dtype=torch.long), None, 2, 0.1, 0)
    with pytest.raises(USER_ERRORS, match="table has shape"):
        op(w.clone(), w.clone(), c, ctx, None, torch.zeros(3, 3, dtype=torch.long), 2, 0.1, 0)
    with pytest.raises(USER_ERRORS, match="token id 11 is out of range"):
        op(w.clone(), w.clone(), c, ctx, None, torch.tensor([[0, 11]]), 2, 0.1, 0)
    with pytest.raises(USER_ERRORS, match="lr is"):
        op(w.clone(), w.clone(), c, ctx, None, tab, 2, float("nan"), 0)
    with pytest.raises(USER_ERRORS, match="max_streams is -1"):
        op(w.clone(), w.clone(), c, ctx, None, tab, 2, 0.1, 0, True, -1)
    if not cbow:
        with pytest.raises(USER_ERRORS, match=r"negatives has shape .*\(n, k\) with window_batch"):
            op(w.clone(), w.clone(), c, ctx, torch.zeros(3, 2, 2, dtype=torch.long), None, 2, 0.1, 0, True, 0, True)
        op(w.clone(), w.clone(), c, ctx, torch.zeros(3, 2, dtype=torch.long), None, 2, 0.1, 0, True, 0, True)


# ------------------------------------------------------------------------ sgns_loss


def _loss_inputs(rng, vocab, dim, b, k, dtype):
    w_in, w_out = _tables(rng, vocab, dim, dtype)
    centers = torch.tensor(rng.integers(0, vocab, b))
    contexts = torch.tensor(rng.integers(0, vocab, b))
    negatives = torch.tensor(rng.integers(0, vocab, (b, k)))
    return w_in, w_out, centers, contexts, negatives


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("dim", [3, 64, 100])
def test_sgns_loss_matches_reference(dtype, dim, rng):
    w_in, w_out, c, o, n = _loss_inputs(rng, 20, dim, 33, 4, dtype)
    w_in.requires_grad_(True)
    w_out.requires_grad_(True)
    loss = sgns_loss(w_in, w_out, c, o, n, reduction="none")
    expected = ref.sgns_loss(to_np(w_in), to_np(w_out), c.numpy(), o.numpy(), n.numpy())
    assert_close(loss, expected, msg="loss")
    dloss = rng.normal(size=33)
    loss.backward(torch.tensor(dloss, dtype=dtype))
    e_in, e_out = ref.sgns_loss_grad(to_np(w_in), to_np(w_out), c.numpy(), o.numpy(), n.numpy(), dloss)
    assert_close(w_in.grad, e_in, msg="d input_vectors")
    assert_close(w_out.grad, e_out, msg="d output_vectors")


def test_sgns_loss_equals_autograd_of_formula(rng):
    w_in, w_out, c, o, n = _loss_inputs(rng, 15, 10, 20, 3, torch.float64)
    a = [t.clone().requires_grad_(True) for t in (w_in, w_out)]
    b = [t.clone().requires_grad_(True) for t in (w_in, w_out)]
    ours = sgns_loss(a[0], a[1], c, o, n)
    h = b[0][c]
    formula = (-torch.nn.functional.logsigmoid((b[1][o] * h).sum(-1))
               - torch.nn.functional.logsigmoid(-(b[1][n] @ h.unsqueeze(-1)).squeeze(-1)).sum(-1)).mean()
    ours.backward()
    formula.backward()
    torch.testing.assert_close(ours, formula)
    torch.testing.assert_close(a[0].grad, b[0].grad)
    torch.testing.assert_close(a[1].grad, b[1].grad)


def test_sgns_loss_gradcheck(rng):
    w_in, w_out, c, o, n = _loss_inputs(rng, 8, 5, 6, 3, torch.float64)
    w_in.requires_grad_(True)
    w_out.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: sgns_loss(a, b, c, o, n, reduction="none"), (w_in, w_out))


def test_sgns_loss_opcheck(rng):
    w_in, w_out, c, o, n = _loss_inputs(rng, 8, 5, 6, 3, torch.float64)
    w_in.requires_grad_(True)
    w_out.requires_grad_(True)
    torch.library.opcheck(OPS.sgns_loss_fwd, (w_in, w_out, c, o, n))


def test_update_opcheck(rng):
    w_in, w_out, c, o, _ = _loss_inputs(rng, 8, 5, 6, 3, torch.float32)
    torch.library.opcheck(OPS.sgns_update_, (w_in, w_out, c, o.unsqueeze(1), None, torch.arange(8), 3, 0.1, 1, True),
                          test_utils=("test_schema", "test_faketensor"))


def test_sgns_loss_sparse_embedding(rng):
    """nn.Embedding(sparse=True) modules: sparse gradients equal to the dense ones; SGD steps work."""
    vocab, dim = 30, 8
    emb_in = torch.nn.Embedding(vocab, dim, sparse=True)
    emb_out = torch.nn.Embedding(vocab, dim, sparse=True)
    _, _, c, o, n = _loss_inputs(rng, vocab, dim, 16, 4, torch.float32)
    loss = sgns_loss(emb_in, emb_out, c, o, n)
    loss.backward()
    assert emb_in.weight.grad.is_sparse and emb_out.weight.grad.is_sparse
    dense = [emb_in.weight.detach().clone().requires_grad_(True), emb_out.weight.detach().clone().requires_grad_(True)]
    sgns_loss(dense[0], dense[1], c, o, n).backward()
    torch.testing.assert_close(emb_in.weight.grad.to_dense(), dense[0].grad)
    torch.testing.assert_close(emb_out.weight.grad.to_dense(), dense[1].grad)
    opt = torch.optim.SGD(list(emb_in.parameters()) + list(emb_out.parameters()), lr=0.5)
    first = loss.item()
    for _ in range(20):
        opt.zero_grad()
        loss = sgns_loss(emb_in, emb_out, c, o, n)
        loss.backward()
        opt.step()
    assert loss.item() < first


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sgns_loss_sparse_matches_reference(reduction, dtype, rng):
    """The sparse path computes its gradients in the forward pass for an upstream gradient
    of 1 on the reduced loss; any other upstream gradient must rescale them exactly."""
    vocab, b = 25, 19
    w_in, w_out, c, o, n = _loss_inputs(rng, vocab, 7, b, 4, dtype)
    c[3] = o[3] = n[3, 1] = 5   # repeated rows
    for upstream in (None, 0.37):
        a = [w_in.clone().requires_grad_(True), w_out.clone().requires_grad_(True)]
        loss = sgns_loss(a[0], a[1], c, o, n, reduction=reduction, sparse=True)
        if reduction == "none":
            dloss = rng.normal(size=b) if upstream else np.ones(b)
            loss.backward(torch.tensor(dloss, dtype=dtype))
        else:
            loss.backward(None if upstream is None else torch.tensor(upstream, dtype=dtype))
            dloss = np.full(b, (upstream or 1.0) / (b if reduction == "mean" else 1))
        assert a[0].grad.is_sparse and a[1].grad.is_sparse
        e_in, e_out = ref.sgns_loss_grad(to_np(w_in), to_np(w_out), c.numpy(), o.numpy(), n.numpy(), dloss)
        assert_close(a[0].grad.to_dense(), e_in, msg="d input_vectors")
        assert_close(a[1].grad.to_dense(), e_out, msg="d output_vectors")


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_sgns_loss_on_device(device, dtype, sparse, rng):
    """Loss and gradients on every device (on CUDA, the warp-per-example kernel), with a
    repeated row and a dim that is not a multiple of the warp; an out-of-range id raises."""
    vocab, b = 40, 37
    w_in, w_out, c, o, n = _loss_inputs(rng, vocab, 45, b, 5, dtype)
    c[3] = o[3] = n[3, 1] = 5
    a = [t.to(device).requires_grad_(True) for t in (w_in, w_out)]
    loss = sgns_loss(a[0], a[1], c.to(device), o.to(device), n.to(device), reduction="none", sparse=sparse)
    assert_close(loss, ref.sgns_loss(to_np(w_in), to_np(w_out), c.numpy(), o.numpy(), n.numpy()), msg="loss")
    dloss = rng.normal(size=b)
    loss.backward(torch.tensor(dloss, dtype=dtype, device=device))
    e_in, e_out = ref.sgns_loss_grad(to_np(w_in), to_np(w_out), c.numpy(), o.numpy(), n.numpy(), dloss)
    grads = [g.to_dense() if g.is_sparse else g for g in (a[0].grad, a[1].grad)]
    assert_close(grads[0], e_in, msg="d input_vectors")
    assert_close(grads[1], e_out, msg="d output_vectors")
    o_bad = o.clone()
    o_bad[7] = vocab + 3
    with pytest.raises(USER_ERRORS, match=f"token id {vocab + 3} is out of range"):
        sgns_loss(a[0], a[1], c.to(device), o_bad.to(device), n.to(device))
    n_bad = n.clone()
    n_bad[2, 0] = -1  # no absent ids here: a negative one is an error too (as nn.Embedding's)
    with pytest.raises(USER_ERRORS, match="token id -1 is out of range"):
        sgns_loss(a[0], a[1], c.to(device), o.to(device), n_bad.to(device))


def test_sgns_loss_sparse_retain_graph_and_one_table(rng):
    """A second backward (retain_graph) adds the same gradient again and does not alias the
    first one's values; with one table frozen only the other gets a gradient."""
    w_in, w_out, c, o, n = _loss_inputs(rng, 12, 5, 9, 3, torch.float64)
    a = [w_in.clone().requires_grad_(True), w_out.clone().requires_grad_(True)]
    loss = sgns_loss(a[0], a[1], c, o, n, sparse=True)
    loss.backward(retain_graph=True)
    first = [t.grad.to_dense().clone() for t in a]
    values = a[1].grad._values()
    loss.backward()
    assert a[1].grad._values().data_ptr() != values.data_ptr()
    for t, g in zip(a, first):
        torch.testing.assert_close(t.grad.to_dense(), 2 * g)
    frozen = w_in.clone()
    w = w_out.clone().requires_grad_(True)
    sgns_loss(frozen, w, c, o, n, sparse=True).backward()
    torch.testing.assert_close(w.grad.to_dense(), first[1])
    with torch.no_grad():
        torch.testing.assert_close(sgns_loss(a[0], a[1], c, o, n, sparse=True), loss)


def test_sgns_loss_fwd_grad_opcheck(rng):
    w_in, w_out, c, o, n = _loss_inputs(rng, 8, 5, 6, 3, torch.float64)
    torch.library.opcheck(OPS.sgns_loss_fwd_grad, (w_in, w_out, c, o, n, 0.25))
    loss, d_h, d_u = OPS.sgns_loss_fwd_grad(w_in, w_out, c, o, n, 0.25)
    e_h, e_u = OPS.sgns_loss_bwd(torch.full((6,), 0.25, dtype=torch.float64), w_in, w_out, c, o, n)
    torch.testing.assert_close(loss, OPS.sgns_loss_fwd(w_in, w_out, c, o, n))
    torch.testing.assert_close(d_h, e_h)
    torch.testing.assert_close(d_u, e_u)


def test_sgns_loss_sparse_adam(rng):
    """SparseAdam on nn.Embedding(sparse=True) tables: same steps as with torch's own
    sparse embedding gradients. In float64: Adam divides by sqrt(v), so where a gradient
    is near 0 a rounding difference of fp32 becomes a visible step difference."""
    vocab, dim = 40, 6
    _, _, c, o, n = _loss_inputs(rng, vocab, dim, 32, 4, torch.float64)
    mods = []
    for _ in range(2):
        torch.manual_seed(0)
        mods.append(tuple(torch.nn.Embedding(vocab, dim, sparse=True, dtype=torch.float64) for _ in range(2)))
    opts = [torch.optim.SparseAdam(list(a.parameters()) + list(b.parameters()), lr=0.05) for a, b in mods]
    for _ in range(5):
        for (e_in, e_out), opt, ours in zip(mods, opts, (True, False)):
            opt.zero_grad()
            if ours:
                loss = sgns_loss(e_in, e_out, c, o, n)
            else:
                h = e_in(c)
                loss = (-torch.nn.functional.logsigmoid((e_out(o) * h).sum(-1))
                        - torch.nn.functional.logsigmoid(-(e_out(n) @ h.unsqueeze(-1)).squeeze(-1)).sum(-1)).mean()
            loss.backward()
            opt.step()
    for x, y in zip(mods[0], mods[1]):
        torch.testing.assert_close(x.weight, y.weight, rtol=1e-10, atol=1e-12)


def test_sgns_loss_compile(rng):
    w_in, w_out, c, o, n = _loss_inputs(rng, 12, 6, 10, 2, torch.float32)
    w_in.requires_grad_(True)
    fn = torch.compile(lambda a, b: sgns_loss(a, b, c, o, n), fullgraph=True, backend="aot_eager")
    out = fn(w_in, w_out)
    torch.testing.assert_close(out, sgns_loss(w_in, w_out, c, o, n))
    out.backward()
    assert w_in.grad is not None


def test_sgns_loss_bad_inputs():
    w = torch.zeros(10, 4)
    c = torch.arange(3)
    n = torch.zeros(3, 2, dtype=torch.long)
    with pytest.raises(USER_ERRORS, match="output_vectors has dim"):
        sgns_loss(w, torch.zeros(10, 5), c, c, n)
    with pytest.raises(USER_ERRORS, match="negatives has shape"):
        sgns_loss(w, w, c, c, n[:2])
    with pytest.raises(USER_ERRORS, match="contexts has shape"):
        sgns_loss(w, w, c, c[:2], n)
    with pytest.raises(USER_ERRORS, match="token id 10 is out of range"):
        sgns_loss(w, w, c, torch.tensor([0, 10, 1]), n)
    with pytest.raises(USER_ERRORS, match="reduction"):
        sgns_loss(w, w, c, c, n, reduction="avg")
    with pytest.raises(TypeError, match="input_vectors"):
        sgns_loss([1.0], w, c, c, n)
