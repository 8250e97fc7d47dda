"""pyattn.models: TransformerLM, LSTMLM and Seq2Seq, each built on pyattn's modules and on
torch's. Both builds share a state_dict and compute the same logits and gradients; the
models keep their promises (causality, state carry-over, padding that does not leak);
the decoding step interface reproduces forward; a few optimizer steps learn."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from conftest import Tol, assert_close
from pyattn.models.lstm_lm import LSTMLM
from pyattn.models.seq2seq import Seq2Seq
from pyattn.models.transformer_lm import TransformerLM

IMPLS = ["pyattn", "torch"]
# Logits pass through a few layers of GEMMs whose summation order differs between the two
# builds: a little looser than one kernel's fp32 tolerance.
MODEL_TOL = Tol(atol=2e-5, rtol=1e-4)
FP64_TOL = Tol(atol=1e-10, rtol=1e-9)
B = 3  # rows


@dataclass(frozen=True)
class Case:
    """build(impl, seed) -> model (dropout 0); inputs(gen) -> forward's args; decode(args)
    -> (start's args, the tokens fed to step [B, K], forward's positions they match)."""

    build: Callable
    inputs: Callable
    decode: Callable


def seeded(make: Callable, seed: int):
    """The model ``make()`` builds with parameters drawn from ``seed`` (global RNG restored)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def lm_tokens(gen, vocab: int, t: int):
    return (torch.randint(0, vocab, (B, t), generator=gen),)


def lm_decode(args, prefix: int = 3):
    (x,) = args
    return (x[:, :prefix],), x[:, prefix - 1:], slice(prefix - 1, None)


def s2s_inputs(gen, src_vocab=19, tgt_vocab=23, s=7, t=6):
    src = torch.randint(0, src_vocab, (B, s), generator=gen)
    lengths = torch.randint(1, s + 1, (B,), generator=gen)
    lengths[0] = s  # one row fills the batch
    return src, lengths, torch.randint(0, tgt_vocab, (B, t), generator=gen)


def s2s_decode(args):
    src, lengths, tgt = args
    return (src, lengths), tgt, slice(None)


def transformer(positions):
    return lambda impl, seed: seeded(lambda: TransformerLM(23, d_model=16, n_heads=2, n_layers=2, max_len=12,
                                                           positions=positions, dropout=0.0, attention=impl), seed)


CASES = {
    "transformer-sinusoidal": Case(transformer("sinusoidal"), lambda g: lm_tokens(g, 23, 10), lm_decode),
    "transformer-learned": Case(transformer("learned"), lambda g: lm_tokens(g, 23, 10), lm_decode),
    "lstm": Case(lambda impl, seed: seeded(lambda: LSTMLM(23, hidden_size=16, num_layers=2, dropout=0.0, lstm=impl),
                                           seed),
                 lambda g: lm_tokens(g, 23, 9), lm_decode),
    "lstm-prefix1": Case(lambda impl, seed: seeded(lambda: LSTMLM(23, hidden_size=16, num_layers=1, dropout=0.0,
                                                                  lstm=impl), seed),
                         lambda g: lm_tokens(g, 23, 5), lambda args: lm_decode(args, prefix=1)),
    "seq2seq-bidirectional-2layers": Case(
        lambda impl, seed: seeded(lambda: Seq2Seq(19, 23, emb_size=12, hidden_size=16, num_layers=2, dropout=0.0,
                                                  impl=impl), seed),
        s2s_inputs, s2s_decode),
    "seq2seq-unidirectional": Case(
        lambda impl, seed: seeded(lambda: Seq2Seq(19, 23, emb_size=12, hidden_size=16, bidirectional_encoder=False,
                                                  dropout=0.0, impl=impl), seed),
        s2s_inputs, s2s_decode),
}


def logits_of(model, args):
    out = model(*args)
    return out[0] if isinstance(out, tuple) else out  # LSTMLM also returns its state


