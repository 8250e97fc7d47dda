"""pyattn.models.decoding: beam search against exhaustive search on small random models,
greedy search, batching, n-best order, state reordering, eos handling, bad arguments."""

from __future__ import annotations

import math
from collections import namedtuple

import pytest
import torch

from pyattn.models.decoding import beam_search, greedy_search, map_state


class MarkovModel:
    """log P(next | previous token) from a random table; the state is None."""

    def __init__(self, vocab, gen, device):
        self.table = (2 * torch.randn(vocab, vocab, generator=gen, dtype=torch.float64)).log_softmax(-1).to(device)

    def initial_state(self, batch, gen):
        return None

    def __call__(self, tokens, state):
        return self.table[tokens], state


class PrefixHashModel:
    """log P(next | a hash of the whole prefix and a per-item start) from a random table.
    The hash lives in the state, so a search that does not move each beam's state with it
    scores other sequences. The state is nested, with a second copy of the hash and a None
    leaf: the step checks that every tensor was reordered alike."""

    buckets = 1009

    def __init__(self, vocab, gen, device):
        self.device = device
        logits = 2 * torch.randn(self.buckets, vocab, generator=gen, dtype=torch.float64)
        self.table = logits.log_softmax(-1).to(device)

    def _state(self, prefix_hash):
        return {"hash": prefix_hash, "copies": (prefix_hash.double()[:, None], None)}

    def initial_state(self, batch, gen):
        return self._state(torch.randint(0, self.buckets, (batch,), generator=gen).to(self.device))

    def __call__(self, tokens, state):
        assert torch.equal(state["copies"][0][:, 0].long(), state["hash"]), "state leaves reordered differently"
        prefix_hash = (state["hash"] * 31 + tokens + 1) % self.buckets
        return self.table[prefix_hash], self._state(prefix_hash)


MODELS = [MarkovModel, PrefixHashModel]


def item_state(state, b):
    return map_state(state, lambda s: s[b:b + 1])


def exhaustive_search(step, state, bos, eos, max_len, length_penalty):
    """Every complete sequence of one batch item (state rows [1]): those ending at their
    first eos within max_len tokens, and the eos-free ones of exactly max_len tokens,
    as (tokens list, score) best first; score = sum of log-probs / length ** length_penalty."""
    complete = []

    def expand(prefix, token, state, log_prob_sum):
        log_probs, state = step(torch.tensor([token], device=log_probs_device(state)), state)
        for w, log_prob in enumerate(log_probs[0].tolist()):
            sequence, total = prefix + [w], log_prob_sum + log_prob
            if w == eos or len(sequence) == max_len:
                complete.append((sequence, total / len(sequence) ** length_penalty))
            else:
                expand(sequence, w, state, total)

    expand([], bos, state, 0.0)
    return sorted(complete, key=lambda c: -c[1])


def log_probs_device(state):
    found = []
    map_state(state, lambda s: found.append(s.device) or s)
    return found[0] if found else torch.device("cpu")


def sequence_score(step, state, bos, tokens, length_penalty):
    """The score beam search gives ``tokens`` (a list) for one batch item (state rows [1])."""
    inputs = torch.tensor([bos] + tokens[:-1])
    total = 0.0
    for token, target in zip(inputs.tolist(), tokens):
        log_probs, state = step(torch.tensor([token], device=log_probs_device(state)), state)
        total += log_probs[0, target].item()
    return total / len(tokens) ** length_penalty


@pytest.mark.parametrize("model_cls", MODELS)
def test_beam_with_every_sequence_in_the_beam_equals_exhaustive_search(gen, device, model_cls):
    vocab, max_len, batch = int(torch.randint(3, 5, (1,), generator=gen)), 4, 3
    model = model_cls(vocab, gen, device)
    state = model.initial_state(batch, gen)
    bos = torch.randint(0, vocab, (batch,), generator=gen)
    eos = int(torch.randint(0, vocab, (1,), generator=gen))
    length_penalty = float(torch.empty(1).uniform_(-0.5, 2, generator=gen))
    n_best = 5
    results = beam_search(model, state, bos.to(device), eos, beam_size=vocab**max_len, max_len=max_len,
                          n_best=n_best, length_penalty=length_penalty)
    assert len(results) == batch
    for b in range(batch):
        expected = exhaustive_search(model, item_state(state, b), int(bos[b]), eos, max_len, length_penalty)
        got = [(tuple(tokens.tolist()), score) for tokens, score in results[b]]
        # A Markov chain gives sequences with the same transitions the same score, so tied
        # sequences may come in either order: compare the scores by rank, and each sequence's own.
        assert len(got) == n_best and len({tokens for tokens, _ in got}) == n_best
        for (_, score), (_, expected_score) in zip(got, expected):
            assert abs(score - expected_score) <= 1e-9
        exact = {tuple(tokens): score for tokens, score in expected}
        for tokens, score in got:
            assert abs(score - exact[tokens]) <= 1e-9


