"""Every check that needs a GPU, as a plan of steps sized to the device calls a lent
session gets (at most 10 minutes a call, about 15 minutes of device time in all).

    python3 -m bench.gpu_checks --plan              # the steps, their budgets and part totals; runs nothing
    python3 -m bench.gpu_checks [--part 1]          # on a GPU: the first call, most informative first
    python3 -m bench.gpu_checks --part 2            # the rest (a second call, or a later session)
    python3 -m bench.gpu_checks --only step,parity  # named steps, in plan order
        [--out DIR] [--commit SHA] [--deadline SECONDS]

Each step is a command run from the repository root under its own budget: a step still
running at its budget is stopped (its whole process group) and recorded as cut off, and
the next step starts. A global deadline (--deadline seconds from the start, default
DEADLINE_S) stops starting any step whose budget would run past it. After every step
the entry DIR/gpu-run.md is rewritten (commit, plan, each step's status, wall time and
the lines that carry its result), so a run cut short keeps what it did; each step's
whole output is DIR/NAME.log, written as it comes (the device step's few lines go into
the entry alone: a part brings back at most 8 files, the device tool's limit). DIR
defaults to $OUT when set (the device machine's folder that comes back), else
bench/results/gpu-DATE. Nothing here decides pass or fail: the entry shows what ran.
docs/gpu-test-log.md says which commands a lent session runs and how the entry is
committed; --plan shows each step's estimate, budget and how it was estimated.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench.steps import git_commit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PART_LIMIT_S = 480   # part 1 by its budgets: under 8 minutes, inside one 10-minute device call
DEADLINE_S = 560     # default: no step starts that could end later than this after the start
MAX_FILES = 8        # files the device tool brings back from $OUT


@dataclasses.dataclass(frozen=True)
class Step:
    name: str                 # also its log's name: NAME.log
    parts: tuple              # the parts (calls) that run it
    estimate: int             # seconds it should take (its basis says why)
    budget: int               # seconds: the step is stopped here (the estimate and a margin)
    command: tuple            # arguments after the Python interpreter; {tmp}: a scratch folder
    keep: str                 # regex of the output lines the entry quotes
    gives: str                # what it tells, one line
    basis: str                # how the estimate was derived
    log: bool = True          # its whole output as NAME.log (else only in the entry)


PYTEST = ("-m", "pytest", "-v", "-p", "no:cacheprovider", "-rs")
TEST_LINES = r"PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS|passed|failed|error|no tests ran"

# The plan, most informative first. Estimates come from what was measured on the 2-core
# development machine (CPU seconds of one core, BLAS on one thread: an upper bound for
# the device machine's newer cores) or predicted by bench.gpu_model; each step's basis
# says how, and its budget adds a margin of 1.5-3x (more where less was measured).
# Start-up is in every estimate: Python, NumPy and CuPy imports and a CUDA context
# ~5-10 s, PyTorch's import ~5 s more. Kernel compiles: NVRTC of every kernels/*.cu took
# 19.5 CPU s in all (conv2d_tc.cu 11.1, conv2d.cu 6.8, gemm_tc.cu 1.1, the rest < 0.3
# each), paid once per machine by `compile` (CuPy keeps the cubins on disk, so later
# steps load them in about a second); nvcc + cuobjdump for bench.gpu_model 15.7 s wall
# on 2 cores, run beside it and cached on disk too (tinycnn.paths.cache_dir()).
PLAN = (
    Step("device", (1, 2), 10, 30, ("-m", "bench.gpu_checks", "--device-info"), r".",
         "device name, SMs, memory, compute capability; driver and runtime; CuPy, PyTorch (CUDA, cuDNN), nvcc",
         "the imports of CuPy and PyTorch and one CUDA context", log=False),
    Step("compile", (1, 2), 30, 60, ("-m", "bench.gpu_checks", "--compile"), r"^(nvrtc|nvcc)",
         "every kernels/*.cu through NVRTC into CuPy's disk cache (what the backend loads), nvcc's "
         "registers and SASS for bench.gpu_model beside it, each timed",
         "NVRTC 19.5 s and start-up 10 s; the model's nvcc (15.7 s) on other cores meanwhile"),
    Step("step", (1,), 60, 120,
         ("-m", "bench.bench_step_cuda", "--batch", "64", "--hidden", "1024", "--repeats", "20", "--warmup", "3",
          "--validate-batch", "4", "--time-limit", "100"),
         r"validat|FAILED|reference|^(mode|fp32|tf32|bf16) |^\(ms|^torch|paper_net|predicted|skipped|time limit",
         "the captured training step (batch 64, hidden 1024) in fp32, tf32 and bf16, eager and graph, beside "
         "PyTorch eager in the same modes and bench.gpu_model's prediction (measured / predicted), validated first",
         "start-up with PyTorch 15 s, kernels from the cache 2 s, the model from its cache 2 s (beside the "
         "validation), validation (a PyTorch FP32 reference, 3 modes of ours and 3 of PyTorch at batch 4, "
         "cuDNN's set-up) ~20 s, 10 timed series of 23 steps of 2-10 ms (the model: 2.1-4.1 ms ours; eager "
         "is host-bound) < 3 s, each series' set-up (a net, a capture) ~2 s; no series starts after 100 s"),
    Step("hardware", (1,), 10, 30, PYTEST + ("-m", "gpu", "tests/test_gpu_hardware.py"), TEST_LINES,
         "what the tensor-core kernels assume of the GPU: mma.sync .tf32 ignores the low 13 bits of its operand "
         "words (tc_tile.cuh's tc_tf32_word), cvt.rna.tf32 / cvt.rn.bf16x2 round as tinycnn.precision says",
         "pytest and CuPy start-up ~8 s, one NVRTC compile of < 0.1 s, 6 tests of < 1 s"),
    Step("parity", (1,), 30, 90, PYTEST + ("-m", "gpu", "tests/test_parity.py"), TEST_LINES,
         "the parity table on the GPU: every op case in fp32, tf32 and bf16 against the NumPy reference",
         "the 134 cases with NumPy standing in for the GPU (their host side: references, derived bounds) took "
         "20 CPU s here, the largest 14 s (ReLU at batch 64) and 12 s (paper_block2_batch8); the GPU's own "
         "share is milliseconds; start-up 10 s"),
    Step("gpu-tests", (1,), 30, 60, PYTEST + ("-m", "gpu and not slow", "tests/test_gpu.py"), TEST_LINES,
         "the 256x256 training step against NumPy in each mode, bit-exact optimizer updates, bitwise "
         "determinism in every mode",
         "their host side (NumPy steps at batch 4 and 8, NumPy standing in for the GPU) took 12-20 CPU s "
         "here; start-up 10 s"),
    Step("model", (2,), 40, 90, ("-m", "bench.gpu_model", "--measure"),
         r"predicted step|measured step|needs|skipped|^(fp32|tf32|bf16) ",
         "bench.gpu_model's calibration per kernel: each launch of the step timed beside its prediction, "
         "in each mode, and the captured step",
         "nvcc from its cache 2 s (else 16 s), 3 modes x (a recorded step 3 s, a net and a capture 3 s, 50 timed "
         "launches and 20 replays < 1 s), start-up 10 s"),
    Step("hidden28800", (2,), 50, 120, PYTEST + ("-m", "gpu and slow", "tests/test_gpu.py"), TEST_LINES,
         "the paper's Table I read literally: hidden=28800 (1.66 G parameters) completes a bf16 step at batch 8",
         "1.66 G weights drawn on the host (~20-40 s at 50-100 M values/s), 6.6 GB to the device, one step "
         "streaming ~27 GB (< 1 s), start-up 10 s"),
    Step("variants", (2,), 45, 90, ("-m", "bench.variants.run", "--batch", "64"), r".",
         "the numbered conv2d / SGEMM kernels from naive to the tensor-core tile, validated and timed",
         "NVRTC of the 12 variants 8.4 CPU s here, validation against NumPy at the paper's shapes ~20 s, "
         "12 x 23 timed calls of < 20 ms, start-up 10 s"),
    Step("report", (2,), 70, 120,
         ("-m", "bench.report", "--batch", "64", "--backends", "cuda,torch-cuda,torch-cuda-default",
          "--out", "{tmp}"),
         r"^\||GFLOP|peak|bandwidth|validat",
         "every op of the step on our kernels, cuDNN FP32 and PyTorch's defaults at batch 64: times, GFLOP/s, "
         "GB/s, % of peak (the table RESULTS.md takes)",
         "the NumPy references of the 26 cases at batch 64 took 33.4 CPU s here, 3 x 26 x 23 timed calls of "
         "< 10 ms and the validations ~15 s, input copies, start-up 15 s"),
    Step("pipeline", (2,), 45, 90, ("-m", "bench.bench_data_pipeline"), r"samples|ms/step|paper_net|skipped",
         "does the data pipeline keep the GPU fed: 30 steps from the loader against a preloaded batch",
         "rendering the 128 synthetic ROIs took 22.6 s here, 2 x 35 steps at batch 32 with host-side loading "
         "~5 s, start-up 10 s"),
    Step("suite", (2,), 65, 100,
         PYTEST + ("bench/test_ops.py", "-k", "cuda and b32", "--benchmark-max-time=0.2", "--benchmark-min-rounds=5"),
         r"passed|failed|error|Name \(time",
         "the pytest-benchmark suite's GPU entries at batch 32 (cuda, torch-cuda, torch-cuda-default; the report "
         "has batch 64)",
         "the NumPy references of 26 cases at batch 32 ~17 CPU s (half of batch 64's), 78 entries x (a "
         "validation, 5 rounds within 0.2 s) ~30 s, start-up 15 s"),
)


def steps_of(part: int) -> list:
    return [s for s in PLAN if part in s.parts]


def part_total(part: int) -> int:
    return sum(s.budget for s in steps_of(part))


def part_estimate(part: int) -> int:
    return sum(s.estimate for s in steps_of(part))


def files_of(steps) -> int:
    """Files a run of `steps` leaves in its folder: the entry and a log per logged step."""
    return 1 + sum(s.log for s in steps)


def plan_text() -> str:
    """The plan as --plan prints it."""
    lines = ["bench.gpu_checks: the plan (seconds; a step is stopped at its budget, and none starts whose "
             f"budget would end past the deadline, {DEADLINE_S} s after the start by default)"]
    for part in sorted({p for s in PLAN for p in s.parts}):
        lines += ["", f"part {part}{' (the default)' if part == 1 else ''}: python3 -m bench.gpu_checks --part {part}",
                  f"  {'step':12s} {'estimate':>8s} {'budget':>6s}  command / what it gives / how it was estimated"]
        for s in steps_of(part):
            shared = " (in every part: a fresh machine needs it first)" if len(s.parts) > 1 else ""
            lines.append(f"  {s.name:12s} {s.estimate:8d} {s.budget:6d}  python3 {shlex.join(s.command)}")
            lines.append(f"  {'':28s}  gives: {s.gives}{shared}")
            lines.append(f"  {'':28s}  estimate: {s.basis}")
        total, expected = part_total(part), part_estimate(part)
        lines.append(f"  part {part} total: {total} s ({total / 60:.1f} min) of budgets, {expected} s "
                     f"({expected / 60:.1f} min) estimated; {len(steps_of(part))} steps, "
                     f"{files_of(steps_of(part))} files back")
    return "\n".join(lines)


# ------------------------------------------------------------------ running
def _kill(proc: subprocess.Popen) -> None:
    """End the step's whole process group (pytest and what it started)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(step: Step, log_dir: str, tmp: str, timeout: float) -> tuple:
    """(status: the exit code or 'cut off at N s', seconds, the quoted lines); the whole
    output goes to log_dir/NAME.log as it comes."""
    command = [sys.executable] + [a.replace("{tmp}", tmp) for a in step.command]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg",
               PYTHONUNBUFFERED="1")
    log_path = os.path.join(log_dir, f"{step.name}.log")
    t0 = time.time()
    with open(log_path, "w") as log:
        log.write(f"$ python3 {shlex.join(command[1:])}\n")
        log.flush()
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            status = f"cut off at {timeout:.0f} s"
    seconds = time.time() - t0
    if not isinstance(status, int):
        with open(log_path, "a") as f:
            f.write(f"\n[bench.gpu_checks: {step.name} {status}, its budget]\n")
    with open(log_path, errors="replace") as f:
        output = f.read().splitlines()[1:]
    pattern = re.compile(step.keep)
    return status, seconds, [line for line in output if pattern.search(line)]


