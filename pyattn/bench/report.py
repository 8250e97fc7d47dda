"""What a run leaves behind: the printed table, results.json and a PNG plot."""

from __future__ import annotations

import json
import os
import platform
from typing import Iterable, Optional, Sequence

import torch

from . import timing
from .ceilings import Ceilings
from .runner import Row


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(build_info: dict) -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pyattn_build_info": build_info,
        # Knobs that move the numbers: THP_MEM_ALLOC_ENABLE=1 makes torch back large CPU
        # tensors with huge pages, which cuts the page-fault cost of fresh outputs.
        "env": {k: os.environ.get(k) for k in (
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE", "PYATTN_CPU_ISA",
            "CUDA_VISIBLE_DEVICES")},
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _ms(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _mib(v: Optional[int]) -> str:
    return "-" if v is None else f"{v / timing.MiB:.0f}"


def _row_cells(r: Row) -> list[str]:
    if r.error is not None:
        check = "ERROR"
    else:
        check = "ok" if r.mismatch is None else "MISMATCH"
    target = "-"
    if r.target is not None:
        state = "?" if r.target_met is None else "met" if r.target_met else "NOT met"
        target = f"{r.target}: {state}"
    return [
        r.case, r.device, r.dtype, _ms(r.ours_ms), _ms(r.peer_ms),
        "-" if r.speedup is None else f"{r.speedup:.2f}x",
        "-" if r.ours_rate is None else f"{r.ours_rate:.1f} {r.rate_unit}",
        "-" if r.ours_frac is None else f"{r.ours_frac * 100:.0f}% {Ceilings.label(r.ceiling)}",
        f"{_mib(r.ours_peak_bytes)} / {_mib(r.peer_peak_bytes)}",
        check, target,
    ]


_HEADER = ["case", "device", "dtype", "ours ms", "peer ms", "speedup", "ours rate",
           "% ceiling", "peak MiB ours/peer", "check", "target"]
_LEFT = {0, 1, 2, 9, 10}  # left-aligned columns; numbers align right


def _device_name(device: str) -> str:
    """"cpu", or "cuda (NVIDIA H200)": the table names the GPU its rows ran on."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def format_table(rows: Sequence[Row], ceilings: Iterable[Ceilings]) -> str:
    lines = [f"ceilings ({_device_name(c.device)}, measured in this run): {c.summary()}" for c in ceilings]
    for op in dict.fromkeys(r.op for r in rows):
        ops_rows = [r for r in rows if r.op == op]
        cells = [_HEADER] + [_row_cells(r) for r in ops_rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(_HEADER))]

        def fmt(cs):
            return "  ".join(c.ljust(w) if i in _LEFT else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cs, widths))).rstrip()

        lines += ["", f"[{op}]", fmt(cells[0]), fmt(["-" * w for w in widths])]
        lines += [fmt(c) for c in cells[1:]]
        for peer in dict.fromkeys(r.peer_name for r in ops_rows):
            lines.append(f"  peer: {peer}")
        for r in ops_rows:
            where = f"{r.case} ({r.device}, {r.dtype})"
            if r.reference_ms is not None:
                lines.append(f"  {where}: {r.reference_name} took {_ms(r.reference_ms)} ms in the same run; "
                             f"ours / that = {r.reference_ratio:.2f}")
            if r.note is not None:
                lines.append(f"  note on {where}: {r.note}")
            if r.error is not None:
                lines.append(f"  ERROR in {where}: {r.error}")
            elif r.mismatch is not None:
                lines.append(f"  MISMATCH in {where}: {r.mismatch}")
    lines += ["", "speedup = peer ms / ours ms (medians, timed interleaved); rate = minimum "
              "bytes moved or FLOP per call / ours ms; peak = extra memory at the call's peak."]
    return "\n".join(lines)


def write_json(path: str, *, machine: dict, ceilings: Iterable[Ceilings], rows: Sequence[Row],
               skipped: dict, settings: dict, runtime_s: float) -> None:
    doc = {
        "machine": machine,
        "settings": settings,
        "ceilings": {c.device: c.as_dict() for c in ceilings},
        "peak_memory_method": {d: timing.peak_method(d)
                               for d in dict.fromkeys(r.device for r in rows)},
        "skipped_ops": skipped,
        "rows": [r.as_dict() for r in rows],
        "runtime_s": runtime_s,
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, default=str)


def plot(path: str, rows: Sequence[Row]) -> None:
    """Speedup per row (with the 1.0 line) and % of the machine ceiling, ours and peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.speedup is not None]
    labels = [f"{r.op}: {r.case} [{r.device} {r.dtype}]" for r in done]
    ys = list(range(len(done)))[::-1]  # first row on top
    height = 1.2 + 0.45 * max(1, len(done))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, height), sharey=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    colors = ["tab:red" if r.failed else "tab:green" if r.speedup >= 1 else "tab:orange"
              for r in done]
    ax1.barh(ys, [r.speedup for r in done], color=colors)
    ax1.axvline(1.0, color="black", linewidth=1)
    for y, r in zip(ys, done):
        ax1.text(r.speedup, y, f" {r.speedup:.2f}x", va="center", fontsize=8)
    ax1.set_xlim(0, 1.15 * max(max(r.speedup, r.target_speedup or 0) for r in done))
    ax1.set_yticks(ys)
    ax1.set_yticklabels(labels, fontsize=8)
    ax1.set_xlabel("speedup: peer time / our time")
    ax1.set_title("pyattn vs the peer (red: outputs disagree; |: target)", fontsize=10)

    h = 0.38
    ax2.barh([y + h / 2 for y in ys], [100 * (r.ours_frac or 0) for r in done], h, label="ours")
    ax2.barh([y - h / 2 for y in ys], [100 * (r.peer_frac or 0) for r in done], h, label="peer")
    ax2.axvline(100.0, color="black", linewidth=1)
    ax2.set_xlabel("% of the ceiling measured in this run")
    ax2.set_title("share of copy bandwidth / GEMM rate", fontsize=10)
    ax2.legend(fontsize=8, loc="lower right")
    for y, r in zip(ys, done):
        if r.target_speedup is not None:
            ax1.plot([r.target_speedup], [y], marker="|", markersize=18, color="black")
        if r.target_ceiling_frac is not None:
            ax2.plot([100 * r.target_ceiling_frac], [y + h / 2], marker="|", markersize=10,
                     color="black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