# ------------------------------------------------------------------- both builds agree


@pytest.mark.parametrize("source", IMPLS)
@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_loads_across_builds_same_logits_and_grads(name, source, gen, seed):
    """In float64, so that the two builds' different summation orders stay far below the
    tolerance (in fp32 a gradient element near 1e-6 of a tensor of scale 1e-4 flaked)."""
    case = CASES[name]
    target = IMPLS[1 - IMPLS.index(source)]
    a = case.build(source, seed).double()
    b = case.build(target, seed + 1).double()  # different parameters until it loads a's
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())
    args = case.inputs(gen)
    la, lb = logits_of(a, args), logits_of(b, args)
    assert_close(lb, la, tol=FP64_TOL, msg=f"{name}: logits, {source} state_dict in the {target} build")
    weights = torch.randn(la.shape, generator=gen, dtype=torch.float64)
    (la * weights).sum().backward()
    (lb * weights).sum().backward()
    grads_b = dict(b.named_parameters())
    for pname, p in a.named_parameters():
        assert_close(grads_b[pname].grad, p.grad, tol=FP64_TOL, msg=f"{name}: grad of {pname}")


def test_tied_output_is_the_embedding_parameter():
    t = TransformerLM(11, d_model=8, n_heads=2, n_layers=1)
    assert t.output.weight is t.token_embedding.weight
    m = LSTMLM(11, hidden_size=8, num_layers=1)
    assert m.output.weight is m.embedding.weight
    counted = {id(p) for p in t.parameters()}  # counted once by parameters() and optimizers
    assert len(counted) == len(list(t.parameters()))


# ------------------------------------------------------------------------ TransformerLM


@pytest.mark.parametrize("attention", IMPLS)
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_transformer_is_causal(positions, attention, gen, seed):
    model = transformer(positions)(attention, seed)
    x = torch.randint(0, 23, (B, 10), generator=gen)
    cut = int(torch.randint(1, 10, (1,), generator=gen))
    y = x.clone()
    y[:, cut:] = (x[:, cut:] + torch.randint(1, 23, y[:, cut:].shape, generator=gen)) % 23  # every one changed
    before, after = model(x), model(y)
    assert_close(after[:, :cut], before[:, :cut], tol=MODEL_TOL, msg=f"positions before {cut}")
    assert not torch.allclose(after[:, cut:], before[:, cut:])


def test_transformer_positions_in_state_dict_only_when_learned():
    fixed = TransformerLM(11, d_model=8, n_heads=2, n_layers=1, max_len=6)
    learned = TransformerLM(11, d_model=8, n_heads=2, n_layers=1, max_len=6, positions="learned")
    assert not any("position" in k for k in fixed.state_dict())
    assert learned.state_dict()["position_embedding.weight"].shape == (6, 8)
    table = fixed.position_table  # sin/cos pairs: each pair's squares sum to 1
    assert_close(table[:, 0], torch.arange(6.0).sin(), msg="the fastest sine, sin(p)")
    assert_close(table[:, 0::2] ** 2 + table[:, 1::2] ** 2, torch.ones(6, 4), msg="sin^2 + cos^2")


def test_transformer_longer_than_max_len_raises():
    model = TransformerLM(11, d_model=8, n_heads=2, n_layers=1, max_len=6)
    with pytest.raises(ValueError, match=r"tokens has 7 positions.*max_len=6"):
        model(torch.randint(0, 11, (2, 7)))


# ------------------------------------------------------------------------------ LSTMLM


@pytest.mark.parametrize("lstm", IMPLS)
def test_lstm_state_carries_over(lstm, gen, seed):
    model = CASES["lstm"].build(lstm, seed)
    x = torch.randint(0, 23, (B, 9), generator=gen)
    cut = int(torch.randint(1, 9, (1,), generator=gen))
    whole, (h, c) = model(x)
    first, state = model(x[:, :cut])
    second, (h2, c2) = model(x[:, cut:], state)
    assert h.shape == c.shape == (B, 2, 16)  # rows first
    assert_close(torch.cat([first, second], dim=1), whole, tol=MODEL_TOL, msg="logits, two halves vs whole")
    assert_close(h2, h, tol=MODEL_TOL, msg="h")
    assert_close(c2, c, tol=MODEL_TOL, msg="c")


