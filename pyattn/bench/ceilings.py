"""The machine's ceilings, measured in the same run as the cases they judge.

- copy: ``dst.copy_(src)`` on fp32 tensors far larger than the caches; GB/s counts the
  bytes read plus the bytes written. The destination is allocated once, so this is the
  memory system's rate, not the page-fault rate of fresh allocations.
- gemm_fp32 / gemm_bf16: ``a @ b`` on square matrices (2·n³ FLOP per product).

Results are cached per (device, quick) for the life of the process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch

from . import timing
from .timing import MiB

# (copy bytes per tensor, fp32 GEMM n, bf16 GEMM n) by (device type, quick).
_SIZES = {
    ("cpu", True): (128 * MiB, 2048, 2048),
    ("cpu", False): (256 * MiB, 4096, 4096),
    ("cuda", True): (256 * MiB, 4096, 4096),
    ("cuda", False): (1024 * MiB, 8192, 8192),
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


def _gemm_gflops(n: int, dtype: torch.dtype, device: str, budget: timing.Budget) -> float:
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=device).to(dtype)
    b = torch.randn(n, n, generator=gen, device=device).to(dtype)
    out = torch.empty(n, n, dtype=dtype, device=device)
    (t,) = timing.time_interleaved([lambda: torch.matmul(a, b, out=out)], device, budget)
    return 2.0 * n**3 / (t.median_ms * 1e-3) / 1e9


def measure(device: str, quick: bool) -> Ceilings:
    key = (str(torch.device(device)), quick)
    if key in _cache:
        return _cache[key]
    copy_bytes, n32, n16 = _SIZES[(torch.device(device).type, quick)]
    budget = timing.QUICK if quick else timing.FULL
    src = torch.ones(copy_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.zeros_like(src)  # touched, so no page faults inside the timed copy
    (t,) = timing.time_interleaved([lambda: dst.copy_(src)], device, budget)
    copy_gbps = 2.0 * copy_bytes / (t.median_ms * 1e-3) / 1e9
    del src, dst
    ceil = Ceilings(
        device=key[0],
        copy_gbps=copy_gbps,
        gemm_fp32_gflops=_gemm_gflops(n32, torch.float32, device, budget),
        gemm_bf16_gflops=_gemm_gflops(n16, torch.bfloat16, device, budget),
        copy_mib=copy_bytes // MiB,
        gemm_fp32_n=n32,
        gemm_bf16_n=n16,
    )
    _cache[key] = ceil
    return ceil