@pytest.mark.parametrize("model_cls", MODELS)
def test_batched_search_equals_one_item_at_a_time(gen, device, model_cls):
    vocab, batch = 7, 4
    model = model_cls(vocab, gen, device)
    state = model.initial_state(batch, gen)
    bos = torch.randint(0, vocab, (batch,), generator=gen)
    beam_size = int(torch.randint(2, 6, (1,), generator=gen))
    kwargs = dict(eos=int(torch.randint(0, vocab, (1,), generator=gen)), beam_size=beam_size, max_len=7,
                  n_best=int(torch.randint(1, beam_size + 1, (1,), generator=gen)), length_penalty=0.7)
    batched = beam_search(model, state, bos.to(device), **kwargs)
    for b in range(batch):
        alone = beam_search(model, item_state(state, b), bos[b:b + 1].to(device), **kwargs)[0]
        assert [t.tolist() for t, _ in batched[b]] == [t.tolist() for t, _ in alone]
        assert [s for _, s in batched[b]] == pytest.approx([s for _, s in alone], rel=1e-12, abs=0)


@pytest.mark.parametrize("model_cls", MODELS)
def test_n_best_are_distinct_complete_rescored_and_in_order(gen, model_cls):
    vocab, batch, max_len, eos = 6, 3, 8, 0
    model = model_cls(vocab, gen, "cpu")
    state = model.initial_state(batch, gen)
    results = beam_search(model, state, 1, eos, beam_size=5, max_len=max_len, n_best=4, length_penalty=1.0)
    for b, hypotheses in enumerate(results):
        assert len(hypotheses) == 4
        scores = [score for _, score in hypotheses]
        assert scores == sorted(scores, reverse=True)
        sequences = [tokens.tolist() for tokens, _ in hypotheses]
        assert len(set(map(tuple, sequences))) == 4
        for tokens, score in zip(sequences, scores):
            assert eos not in tokens[:-1] and (tokens[-1] == eos or len(tokens) == max_len)
            assert score == pytest.approx(sequence_score(model, item_state(state, b), 1, tokens, 1.0), rel=1e-12)


@pytest.mark.parametrize("model_cls", MODELS)
def test_beam_of_one_never_scores_below_greedy(gen, model_cls):
    # Width 1 keeps greedy's path live until greedy ends it, so greedy's sequence is among
    # its candidates. (Wider beams can drop greedy's path; exhaustive search bounds them.)
    vocab, batch, max_len = 5, 6, 6
    model = model_cls(vocab, gen, "cpu")
    state = model.initial_state(batch, gen)
    bos, eos = torch.randint(0, vocab, (batch,), generator=gen), vocab - 1
    tokens, lengths = greedy_search(model, state, bos, eos, max_len)
    beams = beam_search(model, state, bos, eos, beam_size=1, max_len=max_len, length_penalty=1.0)
    for b in range(batch):
        greedy_tokens = tokens[b, : lengths[b]].tolist()
        greedy_score = sequence_score(model, item_state(state, b), int(bos[b]), greedy_tokens, 1.0)
        assert beams[b][0][1] >= greedy_score - 1e-12


@pytest.mark.parametrize("model_cls", MODELS)
def test_greedy_follows_the_argmax_and_stops_rows_at_eos(gen, device, model_cls):
    vocab, batch, max_len = 4, 8, 9
    model = model_cls(vocab, gen, device)
    state = model.initial_state(batch, gen)
    bos, eos = torch.randint(0, vocab, (batch,), generator=gen), 0
    tokens, lengths = greedy_search(model, state, bos.to(device), eos, max_len)
    assert tokens.shape == (batch, int(lengths.max())) and tokens.dtype == lengths.dtype == torch.long
    for b in range(batch):
        row_state, token, expected = item_state(state, b), torch.tensor([int(bos[b])], device=device), []
        while len(expected) < max_len and (not expected or expected[-1] != eos):
            log_probs, row_state = model(token, row_state)
            token = log_probs.argmax(1)
            expected.append(int(token))
        assert int(lengths[b]) == len(expected)
        assert tokens[b, : len(expected)].tolist() == expected
        assert (tokens[b, len(expected):] == eos).all()  # padding past the row's end


def eos_first_model():
    """Vocabulary 4, eos = 3. After bos (token 0): eos (p 0.73) or token 1 (p 0.27), others
    p < 0.002; after 1: 1 again (p 0.993). So with length_penalty 0 the best is [eos] and
    the second [1, 1, 1, ...]; normalised by length the long one wins."""
    logits = torch.full((4, 4), -6.0, dtype=torch.float64)
    logits[0, 3], logits[0, 1] = 0.0, -1.0
    logits[1, 1] = 0.0
    table = logits.log_softmax(-1)
    return lambda tokens, state: (table[tokens], state)


