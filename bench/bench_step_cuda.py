"""One training step of paper_net() on our CUDA kernels, in each precision mode, beside
PyTorch eager on the same GPU, in the same run.

    python -m bench.bench_step_cuda [--batch 64] [--hidden 1024] [--repeats 20]
                                    [--precisions fp32,tf32,bf16] [--numpy-repeats 0]

Validate, then time. First, for each precision mode of ours, one step from the same
seeded weights (forward with dropout off, loss, backward) against the FP32 reference:
PyTorch on the GPU with TF32 off, or the NumPy reference where PyTorch has no CUDA. The
loss, the logits and every gradient must agree within the mode's tolerance (TOLERANCE,
with the reasons). The PyTorch modes are checked against the same reference and their
errors printed (not enforced: they are PyTorch's numerics).

Then forward + loss + backward + SGD-momentum update, timed with CUDA events after
warm-up steps (kernel compilation, allocator growth, the graph capture):

    tinycnn <mode> eager   the step's ops launched one by one from Python, in precision
                           mode fp32 (CUDA cores), tf32 or bf16 (tensor cores)
    tinycnn <mode> graph   the training loop's step (tinycnn/mammo/train.py: step statistics
                           on the device, the optimizer guarded by them), captured once and
                           replayed as one CUDA graph (backend.capture)
    torch default          the same network in PyTorch eager at its defaults: cuDNN with
                           TF32 convolutions (torch.backends.cudnn.allow_tf32 True), the
                           matmul TF32 flag as PyTorch sets it (False since 1.12)
    torch FP32             TF32 off (cudnn.allow_tf32 and cuda.matmul.allow_tf32 False): strict FP32
    torch bf16 autocast    torch.autocast("cuda", torch.bfloat16) around the forward pass

and prints each median and spread and the ratios to PyTorch. PyTorch runs only where
it is installed with CUDA; NumPy is timed only with --numpy-repeats N (slow). Exits
cleanly (status 0, a message) where there is no GPU or no CuPy. Run from the
repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys

import numpy as np

from bench import gpu_model
from bench.steps import LR, MOMENTUM, host_times, training_step
from bench.torch_net import mirror_gradients, torch_available, torch_mirror
from tinycnn import backends
from tinycnn.gradcheck import rel_error
from tinycnn.model import paper_net
from tinycnn.precision import PRECISIONS

SIZE = 256  # the paper's input: 256 x 256 x 1

#: Norm-wise relative error (tinycnn.gradcheck.rel_error) allowed between one step in a
#: precision mode and the FP32 reference, by what is compared. Measured before choosing
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
    return ap.parse_args(argv)


# ------------------------------------------------------------------ validation
def step_outputs(net, x: np.ndarray, y: np.ndarray) -> dict:
    """One forward (dropout off: the same function in every framework) + mean softmax
    cross-entropy + backward of a tinycnn net on its backend: {'loss': (), 'logits':
    (N, K), '<layer>.<param>': that parameter's gradient}, float64 NumPy arrays."""
    be = net.backend
    logits = net.forward(be.asarray(x), train=False)
    loss, dlogits = be.softmax_cross_entropy(logits, np.asarray(y, dtype=np.int32))
    net.backward(dlogits)
    out = {"loss": be.to_numpy(loss), "logits": be.to_numpy(logits)}
    for i, layer in enumerate(net.layers):
        for name, p in layer.params.items():
            out[f"{i}.{name}"] = be.to_numpy(p.grad)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


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


def check(label: str, outputs: dict, reference: dict, precision: str) -> str:
    """One line for the log when every array is within tolerance; otherwise SystemExit
    naming each array that is not."""
    rows = compare(outputs, reference, precision)
    bad = [f"{name} {err:.2e} > {tol:g}" for name, err, tol in rows if not err <= tol]
    if bad:
        raise SystemExit(f"validation FAILED: {label} against the FP32 reference: " + "; ".join(bad))
    name, err, tol = rows[0]
    return f"validated: {label} matches the FP32 reference (worst {name}: rel. error {err:.1e}, tolerance {tol:g})"


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
TORCH_BF16 = TorchMode("torch bf16 autocast", "bf16", autocast_bf16=True)
TORCH_MODES = (TORCH_DEFAULT, TORCH_FP32, TORCH_BF16)


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
    """step_outputs of the torch mirror of `net` (its weights) on the GPU in `mode`."""
    import torch

    tnet = torch_mirror(net, device="cuda")
    tnet.eval()  # dropout off, as step_outputs
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


def validate(args, x, y, use_torch: bool) -> None:
    """Each of our modes (and each PyTorch mode, reported only) against the FP32 reference."""
    reference_net = paper_net(hidden=args.hidden, seed=0, backend="numpy")
    if use_torch:
        torch_defaults()
        reference = torch_step_outputs(reference_net, x, y, TORCH_FP32)
        where = "PyTorch FP32 (TF32 off) on the GPU"
    else:
        reference = step_outputs(reference_net, x, y)
        where = "the NumPy reference (FP32)"
    print(f"FP32 reference: {where}; batch {len(x)}, dropout off")
    for precision in args.precisions:
        net = paper_net(hidden=args.hidden, seed=0, backend=backends.get("cuda", precision))
        print(check(f"tinycnn {precision}", step_outputs(net, x, y), reference, precision))
    if use_torch:
        for mode in (TORCH_DEFAULT, TORCH_BF16):
            rows = compare(torch_step_outputs(reference_net, x, y, mode), reference, mode.precision)
            name, err, tol = rows[0]
            print(f"{mode.name} against the reference: worst {name} rel. error {err:.1e} "
                  f"(our {mode.precision} tolerance {tol:g}; reported, not enforced)")


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


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cuda = backends.get("cuda", args.precisions[0])
    except backends.BackendUnavailable as e:
        print(f"skipped: {e}")
        return 0
    import cupy

    use_torch = torch_cuda()
    rng = np.random.default_rng(0)
    vx = rng.standard_normal((args.validate_batch, 1, SIZE, SIZE)).astype(np.float32)
    vy = rng.integers(0, 2, args.validate_batch)
    validate(args, vx, vy, use_torch)

    x = rng.standard_normal((args.batch, 1, SIZE, SIZE)).astype(np.float32)
    y = rng.integers(0, 2, args.batch)
    cupy_events = lambda: (cupy.cuda.Event(), cupy.cuda.Event())  # noqa: E731
    times = {}
    for precision in args.precisions:
        be = backends.get("cuda", precision)
        times[f"tinycnn {precision} eager"] = time_events(
            training_step(paper_net(hidden=args.hidden, backend=be), x, y), args.repeats, args.warmup, cupy_events)
        run, _, inputs, _ = gpu_model.training_step(be, args.batch, args.hidden, SIZE)
        times[f"tinycnn {precision} graph"] = time_events(lambda: run(*inputs), args.repeats, args.warmup,
                                                          cupy_events)
    if use_torch:
        import torch

        torch_events = lambda: (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))  # noqa: E731
        for mode in TORCH_MODES:
            times[mode.name] = time_events(torch_step(args, x, y, mode), args.repeats, args.warmup, torch_events)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