def run_plan(steps, out_dir: str, commit: str, deadline_s: float, label: str) -> list:
    """Run `steps` in order under their budgets and the deadline; rewrite gpu-run.md after
    each. Returns [(step name, status, seconds)]."""
    start = time.time()
    now = dt.datetime.now(dt.timezone.utc)
    entry = [f"## {now:%Y-%m-%d %H:%M} UTC: GPU run, {label}", "",
             f"- commit: {commit}; host: {platform.node()}, Python {platform.python_version()}",
             f"- plan: {', '.join(f'{s.name} ({s.budget} s)' for s in steps)}; deadline {deadline_s:.0f} s", ""]
    path = os.path.join(out_dir, "gpu-run.md")
    results = []
    tmp = tempfile.mkdtemp(prefix="gpu-checks-")  # scratch, and the logs of steps that keep none
    try:
        for step in steps:
            log_dir = out_dir if step.log else tmp
            left = deadline_s - (time.time() - start)
            if step.budget > left:
                status, seconds, lines = f"not started ({max(left, 0):.0f} s left before the deadline)", 0.0, []
                with open(os.path.join(log_dir, f"{step.name}.log"), "w") as f:
                    f.write(f"[bench.gpu_checks: {step.name} {status}, its budget {step.budget} s]\n")
            else:
                print(f"-- {step.name} (budget {step.budget} s): python3 {shlex.join(step.command)}", flush=True)
                status, seconds, lines = run_step(step, log_dir, tmp, step.budget)
            results.append((step.name, status, seconds))
            head = f"### {step.name}: {'exit ' if isinstance(status, int) else ''}{status}, {seconds:.0f} s " \
                   f"of {step.budget}"
            entry += [head, "", "```"] + lines[-60:] + ["```", ""]
            with open(path, "w") as f:  # after every step: a run cut short keeps what it did
                f.write("\n".join(entry) + "\n")
            print(f"   {head[4:]}", flush=True)
            for line in lines[-12:]:
                print(f"   | {line}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


# ------------------------------------------------------------------ the first two steps
def device_info() -> int:
    """Device, driver, runtime, CuPy, PyTorch and nvcc, one line each (no nvidia-smi needed)."""
    import numpy

    print(f"python: {platform.python_version()} ({sys.executable}); numpy: {numpy.__version__}")
    try:
        import cupy

        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(rt.getDevice())
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        clock = f", clock {props['clockRate'] / 1e6:.2f} GHz" if props.get("clockRate") else ""  # gone in CUDA 13
        print(f"device: {name}, {props['multiProcessorCount']} SMs, {props['totalGlobalMem'] / 2**30:.1f} GiB, "
              f"compute capability {props['major']}.{props['minor']}, L2 {props.get('l2CacheSize', 0) / 2**20:.0f} "
              f"MiB{clock}")
        print(f"driver: CUDA {rt.driverGetVersion()}, runtime {rt.runtimeGetVersion()}")
        print(f"cupy: {cupy.__version__}, NVRTC {'.'.join(map(str, cupy.cuda.nvrtc.getVersion()))}")
    except Exception as e:  # no CuPy, no driver or no device: say so, the steps will skip
        print(f"device: none usable ({type(e).__name__}: {e})")
    try:
        import torch

        cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        print(f"torch: {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}, "
              f"GPU {torch.cuda.is_available()}")
    except ImportError:
        print("torch: not installed")
    from bench.gpu_model import tool

    nvcc = tool("nvcc")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1] \
        if nvcc else "not found"
    print(f"nvcc: {version}; cuobjdump {tool('cuobjdump') or 'not found'}")
    return 0


