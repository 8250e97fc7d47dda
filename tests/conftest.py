"""Shared test machinery for every pyattn op.

* ``TOLERANCES``: per-dtype (atol, rtol) used to compare a kernel against its float64
  NumPy reference (``pyattn/reference``).
* ``cpu_isa`` fixture: each CPU code path (generic, AVX2, AVX-512, AVX512-BF16) this CPU has.
* ``device`` fixture: "cpu" always; "cuda" only when torch sees a GPU and pyattn was
  built with CUDA, otherwise the CUDA cases are reported as skipped with the reason.
* Fresh but reproducible randomness: each run draws a run seed (printed in the header,
  fixed with ``PYATTN_TEST_SEED=N``); each test's ``seed``/``rng``/``gen`` fixtures mix
  it with the test's node id, so a failure reruns identically and every run tries new
  inputs. torch's default generator is seeded with the same per-test seed.
* ``assert_close`` (kernel vs reference) and ``assert_err_within_2x_torch`` (bf16/fp16:
  our error against the fp64 truth is at most twice torch's own same-dtype error).

Test modules import the helpers with ``from conftest import ...``.
"""

from __future__ import annotations

import functools
import os
import secrets
import zlib
from typing import NamedTuple

import numpy as np
import pytest
import torch

try:
    from hypothesis import settings as _hyp_settings

    # Kernels are timed by benchmarks, not by hypothesis: no per-example deadline.
    _hyp_settings.register_profile("pyattn", deadline=None, print_blob=True)
    _hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pyattn"))
except ImportError:  # hypothesis tests then fail at import, which says what is missing
    pass


# ---------------------------------------------------------------------------- seeds

# Set in the environment so that subprocesses (and pytest-xdist workers) share it.
RUN_SEED = int(os.environ.setdefault("PYATTN_TEST_SEED", str(secrets.randbelow(2**31))))


def node_seed(nodeid: str) -> int:
    return (RUN_SEED * 1_000_003 + zlib.crc32(nodeid.encode())) % 2**63


def pytest_report_header(config):
    return f"pyattn: PYATTN_TEST_SEED={RUN_SEED} (export it to redraw this run's inputs)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        rep.sections.append(
            ("pyattn seed", f"PYATTN_TEST_SEED={RUN_SEED}, node seed {node_seed(item.nodeid)} for {item.nodeid}")
        )


@pytest.fixture
def seed(request) -> int:
    """A seed unique to this test case and this run."""
    return node_seed(request.node.nodeid)


@pytest.fixture(autouse=True)
def _seed_torch_default_generator(seed):
    """torch's default generator (nn module initializers, torch.randn without a
    generator) seeded per test too, so that such draws also rerun identically."""
    torch.manual_seed(seed)


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture
def gen(seed) -> torch.Generator:
    """A CPU torch.Generator; draw on CPU and move, so results do not depend on device."""
    return torch.Generator().manual_seed(seed)


# -------------------------------------------------------------------------- devices


def _cuda_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    try:
        import pyattn

        if not pyattn.build_info()["cuda"]:
            return "pyattn was built without CUDA"
    except Exception as e:  # an import failure is reported by the tests themselves
        return f"pyattn not importable: {e!r}"
    return None


CUDA_SKIP_REASON = _cuda_skip_reason()
HAS_CUDA = CUDA_SKIP_REASON is None

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason=f"CUDA tests: {CUDA_SKIP_REASON}")),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device to test on. On CUDA, fp32 runs strict for the test: torch.backends.cudnn.
    allow_tf32 (True by default) lets pyattn's LSTM kernels use TF32, as nn.LSTM does,
    and the checks against fp64 hold fp32 to fp32's tolerance; TF32 has its own tests."""
    if request.param != "cuda":
        yield request.param
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield request.param
    finally:
        torch.backends.cudnn.allow_tf32 = before


# ----------------------------------------------------------------------- torch.compile


