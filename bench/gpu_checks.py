"""Every check that needs a GPU, in one command, with one log to paste.

    python3 -m bench.gpu_checks [--out DIR] [--only tests,step,model,pipeline,report,variants] [--commit SHA]

Runs from the repository root, in this order, each with its own time limit:

    tests     PYTHONPATH=. python3 -m pytest -m gpu -v        (tests/test_gpu.py)
    step      python3 -m bench.bench_step_cuda                (paper_net step, batch 64, in each precision
                                                              mode (fp32, tf32, bf16), eager and captured
                                                              graph, each validated against an FP32
                                                              reference first, beside PyTorch eager at
                                                              its defaults, with TF32 off and with bf16
                                                              autocast)
    model     python3 -m bench.gpu_model --measure            (each kernel measured beside the static
                                                              model's prediction, in each precision mode;
                                                              needs nvcc and the cuobjdump/nvdisasm wheels)
    pipeline  python3 -m bench.bench_data_pipeline            (data loading vs a preloaded batch)
    report    python3 -m bench.report --batch 64 --out DIR    (every op, with the roofline columns)
    variants  python3 -m bench.variants.run --batch 64        (numbered conv2d / SGEMM kernels, from the
                                                              naive SGEMM to the tensor-core tile)

and writes DIR/gpu-run.md: a docs/gpu-test-log.md entry (date, device, driver, CUDA,
CuPy, commit; each command with its exit code, wall time and the lines that carry
the result), with each command's whole output beside it as DIR/NAME.log. DIR defaults
to $OUT when set (the device machine's folder that comes back), else
bench/results/gpu-DATE. Nothing here decides pass or fail: the log shows what ran.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time

from bench.steps import git_commit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (command, time limit in s, regex of the lines worth quoting in the entry). Each
# limit fits one 10-minute device call; --only splits a session's checks across calls.
STEPS = {
    "tests": ([sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider", "tests"], 540,
              r"PASSED|FAILED|ERROR|SKIPPED|passed|failed"),
    "step": ([sys.executable, "-m", "bench.bench_step_cuda"], 540,
             r"validated|FAILED|reference|ms/step| / |paper_net|torch|skipped"),
    "model": ([sys.executable, "-m", "bench.gpu_model", "--measure"], 540,
              r"predicted step|measured step|^(fp32|tf32|bf16) |needs|skipped"),
    "pipeline": ([sys.executable, "-m", "bench.bench_data_pipeline"], 540, r"validated|ms/step|paper_net|skipped"),
    "report": ([sys.executable, "-m", "bench.report", "--batch", "64"], 540, r"^\||GFLOP|peak|bandwidth|saved"),
    "variants": ([sys.executable, "-m", "bench.variants.run", "--batch", "64"], 540, r"."),
}


def device_lines() -> list[str]:
    """Device, driver, CUDA runtime and CuPy, from CuPy itself (no nvidia-smi needed)."""
    try:
        import cupy
    except ImportError as e:
        return [f"no CuPy: {e}"]
    try:
        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(rt.getDevice())
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return [f"device: {name}, {props['multiProcessorCount']} SMs, "
                f"{props['totalGlobalMem'] / 2**30:.1f} GiB, compute capability {props['major']}.{props['minor']}",
                f"driver: CUDA {rt.driverGetVersion()}, runtime {rt.runtimeGetVersion()}, CuPy {cupy.__version__}"]
    except Exception as e:  # no driver or no device: say so, the steps will skip
        return [f"no usable CUDA device: {e}"]


def run_step(name: str, out_dir: str) -> tuple[int | str, float, list[str]]:
    """(exit code or 'timeout', seconds, the quoted lines); the whole output goes to NAME.log."""
    command, limit, keep = STEPS[name]
    if name == "report":
        command = command + ["--out", out_dir]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    t0 = time.time()
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code = "timeout"
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    seconds = time.time() - t0
    with open(os.path.join(out_dir, f"{name}.log"), "w") as f:
        f.write(output)
    pattern = re.compile(keep)
    return code, seconds, [line for line in output.splitlines() if pattern.search(line)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.gpu_checks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for the logs (default $OUT, else "
                                                                  "bench/results/gpu-DATE)")
    ap.add_argument("--only", default=",".join(STEPS), help=f"comma-separated subset of {', '.join(STEPS)}")
    ap.add_argument("--commit", help="the commit being tested (where the tree has no .git)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        ap.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    now = dt.datetime.now(dt.timezone.utc)
    out_dir = args.out or os.path.join(ROOT, "bench", "results", f"gpu-{now:%Y-%m-%d}")
    os.makedirs(out_dir, exist_ok=True)

    entry = [f"## {now:%Y-%m-%d %H:%M} UTC: GPU run", ""] + [f"- {line}" for line in device_lines()]
    entry += [f"- commit: {args.commit or git_commit()}; host: {platform.node()}, Python {platform.python_version()}", ""]
    path = os.path.join(out_dir, "gpu-run.md")
    for name in names:
        print(f"-- {name}: {' '.join(STEPS[name][0][1:])}", flush=True)
        code, seconds, lines = run_step(name, out_dir)
        print(f"   exit {code}, {seconds:.0f} s", flush=True)
        entry += [f"### {name}: exit {code}, {seconds:.0f} s", "", "```"] + lines[-60:] + ["```", ""]
        with open(path, "w") as f:  # after every step: a run cut short keeps what it did
            f.write("\n".join(entry) + "\n")
    print(f"wrote {path} (paste it into docs/gpu-test-log.md) and one NAME.log per step beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
