"""Timers for the benchmark: median and min of repeated calls on CPU or CUDA.

Competing callables are timed in interleaved rounds (ours, peer, ours, peer, ...), so
that a shared machine's slow moments fall on both sides of a ratio alike.
"""

from __future__ import annotations

import ctypes
import gc
import glob
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

MiB = 1 << 20


@dataclass(frozen=True)
class Budget:
    """How long to time: ``warmup`` untimed rounds (the runner has already called each
    callable twice, to check it and to measure its memory), then rounds until at least
    ``min_repeats`` are done and ``seconds`` of measured time have passed, or until
    ``max_repeats``."""

    warmup: int
    min_repeats: int
    max_repeats: int
    seconds: float


QUICK = Budget(warmup=0, min_repeats=3, max_repeats=10, seconds=0.3)
FULL = Budget(warmup=2, min_repeats=7, max_repeats=200, seconds=2.0)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    min_ms: float
    repeats: int


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def sync(device: str | torch.device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def last_level_cache_bytes() -> int:
    """Size of the CPU's largest cache (sysfs), or 32 MiB where it cannot be read."""
    best = 0
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(os.path.join(d, "size")) as f:
                text = f.read().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
        digits = text.rstrip("KMGkmg")
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best or 32 * MiB


class CacheFlusher:
    """Evicts the last-level cache (CPU) or L2 (CUDA) by writing a buffer at least
    twice its size and at least 64 MiB; call it between timed repeats."""

    def __init__(self, device: str | torch.device):
        if is_cuda(device):
            cache = torch.cuda.get_device_properties(device).L2_cache_size
        else:
            cache = last_level_cache_bytes()
        nbytes = max(64 * MiB, 2 * cache)
        self._buf = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
        self._value = 0.0

    def __call__(self) -> None:
        self._value = 1.0 - self._value  # a new value each time, so every line is written
        self._buf.fill_(self._value)


def time_interleaved(
    fns: Sequence[Callable[[], object]],
    device: str | torch.device,
    budget: Budget,
    flush: Optional[Callable[[], None]] = None,
) -> list[Timing]:
    """Times each of ``fns`` (no arguments; results are dropped inside the timed region,
    so freeing them is counted too) in interleaved rounds; one Timing per fn."""
    cuda = is_cuda(device)
    for _ in range(budget.warmup):
        for fn in fns:
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    spent_s = 0.0
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed call would be charged to whoever ran then
    try:
        while len(times[0]) < budget.max_repeats and (
            len(times[0]) < budget.min_repeats or spent_s < budget.seconds
        ):
            for fn, out in zip(fns, times):
                if flush is not None:
                    flush()
                    sync(device)
                if cuda:
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    fn()
                    end.record()
                    end.synchronize()
                    ms = start.elapsed_time(end)
                else:
                    t0 = time.perf_counter()
                    fn()
                    ms = (time.perf_counter() - t0) * 1e3
                out.append(ms)
                spent_s += ms * 1e-3
    finally:
        if gc_was_enabled:
            gc.enable()
    return [Timing(statistics.median(t), min(t), len(t)) for t in times]


def _rss_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """Returns the C heap's free pages to the OS (glibc), so that memory the call reuses
    from earlier frees is faulted in again and shows in the resident set."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: peaks may then miss reused heap memory


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def peak_method(device: str | torch.device) -> Optional[str]:
    """How ``peak_extra_bytes`` measures on this device, or None where it cannot."""
    if is_cuda(device):
        return "torch.cuda.max_memory_allocated minus the bytes allocated before the call"
    if _rss_kib("VmHWM") is not None and _reset_peak_rss():
        return (
            "growth of the process's peak resident set (VmHWM, reset after malloc_trim) "
            "over the call"
        )
    return None


def peak_extra_bytes(fn: Callable[[], object], device: str | torch.device) -> Optional[int]:
    """Extra memory one call of ``fn`` needs at its peak, its result included, beyond
    what was allocated before it; None where this device offers no way to tell."""
    gc.collect()
    sync(device)
    if is_cuda(device):
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return peak
    _malloc_trim()
    if not _reset_peak_rss():
        return None
    base = _rss_kib("VmRSS")
    out = fn()
    hwm = _rss_kib("VmHWM")
    del out
    if base is None or hwm is None:
        return None
    return max(0, hwm - base) * 1024