# ----------------------------------------------------------------------------- Seq2Seq


@pytest.mark.parametrize("impl", IMPLS)
def test_seq2seq_padding_does_not_leak(impl, gen, seed):
    model = CASES["seq2seq-bidirectional-2layers"].build(impl, seed)
    src, lengths, tgt = s2s_inputs(gen)
    lengths[1] = 2  # a row with padding
    padded = torch.arange(src.shape[1]) >= lengths[:, None]
    other = src.masked_scatter(padded, torch.randint(0, 19, (int(padded.sum()),), generator=gen))
    logits = model(src, lengths, tgt)
    assert_close(model(other, lengths, tgt), logits, tol=MODEL_TOL, msg="new tokens in the padding")
    # Each row as if alone and unpadded: the key padding hides exactly the padded positions.
    for i in range(B):
        alone = model(src[i : i + 1, : int(lengths[i])], lengths[i : i + 1], tgt[i : i + 1])
        assert_close(alone[0], logits[i], tol=MODEL_TOL, msg=f"row {i} (length {int(lengths[i])}) alone")


# ------------------------------------------------------------------------- decoding steps


def select_rows(state, idx):
    """What a search does to the state: every tensor's rows (dim 0) picked by ``idx``."""
    if isinstance(state, torch.Tensor):
        return state.index_select(0, idx)
    if isinstance(state, dict):
        return {k: select_rows(v, idx) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(select_rows(v, idx) for v in state)
    return state


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(CASES))
def test_steps_reproduce_forward(name, impl, gen, seed):
    """start + step token by token gives forward's log-probs, also after the rows are
    reordered and duplicated (as beam search does) between steps."""
    case = CASES[name]
    model = case.build(impl, seed).eval()
    args = case.inputs(gen)
    start_args, fed, positions = case.decode(args)
    with torch.no_grad():
        expected = torch.log_softmax(logits_of(model, args), dim=-1)[:, positions]  # [B, K, V]
        step, state = model.start(*start_args)
        rows = torch.arange(B)
        for k in range(fed.shape[1]):
            if k == 1:  # a beam-search reorder: rows permuted, some repeated
                idx = torch.randint(0, B, (B + 2,), generator=gen)
                state, rows = select_rows(state, idx), rows[idx]
            log_probs, state = step(fed[rows, k], state)
            assert_close(log_probs, expected[rows, k], tol=MODEL_TOL, msg=f"step {k}")


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("name", ["transformer-learned", "lstm", "seq2seq-bidirectional-2layers"])
def test_a_few_steps_learn_a_repeating_sequence(name, gen, seed):
    model = CASES[name].build("pyattn", seed)
    period = torch.randperm(19, generator=gen)[:4]  # ids valid in every case's vocabularies
    x = period.repeat(3)[None].expand(2, -1)  # [2, 12]: the same 4 tokens again and again
    if name.startswith("seq2seq"):
        args, target = (x[:, :5], torch.tensor([5, 3]), x[:, :-1]), x[:, 1:]
    else:
        args, target = (x[:, :-1],), x[:, 1:]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(40):
        logits = logits_of(model, args)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # From about log 23 (a uniform guess) to near log 4 or below: at least the four tokens'
    # own distribution is learnt; most runs also learn the order (loss near 0). About 6 %
    # of seq2seq runs stop near log 4 after 40 steps, hence the margin of 0.3.
    assert losses[-1] < math.log(4) + 0.3, f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}"


# --------------------------------------------------------------------------- bad inputs


def _transformer():
    return TransformerLM(11, d_model=8, n_heads=2, n_layers=1, max_len=6)


