"""Batched greedy and beam search over one step-function interface shared by every model.

A model decodes through a *step function*::

    step(tokens: LongTensor [N], state) -> (log_probs: FloatTensor [N, V], new_state)

It reads one new token per row (N rows) and returns the log-probabilities (natural log,
normalised, so every entry <= 0) of the next token of each row, and the state after that
token. ``state`` is any nesting of tuples (named tuples too), lists and dicts whose leaves
are tensors with the row dim first ([N, ...]) or None. Beam search tiles a state's rows
for the beams and reorders them with ``index_select(0, rows)`` on every tensor
(:func:`map_state`).

The batch size B is the row count of the state's tensors. A state without tensors (None,
an unconditional LM) takes B from ``bos`` when it is a LongTensor [B], else B = 1. The
search runs on the device of the state's tensors, else of ``bos``, else the CPU.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]  # (tokens [N], state) -> (log_probs [N, V], state)


def map_state(state: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """The same nesting as ``state`` with ``fn`` applied to every tensor; None stays None."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # a named tuple
        return type(state)(*(map_state(s, fn) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(s, fn) for s in state)
    if isinstance(state, dict):
        return type(state)((key, map_state(s, fn)) for key, s in state.items())
    raise TypeError(
        f"state holds a {type(state).__name__}; expected tensors (row dim first), tuples, lists, dicts or None"
    )


def greedy_search(
    step: StepFn, state: Any, bos: int | torch.Tensor, eos: int, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding: each row takes its most likely next token until it emits ``eos`` or
    has ``max_len`` tokens.

    Returns (tokens LongTensor [B, L], lengths LongTensor [B]) on the search device: row b's
    tokens are tokens[b, :lengths[b]], without bos and ending with eos when it was emitted
    (a row that never emits eos has length max_len); positions past a row's length hold eos.
    L is the longest length. Finished rows are still fed to ``step`` (as eos) until every
    row has finished, so that the batch keeps its shape.
    """
    _check_int("max_len", max_len, minimum=1)
    _check_int("eos", eos, minimum=0)
    tokens, _ = _first_tokens(state, bos)
    n_rows = tokens.numel()
    finished = torch.zeros(n_rows, dtype=torch.bool, device=tokens.device)
    lengths = torch.full((n_rows,), max_len, dtype=torch.long, device=tokens.device)
    emitted = []
    for t in range(1, max_len + 1):
        log_probs, state = step(tokens, state)
        _check_log_probs(log_probs, n_rows, eos)
        tokens = log_probs.argmax(dim=1).masked_fill(finished, eos)
        emitted.append(tokens)
        lengths = torch.where((tokens == eos) & ~finished, t, lengths)
        finished |= tokens == eos
        if bool(finished.all()):
            break
    return torch.stack(emitted, dim=1), lengths


def beam_search(
    step: StepFn,
    state: Any,
    bos: int | torch.Tensor,
    eos: int,
    beam_size: int,
    max_len: int,
    n_best: int = 1,
    length_penalty: float = 1.0,
) -> list[list[tuple[torch.Tensor, float]]]:
    """Beam search of width ``beam_size`` for each of the B batch items, all batched.

    A hypothesis's score is (sum of its token log-probs) / length ** length_penalty, where
    the length counts its tokens after bos including the eos; a hypothesis still open after
    ``max_len`` tokens is complete too, with length max_len and no eos.

    Each step extends every live beam by every token and ranks the candidates of each batch
    item by summed log-prob. Candidates ending in eos that rank among the top beam_size are
    set aside as complete; the best beam_size candidates not ending in eos stay live (so
    there are beam_size live beams while enough candidates have a finite log-prob).

    Stopping rule, per batch item: stop once it holds n_best complete hypotheses and no live
    beam can still beat the n_best-th of them. As log-probs are <= 0, a live beam with
    summed log-prob s after t tokens ends with a score of at most
    max(s / (t+1) ** length_penalty, s / max_len ** length_penalty). Every item stops after
    max_len steps. With beam_size at least the number of possible sequences the result is
    therefore the exact n_best under this score (tests check it against exhaustive search).

    Returns a list (length B) of lists of (tokens LongTensor [length] on the CPU, score),
    best first: n_best of them, or fewer where fewer sequences of finite log-prob exist.
    """
    _check_int("eos", eos, minimum=0)
    _check_int("beam_size", beam_size, minimum=1)
    _check_int("max_len", max_len, minimum=1)
    _check_int("n_best", n_best, minimum=1)
    if n_best > beam_size:
        raise ValueError(f"beam_search: n_best ({n_best}) must not exceed beam_size ({beam_size})")
    if not (isinstance(length_penalty, (int, float)) and math.isfinite(length_penalty)):
        raise ValueError(f"beam_search: length_penalty must be a finite number, got {length_penalty!r}")
    bos_tokens, device = _first_tokens(state, bos)
    batch, k = bos_tokens.numel(), beam_size
    batch_index = torch.arange(batch, device=device)[:, None]  # [B, 1]
    rank = torch.arange(2 * k, device=device)[None, :]  # [1, 2k]: candidate rank, best first

    # Row b * k + j of the step's batch is beam j of item b.
    state = map_state(state, lambda s: s.repeat_interleave(k, dim=0))
    tokens = bos_tokens.repeat_interleave(k)  # [B*k]
    beam_sum = None  # [B, k]: summed log-prob of each live beam; -inf = no beam
    beam_tokens = torch.full((batch, k, max_len), eos, dtype=torch.long, device=device)  # eos-padded
    done = None  # the n_best complete hypotheses: (score [B, n_best] best first, -inf = none yet;
    #              tokens [B, n_best, max_len] eos-padded; length [B, n_best])

    for t in range(1, max_len + 1):
        log_probs, state = step(tokens, state)
        _check_log_probs(log_probs, batch * k, eos)
        vocab = log_probs.shape[1]
        if beam_sum is None:  # at t = 1 only beam 0 is live: the others would be copies of it
            dtype = torch.promote_types(log_probs.dtype, torch.float32)  # sums stay at >= fp32
            beam_sum = torch.full((batch, k), -math.inf, dtype=dtype, device=device)
            beam_sum[:, 0] = 0.0
            done = (
                torch.full((batch, n_best), -math.inf, dtype=dtype, device=device),
                torch.full((batch, n_best, max_len), eos, dtype=torch.long, device=device),
                torch.zeros((batch, n_best), dtype=torch.long, device=device),
            )
        candidates = beam_sum[:, :, None] + log_probs.to(beam_sum.dtype).reshape(batch, k, vocab)
        n_top = min(2 * k, k * vocab)  # at most k candidates end in eos: 2k hold k that do not
        top_sum, top_index = candidates.view(batch, k * vocab).topk(n_top, dim=1)  # [B, n_top]
        parent, token = top_index // vocab, top_index % vocab
        top_tokens = beam_tokens[batch_index, parent]  # [B, n_top, max_len]: parents' tokens
        top_tokens[:, :, t - 1] = token
        ends = token == eos

        completed = torch.where(ends & (rank[:, :n_top] < k), top_sum / t**length_penalty, -math.inf)
        done = _keep_best(done, completed, top_tokens, torch.full_like(token, t))

        beam_sum, live = torch.where(ends, -math.inf, top_sum).topk(k, dim=1)  # [B, k], best first
        beam_tokens = top_tokens[batch_index, live]
        if t == max_len:  # the open beams are complete too, without eos
            done = _keep_best(done, beam_sum / t**length_penalty, beam_tokens, torch.full_like(live, t))
            break
        bound = torch.maximum(beam_sum / (t + 1) ** length_penalty, beam_sum / max_len**length_penalty)
        finished = done[0][:, -1] >= bound.max(dim=1).values  # [B]; also true with no live beam
        if bool(finished.all()):
            break
        beam_sum = beam_sum.masked_fill(finished[:, None], -math.inf)  # a finished item grows nothing
        rows = (batch_index * k + parent.gather(1, live)).view(-1)  # [B*k]: each new beam's parent row
        state = map_state(state, lambda s: s.index_select(0, rows))
        tokens = token.gather(1, live).view(-1)

    return _as_lists(*done)


def _keep_best(done, new_score, new_tokens, new_length):
    """``done`` (score, tokens, length) with the new complete hypotheses (score [B, M],
    -inf = none; tokens [B, M, max_len]; length [B, M]) merged in, keeping the n_best."""
    score, tokens, length = done
    n_best = score.shape[1]
    merged = torch.cat([score, new_score], dim=1)
    best_score, best = merged.topk(n_best, dim=1)
    batch_index = torch.arange(score.shape[0], device=score.device)[:, None]
    return (
        best_score,
        torch.cat([tokens, new_tokens], dim=1)[batch_index, best],
        torch.cat([length, new_length], dim=1)[batch_index, best],
    )


def _as_lists(score, tokens, length) -> list[list[tuple[torch.Tensor, float]]]:
    score, tokens, length = score.tolist(), tokens.cpu(), length.tolist()
    return [
        [(tokens[b, i, : length[b][i]].clone(), score[b][i]) for i in range(len(score[b])) if score[b][i] > -math.inf]
        for b in range(len(score))
    ]


def _first_tokens(state: Any, bos: int | torch.Tensor) -> tuple[torch.Tensor, torch.device]:
    """(bos tokens LongTensor [B] on the search device, that device), checking that
    ``state``'s tensors agree on their row count and ``bos`` on B."""
    found: list[torch.Tensor] = []
    map_state(state, lambda s: found.append(s) or s)  # collects the leaves, in order
    if any(s.dim() == 0 for s in found):
        raise ValueError("state holds a 0-dim tensor; every state tensor needs the row dim first")
    rows = {s.shape[0] for s in found}
    if len(rows) > 1:
        raise ValueError(f"state's tensors disagree on the row count (dim 0): {sorted(rows)}")
    if isinstance(bos, torch.Tensor):
        if bos.dim() != 1 or bos.dtype != torch.long:
            raise ValueError(f"bos must be an int or a LongTensor [B], got {bos.dtype} of shape {tuple(bos.shape)}")
        if rows and rows != {bos.shape[0]}:
            raise ValueError(f"bos has {bos.shape[0]} rows, the state has {rows.pop()}")
        device = found[0].device if found else bos.device
        return bos.to(device), device
    _check_int("bos", bos, minimum=0)
    device = found[0].device if found else torch.device("cpu")
    return torch.full((rows.pop() if rows else 1,), bos, dtype=torch.long, device=device), device


def _check_log_probs(log_probs: torch.Tensor, n_rows: int, eos: int) -> None:
    if not isinstance(log_probs, torch.Tensor) or not log_probs.is_floating_point() or log_probs.dim() != 2:
        raise ValueError(
            f"step must return log_probs as a float tensor [N, V], got {getattr(log_probs, 'shape', log_probs)!r}"
        )
    if log_probs.shape[0] != n_rows:
        raise ValueError(f"step returned log_probs for {log_probs.shape[0]} rows, was given {n_rows} tokens")
    if eos >= log_probs.shape[1]:
        raise ValueError(f"eos ({eos}) is not a token of the step's vocabulary of {log_probs.shape[1]}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