@functools.cache
def _compile_unusable_reason() -> str | None:
    """Why torch.compile itself does not work here (no C++ compiler for inductor, ...), or None."""
    try:
        torch.compile(lambda t: torch.sin(t) + 1.0, fullgraph=True)(torch.ones(3))
    except Exception as e:  # noqa: BLE001 - any failure means compile itself is unusable here
        return f"torch.compile itself is unusable here: {type(e).__name__}: {e}"
    return None


@pytest.fixture
def fresh_dynamo():
    """For torch.compile tests: skips them where torch.compile itself does not work, and
    resets dynamo so that each test compiles afresh."""
    reason = _compile_unusable_reason()
    if reason:
        pytest.skip(reason)
    torch._dynamo.reset()


# ------------------------------------------------------------------- attention shapes

# (batch, heads_q, heads_kv, lq, lk, d, dv): lq = 1 (decoding), lq != lk both ways, odd
# and unequal head dims, GQA and MQA, sizes one past a block (64 queries / backward keys,
# 128 forward keys) and exact multiples.
ATTENTION_SHAPES = [
    (1, 1, 1, 1, 1, 8, 8),
    (2, 2, 2, 1, 37, 16, 16),
    (1, 2, 2, 17, 17, 33, 33),
    (2, 4, 2, 70, 130, 32, 24),
    (1, 2, 1, 130, 70, 64, 64),
    (1, 3, 3, 65, 65, 7, 5),
    (1, 1, 1, 128, 192, 64, 64),
    (1, 2, 1, 40, 300, 16, 16),  # three forward key blocks (128, 128, 44): rescales across blocks
]


def attention_shape_id(s) -> str:
    return "B{}Hq{}Hkv{}Lq{}Lk{}D{}Dv{}".format(*s)


# --------------------------------------------------------------------- CPU code paths

CPU_ISAS = ["generic", "avx2", "avx512", "avx512_bf16"]  # lowest to highest


def _cpu_isa_params():
    """Every CPU code path; those above this CPU's best are reported as skipped."""
    try:
        import pyattn

        best = pyattn.build_info()["cpu_isa_best"]
    except Exception:  # an import failure is reported by the tests themselves
        best = "generic"
    top = CPU_ISAS.index(best) if best in CPU_ISAS else 0
    return [pytest.param(isa, marks=pytest.mark.skipif(i > top, reason=f"this CPU's best ISA is {best}"))
            for i, isa in enumerate(CPU_ISAS)]


@pytest.fixture(params=_cpu_isa_params())
def cpu_isa(request) -> str:
    """Runs the test on one CPU code path (pyattn.set_cpu_isa), then restores the previous one."""
    import pyattn

    before = pyattn.build_info()["cpu_isa"]
    pyattn.set_cpu_isa(request.param)
    assert pyattn.build_info()["cpu_isa"] == request.param
    yield request.param
    pyattn.set_cpu_isa(before)


# ---------------------------------------------------------------------------- dtypes

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
LOW_PRECISION = [torch.bfloat16, torch.float16]


class Tol(NamedTuple):
    """|actual - expected| <= atol * magnitude + rtol * |expected|, elementwise.

    ``atol`` is in units of ``magnitude``: the size of the values being compared (by
    default max|expected|), so one table serves softmax outputs in [0, 1], gradients
    scaled by ``scale * |dy|`` and sums over broadcast dims alike.
    """

    atol: float
    rtol: float


TOLERANCES: dict[torch.dtype, Tol] = {
    torch.float64: Tol(atol=1e-12, rtol=1e-10),
    torch.float32: Tol(atol=2e-6, rtol=2e-5),
    # Low precision: about one unit in the last place at 1.0 (eps: bf16 7.8e-3, fp16
    # 9.8e-4) plus room for a gradient built from a rounded y; rtol two ulps.
    torch.bfloat16: Tol(atol=1e-2, rtol=1.6e-2),
    torch.float16: Tol(atol=2e-3, rtol=2e-3),
}


def to_np(t: torch.Tensor) -> np.ndarray:
    """float64 NumPy copy of a tensor (bool tensors stay bool)."""
    t = t.detach().cpu()
    return t.numpy().copy() if t.dtype == torch.bool else t.to(torch.float64).numpy().copy()


