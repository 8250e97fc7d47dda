"""Runs one Case: check ours against the peer, time both side by side, measure memory."""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from . import timing
from .cases import Case, Target, dtype_name, outputs_agree
from .ceilings import Ceilings


@dataclass
class Row:
    op: str
    case: str
    id: str
    device: str
    dtype: str
    peer_name: str
    unit: str                         # "B" or "FLOP"
    work: float                       # per call, in `unit`
    ours_ms: Optional[float] = None   # median
    ours_min_ms: Optional[float] = None
    peer_ms: Optional[float] = None
    peer_min_ms: Optional[float] = None
    repeats: Optional[int] = None
    speedup: Optional[float] = None   # peer time / our time
    ours_rate: Optional[float] = None  # GB/s or GFLOP/s (1e9 units per second)
    peer_rate: Optional[float] = None
    ceiling: Optional[str] = None     # which ceiling judges the row (see ceilings.py)
    ceiling_value: Optional[float] = None
    ours_frac: Optional[float] = None  # ours_rate / ceiling_value
    peer_frac: Optional[float] = None
    ours_peak_bytes: Optional[int] = None
    peer_peak_bytes: Optional[int] = None
    mismatch: Optional[str] = None    # None when the outputs agree
    target: Optional[str] = None      # e.g. ">=1.3x", ">=85% bw", "<=1.1x T x torch.mm"
    target_speedup: Optional[float] = None
    target_ceiling_frac: Optional[float] = None
    reference_name: Optional[str] = None   # a third call timed with ours and the peer
    reference_ms: Optional[float] = None   # its median
    reference_ratio: Optional[float] = None  # ours ms / reference ms
    target_reference_ratio: Optional[float] = None
    note: Optional[str] = None
    target_met: Optional[bool] = None
    error: Optional[str] = None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.mismatch is not None

    @property
    def rate_unit(self) -> str:
        return "GB/s" if self.unit == "B" else "GFLOP/s"

    def as_dict(self) -> dict:
        return asdict(self)


def describe_target(target: Target, ceiling: str) -> str:
    ref = target.reference
    parts = [
        None if target.speedup is None else f">={target.speedup:g}x",
        None if target.ceiling_frac is None else f">={target.ceiling_frac * 100:.0f}% {Ceilings.label(ceiling)}",
        None if ref is None else f"<={ref.max_ratio:g}x the time of {ref.name}",
    ]
    return ", ".join(p for p in parts if p is not None)


def _target_met(row: Row) -> bool:
    return (
        row.mismatch is None
        and (row.target_speedup is None or row.speedup >= row.target_speedup)
        and (row.target_ceiling_frac is None or row.ours_frac >= row.target_ceiling_frac)
        and (row.target_reference_ratio is None or row.reference_ratio <= row.target_reference_ratio)
    )


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def run_case(case: Case, ceilings: Ceilings, budget: timing.Budget) -> Row:
    ceiling = Ceilings.key_for(case.unit, case.dtype, case.ceiling)
    row = Row(op=case.op, case=case.name, id=case.id, device=case.device,
              dtype=dtype_name(case.dtype), peer_name=case.peer_name, unit=case.unit,
              work=case.work, ceiling=ceiling, ceiling_value=ceilings.value(ceiling), note=case.note)
    reference = case.target.reference if case.target is not None else None
    if case.target is not None:
        row.target = describe_target(case.target, ceiling)
        row.target_speedup = case.target.speedup
        row.target_ceiling_frac = case.target.ceiling_frac
    if reference is not None:
        row.reference_name = reference.name
        row.target_reference_ratio = reference.max_ratio
    inputs = None
    try:
        inputs = case.inputs()
        ours = lambda: case.ours(inputs)  # noqa: E731
        peer = lambda: case.peer(inputs)  # noqa: E731
        row.mismatch = (case.check or outputs_agree)(ours(), peer())
        # After the check's calls, so one-time costs (lazy init, workspaces) are not counted.
        row.ours_peak_bytes = timing.peak_extra_bytes(ours, case.device)
        row.peer_peak_bytes = timing.peak_extra_bytes(peer, case.device)
        flush = timing.CacheFlusher(case.device) if case.flush_cache else None
        calls = [ours, peer] + ([lambda: reference.call(inputs)] if reference is not None else [])
        t_ours, t_peer, *t_ref = timing.time_interleaved(calls, case.device, budget, flush)
        row.ours_ms, row.ours_min_ms = t_ours.median_ms, t_ours.min_ms
        row.peer_ms, row.peer_min_ms = t_peer.median_ms, t_peer.min_ms
        row.repeats = t_ours.repeats
        row.speedup = t_peer.median_ms / t_ours.median_ms
        row.ours_rate = case.work / (t_ours.median_ms * 1e-3) / 1e9
        row.peer_rate = case.work / (t_peer.median_ms * 1e-3) / 1e9
        row.ours_frac = row.ours_rate / row.ceiling_value
        row.peer_frac = row.peer_rate / row.ceiling_value
        if t_ref:
            row.reference_ms = t_ref[0].median_ms
            row.reference_ratio = t_ours.median_ms / t_ref[0].median_ms
        if case.target is not None:
            row.target_met = _target_met(row)
    except Exception as e:  # one broken case is reported in its row; the rest still run
        row.error = _first_line(e)
    finally:
        del inputs
        gc.collect()
        if timing.is_cuda(case.device):
            torch.cuda.empty_cache()
    return row
