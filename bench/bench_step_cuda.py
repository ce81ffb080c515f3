"""One training step of paper_net() on our CUDA kernels, in each precision mode, beside
PyTorch eager on the same GPU, in the same run, and beside bench.gpu_model's prediction.

    python -m bench.bench_step_cuda [--batch 64] [--hidden 1024] [--repeats 20] [--warmup 3]
                                    [--precisions fp32,tf32,bf16] [--validate-batch 4]
                                    [--time-limit SECONDS] [--numpy-repeats 0]

Validate, then time. First, for each precision mode of ours, one step from the same
seeded weights (forward with dropout off, loss, backward) at --validate-batch,
verified layer by layer against the exact result of its mode (validate():
tinycnn.verify.verify_step, derived bounds, no tolerance chosen, so a correct kernel
cannot fail on a flipped ReLU or pooling decision). A mode that fails is reported and
not timed; the others go on. The PyTorch modes are compared with an FP32 reference
(PyTorch with TF32 off, or the NumPy reference where PyTorch has no CUDA) and their
errors printed beside TOLERANCE (not enforced: they are PyTorch's numerics).

Then forward + loss + backward + SGD-momentum update at --batch, each series --warmup
untimed steps (kernel loading, allocator growth, the graph capture) and --repeats
steps timed with CUDA events:

    tinycnn <mode> eager   the step's ops launched one by one from Python, in precision
                           mode fp32 (CUDA cores), tf32 or bf16 (tensor cores)
    tinycnn <mode> graph   the training loop's step (tinycnn/mammo/train.py: step statistics
                           on the device, the optimizer guarded by them), captured once and
                           replayed as one CUDA graph (backend.capture)
    torch FP32             the same network in PyTorch eager with TF32 off (cudnn.allow_tf32
                           and cuda.matmul.allow_tf32 False): strict FP32
    torch TF32             TF32 on for convolutions and matmuls alike (as ours in tf32)
    torch default          PyTorch's defaults: TF32 convolutions (cudnn.allow_tf32 True),
                           the matmul TF32 flag as PyTorch sets it (False since 1.12)
    torch bf16 autocast    torch.autocast("cuda", torch.bfloat16) around the forward pass

The run is bounded: (modes + 1) validation steps at --validate-batch, then 2 series per
mode and 4 PyTorch series of --warmup + --repeats steps, each a few ms (the model
predicts 2-4 ms for ours); a series that would start after --time-limit seconds is
skipped and said so. The prediction (bench.gpu_model: the replayed captured step on the
model's entry for this GPU; a MODEL, not a measurement) is computed while the validation
runs, from nvcc's output (cached on disk), and shown beside each mode:

    mode  ours eager  ours graph  torch (its mode)  predicted  graph / predicted

then each series' median, spread and images/s, and the ratios to PyTorch. PyTorch runs
only where it is installed with CUDA; NumPy is timed only with --numpy-repeats N (slow).
Exits cleanly (status 0, a message) where there is no GPU or no CuPy; status 1 when a
mode failed its validation. Run from the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import threading
import time

import numpy as np

from bench import gpu_model
from bench.steps import LR, MOMENTUM, host_times, training_step
from bench.torch_net import mirror_gradients, torch_available, torch_mirror
from tinycnn import backends
from tinycnn.gradcheck import rel_error
from tinycnn.model import paper_net
from tinycnn.precision import PRECISIONS
from tinycnn.verify import verify_step

SIZE = 256  # the paper's input: 256 x 256 x 1

#: What PyTorch's modes are reported against (not enforced; ours are verified by derived
#: bounds instead, see validate): the norm-wise relative error (tinycnn.gradcheck.rel_error)
#: between one step in a precision mode and the FP32 reference, by what is compared. Measured before choosing
#: them, worst array, with the NumPy reference (batch 4, 256 x 256, hidden 1024) and with
#: cuda-emu (our kernels on the CPU; batch 4, 128 x 128, hidden 256) against NumPy FP32:
#:   - the loss and the logits are continuous in the products' operands: float32 against
#:     float64 sums 2e-6; TF32 operands against FP32 2.8e-3; BF16 1.9e-2;
#:   - the gradients are not: a rounding difference that flips a ReLU mask or a max-pool
#:     winner reroutes a whole gradient entry, and the first conv's weight gradient sums
#:     ~260k products of either sign. float32 against float64 sums (same operands):
#:     1.1e-2, cuda-emu fp32 against NumPy 1.6e-2; TF32 against FP32: 7.0e-2 (cuda-emu
#:     5.4e-2); BF16: 2.1e-1 (cuda-emu 2.2e-1; conv1's weights and bias).
#: Each tolerance is about 2.5-3x the largest measured error (PyTorch rounds its own way:
#: cuDNN may truncate TF32 operands where ours round to nearest, autocast also stores
#: BF16 activations). A wrong product (operand layout, a missing tile) errs by order 1.
TOLERANCE = {
    "fp32": {"forward": 1e-4, "gradients": 5e-2},
    "tf32": {"forward": 1e-2, "gradients": 2e-1},
    "bf16": {"forward": 5e-2, "gradients": 5e-1},
}


def precision_list(text: str) -> tuple:
    """'fp32,bf16' -> ('fp32', 'bf16'): precision modes, each known, in the given order."""
    modes = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in modes if p not in PRECISIONS]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"precision modes {', '.join(unknown) or '(none)'}: "
                                         f"choose from {', '.join(PRECISIONS)}")
    return modes


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_step_cuda", description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=20, help="timed GPU steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed GPU steps first")
    ap.add_argument("--precisions", type=precision_list, default=PRECISIONS,
                    help="our precision modes to validate and time, comma-separated (default fp32,tf32,bf16)")
    ap.add_argument("--numpy-repeats", type=int, default=0, help="timed NumPy steps (slow; 0: none)")
    ap.add_argument("--validate-batch", type=int, default=4, help="batch of the validation step")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds from the start after which no further series is timed (default: none)")
    return ap.parse_args(argv)


# ------------------------------------------------------------------ validation
def compare(outputs: dict, reference: dict, precision: str) -> list[tuple[str, float, float]]:
    """(name, rel. error, tolerance) of every array of a step against the reference's,
    worst first relative to its tolerance; names and shapes must match."""
    if outputs.keys() != reference.keys():
        raise ValueError(f"the step's arrays {sorted(outputs)} differ from the reference's {sorted(reference)}")
    rows = []
    for name, ref in reference.items():
        if np.shape(outputs[name]) != np.shape(ref):
            raise ValueError(f"{name}: shape {np.shape(outputs[name])}, the reference's {np.shape(ref)}")
        tol = TOLERANCE[precision]["forward" if name in ("loss", "logits") else "gradients"]
        rows.append((name, rel_error(outputs[name], ref), tol))
    return sorted(rows, key=lambda r: r[1] / r[2], reverse=True)


# ------------------------------------------------------------------ PyTorch
@dataclasses.dataclass(frozen=True)
class TorchMode:
    """How PyTorch runs the step: its TF32 flags (None: PyTorch's default) and autocast."""
    name: str
    precision: str                    # our mode it is closest to (its validation tolerance)
    cudnn_tf32: bool | None = None
    matmul_tf32: bool | None = None
    autocast_bf16: bool = False


TORCH_DEFAULT = TorchMode("torch default", "tf32")
TORCH_FP32 = TorchMode("torch FP32", "fp32", cudnn_tf32=False, matmul_tf32=False)  # the FP32 reference
TORCH_TF32 = TorchMode("torch TF32", "tf32", cudnn_tf32=True, matmul_tf32=True)
TORCH_BF16 = TorchMode("torch bf16 autocast", "bf16", autocast_bf16=True)
TORCH_MODES = (TORCH_FP32, TORCH_TF32, TORCH_DEFAULT, TORCH_BF16)
#: The PyTorch mode beside each of ours in the summary: the same products' precision.
SAME_MODE = {"fp32": TORCH_FP32, "tf32": TORCH_TF32, "bf16": TORCH_BF16}


_TORCH_DEFAULTS: dict = {}


def torch_defaults() -> dict:
    """PyTorch's TF32 flags as it set them at import, read before this script changes any."""
    import torch

    if not _TORCH_DEFAULTS:
        _TORCH_DEFAULTS.update(cudnn=torch.backends.cudnn.allow_tf32, matmul=torch.backends.cuda.matmul.allow_tf32)
    return _TORCH_DEFAULTS


@contextlib.contextmanager
def torch_mode(mode: TorchMode, forward: bool = True):
    """Inside: PyTorch's TF32 flags as `mode` says (its defaults where None), and with
    `forward` the bf16 autocast of the mode (the forward pass only, as PyTorch advises)."""
    import torch

    defaults = torch_defaults()
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = defaults["cudnn"] if mode.cudnn_tf32 is None else mode.cudnn_tf32
    torch.backends.cuda.matmul.allow_tf32 = defaults["matmul"] if mode.matmul_tf32 is None else mode.matmul_tf32
    try:
        with (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if forward and mode.autocast_bf16
              else contextlib.nullcontext()):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def torch_step_outputs(net, x: np.ndarray, y: np.ndarray, mode: TorchMode) -> dict:
    """One forward (dropout off) + mean softmax cross-entropy + backward of the torch mirror
    of `net` (its weights) on the GPU in `mode`: {'loss': (), 'logits': (N, K),
    '<layer>.<param>': that parameter's gradient}, float64 NumPy arrays."""
    import torch

    tnet = torch_mirror(net, device="cuda")
    tnet.eval()  # dropout off, as validate
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(np.asarray(y, dtype=np.int64)).cuda()
    with torch_mode(mode, forward=True):
        logits = tnet(xt)
    with torch_mode(mode, forward=False):
        loss = torch.nn.functional.cross_entropy(logits.float(), yt)
        loss.backward()
    out = {"loss": loss.detach().cpu().numpy(), "logits": logits.detach().float().cpu().numpy()}
    out.update(mirror_gradients(net, tnet))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def torch_step(args, x, y, mode: TorchMode):
    """The training step in PyTorch eager on the GPU, in `mode`."""
    import torch

    tnet = torch_mirror(paper_net(hidden=args.hidden, seed=0, backend="numpy"), device="cuda")
    opt = torch.optim.SGD(tnet.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(np.asarray(y, dtype=np.int64)).cuda()
    torch.backends.cudnn.benchmark = False  # its default: what a user gets

    def step():
        opt.zero_grad(set_to_none=True)
        with torch_mode(mode, forward=True):
            logits = tnet(xt)
        with torch_mode(mode, forward=False):
            loss_fn(logits.float(), yt).backward()
            opt.step()
    return step


def torch_cuda() -> bool:
    if not torch_available():
        return False
    import torch

    return torch.cuda.is_available()


def validate(backend, hidden: int, x: np.ndarray, y: np.ndarray) -> tuple[bool, str]:
    """One step of paper_net(hidden, seed 0) on `backend` (dropout off, no update),
    verified layer by layer against the exact result of its precision mode
    (tinycnn.verify.verify_step): (verified, the lines for the log: the verdict, the
    fragile windows, any failing check, the end-to-end distance from the float64 chain)."""
    report = verify_step(backend, lambda be: paper_net(hidden=hidden, in_size=x.shape[-1], seed=0, backend=be),
                         x, y, train=False, sgd=None)
    lines = report.explain().splitlines()
    keep = lines[:2] + [c.line() for c in report.failures()] + [line for line in lines if line.startswith("end to end")]
    return report.ok, "\n".join(dict.fromkeys(keep))


def validate_modes(args, x, y, use_torch: bool) -> dict:
    """{precision: verified} for each of our modes (validate); with PyTorch, its modes
    against PyTorch FP32 (TF32 off) on the GPU, reported only."""
    print(f"validation: one step at batch {len(x)}, dropout off, each of our modes against the exact result "
          f"of its mode (tinycnn.verify)", flush=True)
    passed = {}
    for precision in args.precisions:
        ok, text = validate(backends.get("cuda", precision), args.hidden, x, y)
        print(("validated: " if ok else "validation FAILED: ") + text
              + ("" if ok else f"\n(tinycnn {precision} is not timed)"), flush=True)
        passed[precision] = ok
    if use_torch:
        reference_net = paper_net(hidden=args.hidden, seed=0, backend="numpy")
        torch_defaults()
        reference = torch_step_outputs(reference_net, x, y, TORCH_FP32)
        print("FP32 reference for PyTorch's modes: PyTorch FP32 (TF32 off) on the GPU", flush=True)
        for mode in (TORCH_TF32, TORCH_DEFAULT, TORCH_BF16):
            rows = compare(torch_step_outputs(reference_net, x, y, mode), reference, mode.precision)
            name, err, tol = rows[0]
            print(f"{mode.name} against the reference: worst {name} rel. error {err:.1e} "
                  f"(our {mode.precision} tolerance {tol:g}; reported, not enforced)", flush=True)
    return passed


# ------------------------------------------------------------------ the model
def start_predictions(args, device_name: str) -> tuple:
    """(thread, results): bench.gpu_model's predicted step (ms) for each of our modes,
    computed in a thread (nvcc, if its output is not cached yet, runs on other cores
    while the GPU validates); results['note'] says which model device, or why none."""
    from bench import gpu_model

    results = {}
    device = gpu_model.model_device(device_name)
    if device is None:
        device = next(iter(gpu_model.DEVICES))
        results["note"] = f"the model's {device} (it has no entry for a {device_name})"
    else:
        results["note"] = f"the model's {device}"

    def work():
        try:
            for precision in args.precisions:
                results[precision] = gpu_model.predicted_step_ms(precision, args.batch, args.hidden, SIZE, device)
        except (SystemExit, Exception) as e:  # no nvcc / cuobjdump here: no prediction, said plainly
            results["note"] = f"no prediction: {e}"

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, results


# ------------------------------------------------------------------ timing
def time_events(step, repeats: int, warmup: int, events) -> list[float]:
    """Seconds per call of `step`, by device events (cupy.cuda.Event or torch.cuda.Event)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start, stop = events()
        start.record()
        step()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3 if hasattr(start, "elapsed_time")
                     else _cupy_elapsed(start, stop))
    return times


def _cupy_elapsed(start, stop) -> float:
    import cupy

    return cupy.cuda.get_elapsed_time(start, stop) / 1e3


def ratio_lines(medians: dict) -> list[str]:
    """Each of our timings over each PyTorch (and NumPy) one: below 1, ours is faster."""
    ours = [k for k in medians if k.startswith("tinycnn")]
    theirs = [k for k in medians if not k.startswith("tinycnn")]
    return [f"{a} / {b}: {medians[a] / medians[b]:.2f} (below 1: ours is faster)" for a in ours for b in theirs]


def summary_lines(args, medians: dict, predicted: dict) -> list[str]:
    """One line per mode of ours: eager, graph, PyTorch in the same mode, the model's
    predicted step and measured (graph) / predicted."""
    def cell(v, width: int) -> str:
        return f"{v:{width}.2f}" if v is not None else "-".rjust(width)

    lines = [f"{'mode':5s} {'ours eager':>10s} {'ours graph':>10s} {'torch (its mode)':>30s} "
             f"{'predicted':>9s} {'graph / predicted':>17s}"]
    for p in args.precisions:
        eager, graph = medians.get(f"tinycnn {p} eager"), medians.get(f"tinycnn {p} graph")
        theirs, pred = medians.get(SAME_MODE[p].name), predicted.get(p)
        torch_cell = f"{theirs * 1e3:.2f} ({SAME_MODE[p].name})" if theirs is not None else "-"
        ratio = graph * 1e3 / pred if graph is not None and pred else None
        lines.append(f"{p:5s} {cell(eager and eager * 1e3, 10)} {cell(graph and graph * 1e3, 10)} "
                     f"{torch_cell:>30s} {cell(pred, 9)} {cell(ratio, 17)}")
    lines.append(f"(ms per step: medians of {args.repeats} after {args.warmup} warm-up steps, CUDA events; "
                 f"predicted: {predicted.get('note', 'none')}, for the captured step: a model, not a measurement)")
    return lines


def main(argv=None) -> int:
    t0 = time.time()
    args = parse_args(argv)
    try:
        cuda = backends.get("cuda", args.precisions[0])
    except backends.BackendUnavailable as e:
        print(f"skipped: {e}")
        return 0
    import cupy

    use_torch = torch_cuda()
    series = 2 * len(args.precisions) + (len(TORCH_MODES) if use_torch else 0)
    print(f"plan: validation at batch {args.validate_batch} ({len(args.precisions)} modes against the FP32 "
          f"reference), then {series} series of {args.warmup} + {args.repeats} steps at batch {args.batch}"
          + (f"; no series starts after {args.time_limit:g} s" if args.time_limit else ""), flush=True)
    predictor, predicted = start_predictions(args, cuda.device_name())
    rng = np.random.default_rng(0)
    vx = rng.standard_normal((args.validate_batch, 1, SIZE, SIZE)).astype(np.float32)
    vy = rng.integers(0, 2, args.validate_batch)
    passed = validate_modes(args, vx, vy, use_torch)
    predictor.join()  # nvcc done before anything is timed
    print(f"validated and predicted at {time.time() - t0:.0f} s", flush=True)

    x = rng.standard_normal((args.batch, 1, SIZE, SIZE)).astype(np.float32)
    y = rng.integers(0, 2, args.batch)
    cupy_events = lambda: (cupy.cuda.Event(), cupy.cuda.Event())  # noqa: E731
    torch_events = lambda: (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))  # noqa: E731
    todo = []
    for precision in args.precisions:
        if not passed[precision]:
            continue
        be = backends.get("cuda", precision)
        todo.append((f"tinycnn {precision} eager", cupy_events,
                     lambda be=be: training_step(paper_net(hidden=args.hidden, backend=be), x, y)))

        def graph(be=be):
            run, _, inputs, _ = gpu_model.training_step(be, args.batch, args.hidden, SIZE)
            return lambda: run(*inputs)
        todo.append((f"tinycnn {precision} graph", cupy_events, graph))
    if use_torch:
        import torch

        for mode in TORCH_MODES:
            todo.append((mode.name, torch_events, lambda mode=mode: torch_step(args, x, y, mode)))
    times = {}
    for name, events, make in todo:
        if args.time_limit and time.time() - t0 > args.time_limit:
            print(f"time limit: {name} not timed ({time.time() - t0:.0f} s > {args.time_limit:g} s)", flush=True)
            continue
        times[name] = time_events(make(), args.repeats, args.warmup, events)
        print(f"timed {name} at {time.time() - t0:.0f} s", flush=True)
    if use_torch:
        print(f"torch {torch.__version__}: default TF32 flags cudnn {torch_defaults()['cudnn']}, "
              f"matmul {torch_defaults()['matmul']}")
    else:
        print("torch: not installed with CUDA, not compared")
    if args.numpy_repeats:
        times["numpy"] = host_times(training_step(paper_net(hidden=args.hidden, backend="numpy"), x, y),
                                    args.numpy_repeats)

    print(f"paper_net(hidden={args.hidden}), batch {args.batch}, {SIZE}x{SIZE}x1, SGD momentum {MOMENTUM}; "
          f"{cuda.device_name()}")
    med = {}
    for name, t in times.items():
        med[name] = statistics.median(t)
        print(f"{name:<20} {med[name] * 1e3:10.2f} ms/step  (min {min(t) * 1e3:.2f}, max {max(t) * 1e3:.2f}, "
              f"n={len(t)})  {args.batch / med[name]:9.1f} images/s")
    for line in ratio_lines(med):
        print(line)
    print()
    for line in summary_lines(args, med, predicted):
        print(line)
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