def randn(shape, dtype, device="cpu", gen=None, std=1.0) -> torch.Tensor:
    """Normal samples drawn in float64 on CPU, then rounded to ``dtype`` and moved."""
    t = torch.randn(tuple(shape), dtype=torch.float64, generator=gen) * std
    return t.to(dtype).to(device)


def _as_np(a) -> np.ndarray:
    return to_np(a) if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)


def assert_close(actual, expected, dtype=None, *, magnitude=None, tol: Tol | None = None, msg: str = ""):
    """Compare a kernel result with a float64 reference using the dtype's tolerance.

    NaNs must sit in the same places; infinities must match exactly.
    ``dtype`` defaults to ``actual``'s; ``magnitude`` to max|expected| (finite part).
    """
    if dtype is None:
        dtype = actual.dtype
    tol = tol or TOLERANCES[dtype]
    a, e = _as_np(actual), _as_np(expected)
    assert a.shape == e.shape, f"{msg}: shape {a.shape} != expected {e.shape}"
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    assert np.array_equal(nan_a, nan_e), (
        f"{msg}: NaN mismatch: {int(nan_a.sum())} NaNs in actual, {int(nan_e.sum())} in expected; "
        f"first differing index {tuple(int(i[0]) for i in np.nonzero(nan_a != nan_e))}"
    )
    inf_e = np.isinf(e)
    assert np.array_equal(a[inf_e], e[inf_e]) and not np.isinf(a[~inf_e]).any(), f"{msg}: infinities differ"
    fin = ~(nan_e | inf_e)
    if not fin.any():
        return
    if magnitude is None:
        magnitude = float(np.abs(e[fin]).max())
    err = np.abs(a - e)
    bound = tol.atol * magnitude + tol.rtol * np.abs(e)
    bad = fin & (err > bound)
    if bad.any():
        idx = np.unravel_index(np.argmax(np.where(fin, err - bound, -np.inf)), e.shape)
        raise AssertionError(
            f"{msg}: {int(bad.sum())} of {int(fin.sum())} elements out of tolerance for {dtype} "
            f"(atol {tol.atol:g} x magnitude {magnitude:.3g}, rtol {tol.rtol:g}); worst at {tuple(map(int, idx))}: "
            f"actual {a[idx]!r}, expected {e[idx]!r}, |diff| {err[idx]:.3g}; max |diff| {err[fin].max():.3g}"
        )


def assert_err_within_2x_torch(actual, torch_same_dtype, truth, *, exclude=None, factor=2.0, msg: str = ""):
    """The bf16/fp16 rule: max|actual - truth| <= factor * max|torch - truth| + one ulp.

    ``torch_same_dtype`` is torch's own computation of the op in the low-precision dtype;
    ``truth`` is float64. ``exclude`` (bool, broadcastable) drops elements where torch's
    version is not meaningful (e.g. NaN on fully masked rows). The one-ulp floor (at
    max|truth|) keeps cases where torch happens to be exact from demanding exactness.
    """
    dtype = actual.dtype
    a, t, e = _as_np(actual), _as_np(torch_same_dtype), _as_np(truth)
    keep = np.ones(e.shape, dtype=bool)
    if exclude is not None:
        keep &= ~np.broadcast_to(_as_np(exclude).astype(bool), e.shape)
    if not keep.any():
        return
    assert np.isfinite(a[keep]).all(), f"{msg}: non-finite values in the kept elements"
    assert np.isfinite(t[keep]).all(), f"{msg}: torch's own result is non-finite where kept (bad exclude?)"
    err_ours = float(np.abs(a - e)[keep].max())
    err_torch = float(np.abs(t - e)[keep].max())
    floor = torch.finfo(dtype).eps * float(np.abs(e[keep]).max())
    assert err_ours <= factor * err_torch + floor, (
        f"{msg}: max error vs fp64 truth {err_ours:.3g} > {factor:g} x torch's {dtype} error "
        f"{err_torch:.3g} + {floor:.3g}"
    )