def test_eos_hypothesis_is_set_aside_and_the_others_go_on():
    step = eos_first_model()
    tokens, lengths = greedy_search(step, None, 0, 3, max_len=5)
    assert tokens.tolist() == [[3]] and lengths.tolist() == [1]
    (hypotheses,) = beam_search(step, None, 0, 3, beam_size=2, max_len=5, n_best=2, length_penalty=0.0)
    assert hypotheses[0][0].tolist() == [3]  # eos at once: the best by summed log-prob
    assert hypotheses[1][0].tolist() == [1, 1, 1, 1, 1]  # the beam that went on, open at max_len
    (hypotheses,) = beam_search(step, None, 0, 3, beam_size=2, max_len=5, n_best=1, length_penalty=1.0)
    assert hypotheses[0][0].tolist() == [1, 1, 1, 1, 1]


def test_each_item_stops_when_no_live_beam_can_beat_its_n_best():
    step, steps_run = eos_first_model(), []

    def counting_step(tokens, state):
        steps_run.append(tokens.numel())
        return step(tokens, state)

    # After bos 0: [eos] completes at -0.32; the live [1] sits at -1.32 and can only fall.
    (hypotheses,) = beam_search(counting_step, None, 0, 3, beam_size=2, max_len=5, length_penalty=0.0)
    assert hypotheses[0][0].tolist() == [3] and len(steps_run) == 1
    # After bos 1 no sequence ends early, so that item runs to max_len while item 0 waits.
    steps_run.clear()
    both = beam_search(counting_step, None, torch.tensor([0, 1]), 3, beam_size=2, max_len=5, length_penalty=0.0)
    assert len(steps_run) == 5 and both[0][0][0].tolist() == [3]
    alone = beam_search(step, None, torch.tensor([1]), 3, beam_size=2, max_len=5, length_penalty=0.0)[0]
    assert both[1][0][0].tolist() == alone[0][0].tolist() == [1, 1, 1, 1, 1]
    assert both[1][0][1] == alone[0][1]


def test_batch_size_comes_from_the_state_then_bos():
    step = eos_first_model()
    assert len(beam_search(step, None, torch.tensor([0, 1, 2]), 3, beam_size=2, max_len=3)) == 3
    assert len(beam_search(step, None, 0, 3, beam_size=2, max_len=3)) == 1
    assert greedy_search(step, [torch.zeros(5, 2), None], 0, 3, max_len=3)[0].shape[0] == 5


def test_map_state_keeps_the_nesting():
    Pair = namedtuple("Pair", "h c")
    state = {"lstm": Pair(torch.arange(3), torch.arange(6).view(3, 2)), "cache": [torch.ones(3), None], "x": None}
    doubled = map_state(state, lambda s: 2 * s)
    assert isinstance(doubled["lstm"], Pair) and isinstance(doubled["cache"], list)
    assert doubled["lstm"].c.tolist() == [[0, 2], [4, 6], [8, 10]] and doubled["cache"][1] is None
    assert doubled["x"] is None and map_state(None, lambda s: s) is None
    with pytest.raises(TypeError, match="state holds a str"):
        map_state({"name": "x"}, lambda s: s)


def test_bad_arguments():
    step = eos_first_model()
    good = dict(bos=0, eos=3, beam_size=2, max_len=4)
    for name, value, message in [
        ("beam_size", 0, "beam_size must be an int >= 1"),
        ("max_len", 0, "max_len must be an int >= 1"),
        ("eos", -1, "eos must be an int >= 0"),
        ("n_best", 3, r"n_best \(3\) must not exceed beam_size \(2\)"),
        ("length_penalty", float("nan"), "length_penalty must be a finite number"),
        ("bos", torch.tensor([[0]]), "bos must be an int or a LongTensor"),
        ("bos", 1.5, "bos must be an int >= 0"),
        ("eos", 4, r"eos \(4\) is not a token of the step's vocabulary of 4"),
    ]:
        with pytest.raises(ValueError, match=message):
            beam_search(step, None, **{**good, name: value})
    with pytest.raises(ValueError, match=r"bos has 2 rows, the state has 3"):
        beam_search(step, torch.zeros(3, 1), **{**good, "bos": torch.tensor([0, 0])})
    with pytest.raises(ValueError, match=r"disagree on the row count \(dim 0\): \[2, 3\]"):
        greedy_search(step, (torch.zeros(3), torch.zeros(2)), 0, 3, 4)
    with pytest.raises(ValueError, match="0-dim tensor"):
        greedy_search(step, torch.tensor(1.0), 0, 3, 4)
    with pytest.raises(ValueError, match="log_probs for 1 rows, was given 2 tokens"):
        beam_search(lambda t, s: (torch.zeros(1, 4), s), None, **{**good, "beam_size": 2})
    with pytest.raises(ValueError, match=r"step must return log_probs as a float tensor \[N, V\]"):
        greedy_search(lambda t, s: (t, s), None, 0, 3, 4)
