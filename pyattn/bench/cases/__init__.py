"""The benchmark's case registry.

Each op contributes one module here, named after the op (``cases/<op>.py``), which
defines::

    def cases(device: str) -> list[Case]

Listing cases must be cheap: a Case holds how to build its inputs (``inputs``), not the
inputs themselves, so one case's tensors are alive only while it runs. Modules are
found with pkgutil; a module whose import fails (its op not built yet, a missing
optional dependency) is skipped with the reason, and the other ops still run.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

import torch

_DTYPE_NAMES = {
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
}


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


@dataclass(frozen=True)
class Reference:
    """A third call timed beside ours and the peer in the same run, for a target that
    is "ours within ``max_ratio`` of this" (e.g. the bare GEMM a step needs, or a copy
    into a fresh output, which pays the same first-touch page cost)."""

    name: str
    call: Callable[[Any], Any]      # call(inputs); its result is ignored
    max_ratio: float                # ours ms <= max_ratio * reference ms


@dataclass(frozen=True)
class Target:
    """What ours must reach on a row, each part only if given: at least ``speedup``
    times the peer, at least ``ceiling_frac`` of the row's machine ceiling, and within
    ``reference.max_ratio`` of the reference's time."""

    speedup: Optional[float] = None
    ceiling_frac: Optional[float] = None
    reference: Optional[Reference] = None


@dataclass(frozen=True)
class Case:
    op: str
    name: str                       # human-readable, unique within (op, device, dtype)
    device: str
    dtype: torch.dtype
    inputs: Callable[[], Any]       # builds the inputs on `device` (once per run of the case)
    ours: Callable[[Any], Any]      # ours(inputs) -> output (tensor or tuple of tensors)
    peer: Callable[[Any], Any]      # peer(inputs) -> the same output, computed the usual way
    peer_name: str
    work: float                     # minimum bytes moved (unit "B") or FLOP (unit "FLOP") per call
    unit: str                       # "B" or "FLOP"
    quick: bool = True              # part of `--quick`
    target: Optional[Target] = None
    # check(ours_out, peer_out) -> None when they agree, else what differs;
    # None means outputs_agree with the per-dtype tolerance below.
    check: Optional[Callable[[Any, Any], Optional[str]]] = None
    flush_cache: bool = False       # evict caches before each timed call (small working sets)
    ceiling: Optional[str] = None   # override of the ceiling that judges this row
    note: Optional[str] = None      # printed under the table (e.g. why a row has no target)

    def __post_init__(self):
        if self.unit not in ("B", "FLOP"):
            raise ValueError(f"Case {self.name!r}: unit must be 'B' or 'FLOP', got {self.unit!r}")

    @property
    def id(self) -> str:
        """Shell- and pytest-friendly identifier: op-device-dtype-name."""
        raw = f"{self.op}-{self.device}-{dtype_name(self.dtype)}-{self.name}"
        return re.sub(r"[^\w.+=-]+", "_", raw).strip("_")


# (rtol, atol as a fraction of the peer's largest |value|): relative atol judges
# gradients and probabilities of any scale alike.
TOLERANCES = {
    torch.float64: (1e-7, 1e-9),
    torch.float32: (1e-4, 1e-5),
    torch.bfloat16: (2e-2, 1e-2),
    torch.float16: (5e-3, 2e-3),
}
# fp32 computed as TF32 on both sides (10-bit mantissas, as fp16's): fp16's tolerance.
TF32_TOLERANCE = TOLERANCES[torch.float16]
_CHUNK = 1 << 22  # elements compared at a time


def _flatten(out: Any) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    raise TypeError(f"a case output must be a tensor or a tuple of tensors, "
                    f"got {type(out).__name__}")


def outputs_agree(ours: Any, peer: Any, tol: Optional[tuple[float, float]] = None) -> Optional[str]:
    """None when every tensor of ``ours`` is close to its peer's, else what differs;
    ``tol`` (rtol, atol fraction) replaces the per-dtype TOLERANCES."""
    a, b = _flatten(ours), _flatten(peer)
    if len(a) != len(b):
        return f"{len(a)} outputs vs the peer's {len(b)}"
    for i, (o, p) in enumerate(zip(a, b)):
        if o.shape != p.shape:
            return f"output {i}: shape {tuple(o.shape)} vs the peer's {tuple(p.shape)}"
        if o.dtype != p.dtype:
            return f"output {i}: dtype {o.dtype} vs the peer's {p.dtype}"
        rtol, atol_frac = tol or TOLERANCES.get(o.dtype, (0.0, 0.0))
        # Chunks keep the temporaries small next to outputs of hundreds of MiB.
        o_flat, p_flat = o.detach().reshape(-1), p.detach().reshape(-1)
        chunks = range(0, o_flat.numel(), _CHUNK)
        wide = torch.float64 if o.dtype == torch.float64 else torch.float32
        scale = 0.0
        for s in chunks:
            pc = p_flat[s:s + _CHUNK].to(wide)
            finite = pc[torch.isfinite(pc)]
            if finite.numel():
                scale = max(scale, finite.abs().max().item())
        atol = atol_frac * scale
        bad, err = 0, 0.0
        for s in chunks:
            oc, pc = o_flat[s:s + _CHUNK].to(wide), p_flat[s:s + _CHUNK].to(wide)
            far = ~torch.isclose(oc, pc, rtol=rtol, atol=atol, equal_nan=True)
            n = int(far.sum())
            if n:
                bad += n
                err = max(err, (oc - pc)[far].abs().nan_to_num(math.inf).max().item())
        if bad:
            return (f"output {i}: {bad} of {o.numel()} values differ (max |diff| {err:.3g}; "
                    f"rtol {rtol:g}, atol {atol:.3g})")
    return None


def discover(ops: Optional[Sequence[str]] = None) -> tuple[dict[str, ModuleType], dict[str, str]]:
    """Imports the case modules (all, or those named in ``ops``).

    Returns ({op: module}, {op: why it was skipped}).
    """
    found: dict[str, ModuleType] = {}
    skipped: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or (ops is not None and info.name not in ops):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as e:  # any failure of one op's module must not stop the others
            skipped[info.name] = f"{type(e).__name__}: {e}"
            continue
        if not callable(getattr(module, "cases", None)):
            skipped[info.name] = "module defines no cases(device) function"
            continue
        found[info.name] = module
    return found, skipped


def available_ops() -> list[str]:
    """Names of every case module, importable or not."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
