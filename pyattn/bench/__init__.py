"""Benchmarks of pyattn's ops against the peers users run today (``python -m pyattn.bench``).

cases/    one module per op, listing its Cases (see cases/__init__.py)
timing    interleaved median timing, cache flushing, peak memory
ceilings  the machine's copy bandwidth and GEMM rates, measured in the same run
runner    one Case -> one Row (agreement, times, rates, memory, target)
report    table, results.json, plot
"""