def _lstm():
    return LSTMLM(11, hidden_size=8, num_layers=2)


def _seq2seq():
    return Seq2Seq(11, 13, emb_size=8, hidden_size=8)


BAD_INPUTS = {
    "transformer attention": (lambda: TransformerLM(11, attention="flash"), ValueError, "attention must be one of"),
    "transformer positions": (lambda: TransformerLM(11, positions="rotary"), ValueError, "positions must be one of"),
    "transformer heads": (lambda: TransformerLM(11, d_model=10, n_heads=4), ValueError, "n_heads=4"),
    "transformer vocab_size": (lambda: TransformerLM(0), ValueError, "vocab_size must be a positive int"),
    "transformer float tokens": (lambda: _transformer()(torch.rand(2, 3)), ValueError, "tokens must be an integer"),
    "transformer empty tokens": (lambda: _transformer()(torch.zeros(2, 0, dtype=torch.long)), ValueError,
                                 "tokens has 0 positions"),
    "transformer start in training": (lambda: _transformer().start(torch.ones(2, 3, dtype=torch.long)),
                                      RuntimeError, "call model.eval"),
    "transformer empty prefix": (lambda: _transformer().eval().start(torch.ones(2, 0, dtype=torch.long)),
                                 ValueError, "prefix must be"),
    "transformer step past max_len": (
        lambda: _transformer().eval().step(torch.ones(2, dtype=torch.long), {"history": torch.ones(2, 6).long()}),
        ValueError, "past max_len=6"),
    "lstm impl": (lambda: LSTMLM(11, lstm="cudnn"), ValueError, "lstm must be one of"),
    "lstm dropout": (lambda: LSTMLM(11, dropout=1.5), ValueError, "dropout must be"),
    "lstm 1-d tokens": (lambda: _lstm()(torch.ones(4, dtype=torch.long)), ValueError, r"tokens must be .*\[B, T\]"),
    "lstm state shape": (lambda: _lstm()(torch.ones(3, 4, dtype=torch.long), (torch.rand(2, 3, 8),) * 2),
                         ValueError, r"state must be \(h, c\), each of shape \(3, 2, 8\)"),
    "lstm step tokens": (lambda: _lstm().eval().step(torch.ones(3, 1, dtype=torch.long), None), ValueError,
                         "tokens must be \\[N\\]"),
    "seq2seq impl": (lambda: Seq2Seq(11, 13, impl="tf"), ValueError, "impl must be one of"),
    "seq2seq lengths range": (lambda: _seq2seq()(torch.ones(2, 4, dtype=torch.long), torch.tensor([4, 5]),
                                                 torch.ones(2, 3, dtype=torch.long)), ValueError,
                              r"src_lengths must lie in \[1, 4\]"),
    "seq2seq zero length": (lambda: _seq2seq()(torch.ones(2, 4, dtype=torch.long), torch.tensor([0, 4]),
                                               torch.ones(2, 3, dtype=torch.long)), ValueError, "src_lengths"),
    "seq2seq lengths shape": (lambda: _seq2seq()(torch.ones(2, 4, dtype=torch.long), torch.tensor([4]),
                                                 torch.ones(2, 3, dtype=torch.long)), ValueError,
                              "src_lengths must be an integer tensor"),
    "seq2seq tgt rows": (lambda: _seq2seq()(torch.ones(2, 4, dtype=torch.long), torch.tensor([4, 2]),
                                            torch.ones(3, 3, dtype=torch.long)), ValueError, "tgt_in must be"),
    "seq2seq step tokens": (lambda: _seq2seq().eval().step(torch.ones(3, dtype=torch.long),
                                                           {"memory": torch.rand(2, 4, 16)}),
                            ValueError, r"tokens must be \[N\] with N=2"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_raise_naming_the_argument(name):
    call, error, message = BAD_INPUTS[name]
    with pytest.raises(error, match=message):
        call()
