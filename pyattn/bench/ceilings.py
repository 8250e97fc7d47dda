"""The machine's ceilings, measured in the same run as the cases they judge.

- copy: ``dst.copy_(src)`` on fp32 tensors far larger than the caches; GB/s counts the
  bytes read plus the bytes written. The destination is allocated once, so this is the
  memory system's rate, not the page-fault rate of fresh allocations.
- gemm_fp32 / gemm_bf16: ``a @ b`` on square matrices (2·n³ FLOP per product), n as
  large as the mode allows while one product stays short (see _gemm_gflops).

Results are cached per (device, quick) for the life of the process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch

from . import timing
from .timing import MiB

# (copy bytes per tensor, largest GEMM n, seconds one GEMM may take) by (device type, quick).
_SIZES = {
    ("cpu", True): (128 * MiB, 2048, 0.5),
    ("cpu", False): (256 * MiB, 4096, 2.0),
    ("cuda", True): (256 * MiB, 8192, 0.05),
    ("cuda", False): (1024 * MiB, 8192, 0.2),
}

_LABELS = {"copy": "bw", "gemm_fp32": "fp32 GEMM", "gemm_bf16": "bf16 GEMM"}


@dataclass(frozen=True)
class Ceilings:
    device: str
    copy_gbps: float          # bytes read + written per second, 1e9
    gemm_fp32_gflops: float
    gemm_bf16_gflops: float
    copy_mib: int             # size of each of src and dst
    gemm_fp32_n: int
    gemm_bf16_n: int

    def value(self, key: str) -> float:
        return {"copy": self.copy_gbps, "gemm_fp32": self.gemm_fp32_gflops,
                "gemm_bf16": self.gemm_bf16_gflops}[key]

    @staticmethod
    def label(key: str) -> str:
        return _LABELS[key]

    @staticmethod
    def key_for(unit: str, dtype: torch.dtype, override: Optional[str] = None) -> str:
        """Which ceiling judges a row: bytes -> copy; FLOP -> the GEMM of its precision."""
        if override is not None:
            return override
        if unit == "B":
            return "copy"
        return "gemm_bf16" if dtype in (torch.bfloat16, torch.float16) else "gemm_fp32"

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"copy {self.copy_gbps:.1f} GB/s (2 x {self.copy_mib} MiB fp32), "
            f"fp32 GEMM {self.gemm_fp32_gflops:.0f} GFLOP/s (n={self.gemm_fp32_n}), "
            f"bf16 GEMM {self.gemm_bf16_gflops:.0f} GFLOP/s (n={self.gemm_bf16_n})"
        )


_cache: dict[tuple[str, bool], Ceilings] = {}


def _gemm_gflops(dtype: torch.dtype, device: str, n_max: int, seconds: float,
                 budget: timing.Budget) -> tuple[float, int]:
    """(GFLOP/s, n) of ``a @ b`` for the largest power-of-two n <= n_max whose product is
    predicted to take at most ``seconds`` (a CPU without native bf16 runs bf16 GEMM
    orders of magnitude slower; the probe must not stall the run there)."""
    gen = torch.Generator(device=device).manual_seed(0)
    probe = timing.Budget(warmup=1, min_repeats=3, max_repeats=3, seconds=0.0)

    def rate(n: int, b: timing.Budget, best: bool) -> float:
        a = torch.randn(n, n, generator=gen, device=device).to(dtype)
        w = torch.randn(n, n, generator=gen, device=device).to(dtype)
        out = torch.empty(n, n, dtype=dtype, device=device)
        (t,) = timing.time_interleaved([lambda: torch.matmul(a, w, out=out)], device, b)
        # the probe takes the best call: a busy machine's stray slow call must not stop it
        return 2.0 * n**3 / ((t.min_ms if best else t.median_ms) * 1e-3)

    n = 512  # smaller products are dominated by per-call overhead on a busy machine
    while n < n_max and 2.0 * (2 * n) ** 3 / rate(n, probe, best=True) <= seconds:
        n *= 2
    return rate(n, budget, best=False) / 1e9, n


def measure(device: str, quick: bool) -> Ceilings:
    key = (str(torch.device(device)), quick)
    if key in _cache:
        return _cache[key]
    copy_bytes, n_max, gemm_s = _SIZES[(torch.device(device).type, quick)]
    budget = timing.QUICK if quick else timing.FULL
    src = torch.ones(copy_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.zeros_like(src)  # touched, so no page faults inside the timed copy
    (t,) = timing.time_interleaved([lambda: dst.copy_(src)], device, budget)
    copy_gbps = 2.0 * copy_bytes / (t.median_ms * 1e-3) / 1e9
    del src, dst
    fp32, n32 = _gemm_gflops(torch.float32, device, n_max, gemm_s, budget)
    bf16, n16 = _gemm_gflops(torch.bfloat16, device, n_max, gemm_s, budget)
    ceil = Ceilings(device=key[0], copy_gbps=copy_gbps, gemm_fp32_gflops=fp32,
                    gemm_bf16_gflops=bf16, copy_mib=copy_bytes // MiB, gemm_fp32_n=n32,
                    gemm_bf16_n=n16)
    _cache[key] = ceil
    return ceil
