"""One table of every benchmark op case on every implementation present here.

    python -m bench.report [--batch N] [--backends numpy,numba,torch-cpu] [--repeats N] [--quick]
                           [--ops conv1,dense] [--out bench/results]

The op cases are those of the pytest suite (bench/ops.py, one definition each).
Validate, then time: every (case, implementation) is first checked against the NumPy
reference on the same inputs, and a mismatch stops the report. CPU times come from
the host clock (synchronous work); GPU times from device events after warm-up, with
inputs rotated among copies larger than twice the L2 together.

Columns: the median time per call of each implementation (± half the interquartile
range, as a percentage), the speedup of ours (cuda on a GPU, else numba, else numpy)
over numpy, its achieved GFLOP/s and GB/s (FLOPs and minimum DRAM bytes of the op,
bench/ops.py), on a GPU the % of the device's FP32 peak and memory bandwidth (derived
from the device's properties, stated in the header), and the ratio of its time to
PyTorch's (> 1: slower than PyTorch). Saves report-<cpu|gpu>-b<batch>.{json,md,png}
into --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

from bench.steps import cpu_description, git_commit
from bench.ops import CASES, IMPLS, clear_reference, gpu_properties, prepare, summarize

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ORDER = ("numpy", "numba", "cuda", "torch-cpu", "torch-cuda", "torch-cuda-default")
OURS = ("cuda", "numba", "numpy")  # the first one measured is the one the rate columns describe


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            v = seconds / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{seconds} s"


def fmt_cell(stats: dict) -> str:
    spread = (stats["q3"] - stats["q1"]) / 2 / stats["median"] * 100 if stats["median"] else 0.0
    return f"{fmt_time(stats['median'])} ±{spread:.0f}%"


def versions() -> str:
    parts = [f"NumPy {np.__version__}"]
    for mod in ("numba", "torch", "cupy"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    return ", ".join(parts)


def default_backends(gpu: bool) -> list[str]:
    """Everything that runs here; on a GPU machine torch-cpu is left out (slow, and not
    the comparison that matters there)."""
    names = [n for n in ORDER if not (gpu and n == "torch-cpu")]
    return [n for n in names if IMPLS[n].unavailable() is None]


def header_lines(args, names, gpu) -> list[str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    lines = [f"date {datetime.datetime.now().isoformat(timespec='minutes')}, commit {git_commit()}",
             f"CPU: {cpu_description()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
             f"{versions()}; Python {platform.python_version()}",
             f"batch {args.batch}, paper shapes (256x256x1 input, hidden 1024); {args.repeats} timed calls per "
             f"entry; implementations: {', '.join(names)}"]
    if gpu:
        lines.append(f"GPU: {gpu['name']} ({gpu['sm']}), {gpu['sms']} SMs x {gpu['fp32_lanes_per_sm']} FP32 lanes "
                     f"x 2 x {gpu['clock_ghz']:.3f} GHz = {gpu['fp32_peak_flops'] / 1e12:.1f} TFLOP/s FP32 peak; "
                     f"2 x {gpu['mem_clock_ghz']:.3f} GHz x {gpu['bus_width_bits']} bit / 8 = "
                     f"{gpu['bandwidth_bytes'] / 1e9:.0f} GB/s; L2 {(gpu['l2_bytes'] or 0) / 2**20:.0f} MiB "
                     "(FP32 lanes per SM assumed: 64 on sm_60/70/75/80, 128 otherwise)")
        lines.append(f"GPU times: CUDA events after {args.warmup} warm-up calls; torch-cuda = cuDNN FP32 (TF32 off, "
                     "cudnn.benchmark on), torch-cuda-default = PyTorch defaults (TF32 convolutions)")
    else:
        lines.append("CPU times: host clock (synchronous work) after one warm-up call; no GPU here")
    return lines


def build_table(rows: list[dict], names: list[str], gpu) -> list[str]:
    ours = next((n for n in OURS if n in names), None)
    torches = [n for n in names if n.startswith("torch")]
    cols = ["op", "shape"] + names
    if ours and ours != "numpy" and "numpy" in names:
        cols.append(f"numpy/{ours}")
    if ours:
        cols += [f"{ours} GFLOP/s", f"{ours} GB/s", "FLOP/B"]
        if gpu and ours == "cuda":
            cols += ["% FP32 peak", "% BW"]
        cols += [f"{ours}/{t}" for t in torches]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        med = {n: r["stats"][n]["median"] for n in names if n in r["stats"]}
        cells = [r["op"], r["shape"]] + [fmt_cell(r["stats"][n]) if n in r["stats"] else "-" for n in names]
        if ours and ours != "numpy" and "numpy" in names:
            cells.append(f"{med['numpy'] / med[ours]:.1f}x" if ours in med and "numpy" in med else "-")
        if ours:
            t = med.get(ours)
            cells += [f"{r['flops'] / t / 1e9:.1f}" if t else "-", f"{r['bytes'] / t / 1e9:.1f}" if t else "-",
                      f"{r['flops'] / r['bytes']:.2f}"]
            if gpu and ours == "cuda":
                cells += [f"{100 * r['flops'] / t / gpu['fp32_peak_flops']:.1f}" if t else "-",
                          f"{100 * r['bytes'] / t / gpu['bandwidth_bytes']:.1f}" if t else "-"]
            cells += [f"{t / med[n]:.2f}" if t and n in med else "-" for n in torches]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def save_chart(rows: list[dict], names: list[str], path: str, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart")
        return False
    fig, ax = plt.subplots(figsize=(10, 0.25 * len(rows) * (1 + 0.2 * len(names)) + 1.5))
    height = 0.8 / len(names)
    y = np.arange(len(rows))
    for i, n in enumerate(names):
        vals = [r["stats"][n]["median"] * 1e3 if n in r["stats"] else np.nan for r in rows]
        ax.barh(y + i * height, vals, height, label=n)
    ax.set_yticks(y + 0.4 - height / 2)
    ax.set_yticklabels([r["op"] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per call, ms (log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 64 with a GPU, else 32)")
    ap.add_argument("--backends", default=None,
                    help=f"comma-separated, from {', '.join(ORDER)} (default: every one available here)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per entry (default 5 on CPU, 20 on GPU)")
    ap.add_argument("--quick", action="store_true", help="3 timed calls after 1 warm-up (a fast look)")
    ap.add_argument("--ops", default=None, help="comma-separated substrings of op names to keep (default: all)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the JSON, Markdown and PNG (default bench/results)")
    args = ap.parse_args(argv)

    gpu = gpu_properties()
    has_gpu = gpu is not None or IMPLS["torch-cuda"].unavailable() is None
    names = args.backends.split(",") if args.backends else default_backends(has_gpu)
    for n in names:
        if n not in IMPLS:
            ap.error(f"unknown backend {n!r}; choose from {', '.join(ORDER)}")
        why = IMPLS[n].unavailable()
        if why:
            ap.error(f"{n}: {why}")
    names = [n for n in ORDER if n in names]
    gpu_run = any(IMPLS[n].gpu for n in names)
    args.batch = args.batch or (64 if gpu_run else 32)
    args.repeats = args.repeats or (3 if args.quick else (20 if gpu_run else 5))
    args.warmup = 1 if args.quick else 3
    cases = [c for c in CASES if not args.ops or any(s.strip() in c.name for s in args.ops.split(","))]

    header = header_lines(args, names, gpu if gpu_run else None)
    print("\n".join(header), flush=True)
    rows = []
    for case in cases:
        row = {"op": case.name, "shape": case.label(args.batch), "flops": case.flops(args.batch),
               "bytes": case.bytes(args.batch), "stats": {}, "validation_rel_error": {}}
        for n in names:
            impl = IMPLS[n]
            fn, worst = prepare(case, args.batch, impl)
            times = impl.time_calls(fn, args.repeats, warmup=args.warmup if impl.gpu else 1)
            del fn
            row["stats"][n] = summarize(times)
            row["validation_rel_error"][n] = worst
            print(f"  {case.name:<24} {n:<19} {fmt_cell(row['stats'][n]):>16}  (validated: rel. error {worst:.1e})",
                  flush=True)
        rows.append(row)
    clear_reference()

    table = build_table(rows, names, gpu if gpu_run else None)
    print()
    print("\n".join(table))

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"report-{'gpu' if gpu_run else 'cpu'}-b{args.batch}")
    with open(stem + ".json", "w") as f:
        json.dump({"header": header, "batch": args.batch, "repeats": args.repeats, "implementations": names,
                   "gpu": gpu if gpu_run else None, "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write("\n".join(["```"] + header + ["```", ""] + table) + "\n")
    chart = save_chart(rows, names, stem + ".png", header[0] + "; " + header[3].split(";")[0])
    print(f"\nsaved {stem}.json, {stem}.md" + (f", {stem}.png" if chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
