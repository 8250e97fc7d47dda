"""pytest-benchmark suites: pyattn's attention and scaled_masked_softmax against their peers.

    python -m pytest bench --benchmark-only          (-k attention: one op)

The cases (shapes, masks, peers, work per call) are those ``python -m pyattn.bench``
runs, listed once in pyattn/bench/cases/<op>.py, on the CPU and, where pyattn has CUDA,
on the GPU. Each case is one benchmark group holding ours and the peer; ``extra_info``
carries the work per call (bytes or FLOP) and the achieved rate. The ``ours`` test
first asserts that both outputs agree.
"""

import pytest
import torch

pyattn = pytest.importorskip("pyattn", reason="pyattn's extension is not built")

from pyattn.bench.cases import attention, dtype_name, outputs_agree, scaled_masked_softmax  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and pyattn.build_info()["cuda"] else [])
CASES = [c for module in (attention, scaled_masked_softmax) for d in DEVICES for c in module.cases(d)]

_built: dict = {}  # the current case's inputs only: ours and peer run back to back


def _inputs(case):
    if case.id not in _built:
        _built.clear()
        _built[case.id] = case.inputs()
    return _built[case.id]


@pytest.mark.parametrize("impl", ["ours", "peer"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case(benchmark, case, impl):
    inputs = _inputs(case)
    if impl == "ours":
        mismatch = outputs_agree(case.ours(inputs), case.peer(inputs))
        assert mismatch is None, mismatch
    fn = case.ours if impl == "ours" else case.peer
    cuda = torch.device(case.device).type == "cuda"

    def call():
        fn(inputs)
        if cuda:
            torch.cuda.synchronize()

    benchmark.group = f"{case.op} {case.device} {dtype_name(case.dtype)} {case.name}"
    benchmark.extra_info["bytes" if case.unit == "B" else "flops"] = case.work
    benchmark.extra_info["impl"] = "pyattn" if impl == "ours" else case.peer_name
    benchmark(call)
    if benchmark.stats is not None:  # None under --benchmark-disable
        rate = case.work / benchmark.stats.stats.median / 1e9
        benchmark.extra_info["GB/s" if case.unit == "B" else "GFLOP/s"] = round(rate, 2)
