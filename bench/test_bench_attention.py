"""pytest-benchmark suite: pyattn's attention against F.scaled_dot_product_attention.

    python -m pytest bench/test_bench_attention.py --benchmark-only

Cases (shapes, peers, FLOP per call) come from pyattn/bench/cases/attention.py, the same
list ``python -m pyattn.bench`` runs; each case is one benchmark group with ours and the
peer, and ``extra_info`` records the FLOP and the achieved GFLOP/s. Before timing ours,
the test checks that both outputs agree.
"""

import pytest
import torch

pyattn = pytest.importorskip("pyattn", reason="pyattn's extension is not built")

from pyattn.bench.cases import attention as attn_cases  # noqa: E402
from pyattn.bench.cases import dtype_name, outputs_agree  # noqa: E402

CASES = attn_cases.cases("cpu")

_live: dict = {}  # inputs of the case being timed (ours and peer run back to back)


def _inputs(case):
    if case.id not in _live:
        _live.clear()
        _live[case.id] = case.inputs()
    return _live[case.id]


@pytest.mark.parametrize("impl", ["ours", "peer"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_attention(benchmark, case, impl):
    inputs = _inputs(case)
    if impl == "ours":
        mismatch = outputs_agree(case.ours(inputs), case.peer(inputs))
        assert mismatch is None, mismatch
    fn = case.ours if impl == "ours" else case.peer
    benchmark.group = f"{case.op} {case.device} {dtype_name(case.dtype)} {case.name}"
    benchmark.extra_info["flops"] = case.work
    benchmark.extra_info["impl"] = "pyattn" if impl == "ours" else case.peer_name
    benchmark(lambda: fn(inputs))
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["GFLOP/s"] = round(case.work / benchmark.stats.stats.median / 1e9, 2)