def compile_kernels() -> int:
    """Every kernels/*.cu through NVRTC as the cuda backend loads them (into CuPy's disk
    cache, which later steps read), and, on the other cores meanwhile, bench.gpu_model's
    nvcc pass (cached on disk too); each timed."""
    from concurrent.futures import ThreadPoolExecutor

    from bench import gpu_model

    def model():
        t0 = time.time()
        try:
            codes = gpu_model.compile_kernels()
        except SystemExit as e:
            return f"nvcc (bench.gpu_model): skipped: {e}"
        return f"nvcc (bench.gpu_model): {len(codes)} kernels in {time.time() - t0:.1f} s"

    with ThreadPoolExecutor(max_workers=1) as pool:
        nvcc = pool.submit(model)
        t0 = time.time()
        try:
            import cupy

            from tinycnn.backends import cuda_backend
            from tinycnn.backends.kernel_sources import kernel_sources

            kernels = cuda_backend._load_kernels(cupy.cuda.runtime.getDevice())
            print(f"nvrtc: {len(kernel_sources())} files, {len(kernels)} kernels compiled and loaded in "
                  f"{time.time() - t0:.1f} s (CuPy cache {os.environ.get('CUPY_CACHE_DIR', '~/.cupy/kernel_cache')})",
                  flush=True)
        except Exception as e:
            print(f"nvrtc: FAILED after {time.time() - t0:.1f} s: {type(e).__name__}: {e}", flush=True)
            print(nvcc.result(), flush=True)
            return 1
        print(nvcc.result(), flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.gpu_checks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", action="store_true", help="print the steps and their budgets; run nothing")
    ap.add_argument("--part", type=int, choices=sorted({p for s in PLAN for p in s.parts}), default=1,
                    help="which call's steps to run (default 1)")
    ap.add_argument("--only", help=f"comma-separated steps to run instead of a part: {', '.join(s.name for s in PLAN)}")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for the entry and the logs (default $OUT, "
                                                                  "else bench/results/gpu-DATE)")
    ap.add_argument("--commit", help="the commit being tested (the device's copy of the tree has no .git)")
    ap.add_argument("--deadline", type=float, default=DEADLINE_S,
                    help=f"seconds from the start after which no step may still run (default {DEADLINE_S})")
    ap.add_argument("--device-info", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device_info:
        return device_info()
    if args.compile:
        return compile_kernels()
    if args.plan:
        print(plan_text())
        return 0
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in {s.name for s in PLAN}]
        if unknown:
            ap.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(s.name for s in PLAN)}")
        steps, label = [s for s in PLAN if s.name in names], f"steps {', '.join(names)}"
    else:
        steps, label = steps_of(args.part), f"part {args.part}"
    now = dt.datetime.now(dt.timezone.utc)
    out_dir = args.out or os.path.join(ROOT, "bench", "results", f"gpu-{now:%Y-%m-%d}")
    os.makedirs(out_dir, exist_ok=True)
    results = run_plan(steps, out_dir, args.commit or git_commit(), args.deadline, label)
    print(f"wrote {os.path.join(out_dir, 'gpu-run.md')} (the entry for docs/gpu-test-log.md) and one NAME.log "
          f"per step beside it")
    for name, status, seconds in results:
        print(f"  {name:12s} {status!s:>12s}  {seconds:5.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
