"""python -m pyattn.bench: every op against the peer a user would otherwise run.

Prints a table, writes results.json and bench.png into --out. The exit status is 1
when any row's outputs disagree with the peer's or a case fails, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

import torch

from . import report, timing
from .cases import available_ops, discover
from .ceilings import measure
from .runner import run_case


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pyattn.bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats, smaller ceiling probes and only the cases marked quick")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default=None,
                   help="default: cpu, plus cuda when a GPU is present and pyattn has CUDA")
    p.add_argument("--ops", nargs="+", metavar="NAME", default=None,
                   help=f"only these ops (known: {', '.join(available_ops())})")
    p.add_argument("--out", default="bench_out", help="folder for results.json and bench.png")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) first")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p.parse_args(argv)


def _devices(choice: Optional[str], cuda_built: bool) -> list[str]:
    """The devices to run on; empty when --device cuda cannot be honoured."""
    cuda_ok = torch.cuda.is_available() and cuda_built
    if choice == "cpu":
        return ["cpu"]
    if choice is not None and not cuda_ok:
        print("pyattn.bench: no usable GPU (torch.cuda.is_available()="
              f"{torch.cuda.is_available()}, pyattn built with CUDA={cuda_built})", file=sys.stderr)
    if choice == "cuda":
        return ["cuda"] if cuda_ok else []
    return ["cpu", "cuda"] if cuda_ok else ["cpu"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    started = time.perf_counter()
    if args.threads is not None:
        if args.threads < 1:
            print("pyattn.bench: --threads must be at least 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if args.ops is not None:
        unknown = sorted(set(args.ops) - set(available_ops()))
        if unknown:
            print(f"pyattn.bench: unknown op(s) {', '.join(unknown)}; known: "
                  f"{', '.join(available_ops())}", file=sys.stderr)
            return 2

    import pyattn
    from tqdm import tqdm

    build_info = pyattn.build_info()
    devices = _devices(args.device, bool(build_info.get("cuda")))
    if not devices:
        return 2

    modules, skipped = discover(args.ops)
    cases = []
    for op, module in modules.items():
        try:
            cases += [c for d in devices for c in module.cases(d) if c.quick or not args.quick]
        except Exception as e:  # a module that cannot even list its cases is skipped too
            skipped[op] = f"{type(e).__name__}: {e}"
    for op, why in skipped.items():
        print(f"pyattn.bench: skipping {op}: {why}", file=sys.stderr)
    if not cases:
        print("pyattn.bench: no cases to run", file=sys.stderr)
        return 1

    budget = timing.QUICK if args.quick else timing.FULL
    used = list(dict.fromkeys(c.device for c in cases))
    ceilings = {}
    rows = []
    with tqdm(total=len(used) + len(cases), file=sys.stderr, desc="pyattn.bench",
              unit="step", dynamic_ncols=True) as progress:
        for d in used:
            progress.set_postfix_str(f"ceilings on {d}")
            ceilings[d] = measure(d, args.quick)
            progress.update()
        for case in cases:
            progress.set_postfix_str(case.id)
            rows.append(run_case(case, ceilings[case.device], budget))
            progress.update()

    print(report.format_table(rows, ceilings.values()))
    os.makedirs(args.out, exist_ok=True)
    report.write_json(
        os.path.join(args.out, "results.json"),
        machine=report.machine_info(build_info), ceilings=ceilings.values(), rows=rows,
        skipped=skipped, runtime_s=time.perf_counter() - started,
        settings={"quick": args.quick, "devices": used, "ops": list(modules),
                  "budget": vars(budget)})
    written = [os.path.join(args.out, "results.json")]
    if not args.no_plot:
        report.plot(os.path.join(args.out, "bench.png"), rows)
        written.append(os.path.join(args.out, "bench.png"))
    print(f"\n{len(rows)} rows in {time.perf_counter() - started:.1f} s; "
          f"wrote {', '.join(written)}", file=sys.stderr)
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
