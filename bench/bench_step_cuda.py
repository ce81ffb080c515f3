"""One training step of paper_net() on our CUDA kernels beside PyTorch eager on the
same GPU, in the same run.

    python -m bench.bench_step_cuda [--batch 64] [--hidden 1024] [--repeats 20] [--numpy-repeats 0]

Validate, then time. First one step from the same seeded weights on cuda and on the
NumPy reference (loss, logits, every gradient and updated parameter must agree).
Then forward + loss + backward + SGD-momentum update, timed with CUDA events after
warm-up steps (kernel compilation, allocator growth, the graph capture):

    tinycnn eager   the step's ops launched one by one from Python
    tinycnn graph   the training loop's step (tinycnn/mammo/train.py: step statistics
                    on the device, the optimizer guarded by them), captured once and
                    replayed as one CUDA graph (backend.capture)
    torch TF32      the same network in PyTorch eager with cuDNN at its defaults
                    (TF32 convolutions)
    torch FP32      the same with TF32 off (torch.backends.cudnn.allow_tf32 and
                    torch.backends.cuda.matmul.allow_tf32 False): strict FP32, as ours

and prints each median and spread and the ratios to PyTorch. PyTorch runs only where
it is installed with CUDA; NumPy is timed only with --numpy-repeats N (slow). Exits
cleanly (status 0, a message) where there is no GPU or no CuPy. Run from the
repository root.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

from bench import gpu_model
from bench.steps import LR, MOMENTUM, host_times, training_step
from bench.torch_net import torch_available, torch_mirror
from tinycnn import backends
from tinycnn.gradcheck import rel_error
from tinycnn.model import paper_net


def validate(args, x, y) -> float:
    """One step on each backend from the same weights; returns the worst relative error."""
    outs = {}
    for name in ("numpy", "cuda"):
        net = paper_net(hidden=args.hidden, seed=0, backend=name)
        loss, logits = training_step(net, x, y)()
        be = net.backend
        outs[name] = ([be.to_numpy(loss), be.to_numpy(logits)]
                      + [be.to_numpy(p.value) for p in net.parameters()])
    worst = max(rel_error(a, b) for a, b in zip(outs["cuda"], outs["numpy"]))
    if worst > 1e-4:
        raise SystemExit(f"validation FAILED: a step on cuda differs from numpy by rel. error {worst:.2e}")
    return worst


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


def torch_step(args, x, y, tf32: bool):
    """The same step in PyTorch eager on the GPU, TF32 on (cuDNN's default) or off."""
    import torch

    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = False  # its default: what a user gets
    tnet = torch_mirror(paper_net(hidden=args.hidden, seed=0, backend="numpy"), device="cuda")
    opt = torch.optim.SGD(tnet.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(np.asarray(y, dtype=np.int64)).cuda()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(tnet(xt), yt).backward()
        opt.step()
    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_step_cuda", description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=20, help="timed GPU steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed GPU steps first")
    ap.add_argument("--numpy-repeats", type=int, default=0, help="timed NumPy steps (slow; 0: none)")
    ap.add_argument("--validate-batch", type=int, default=4, help="batch of the validation step")
    args = ap.parse_args(argv)

    try:
        cuda = backends.get("cuda")
    except backends.BackendUnavailable as e:
        print(f"skipped: {e}")
        return 0
    import cupy

    rng = np.random.default_rng(0)
    vx = rng.standard_normal((args.validate_batch, 1, 256, 256)).astype(np.float32)
    vy = rng.integers(0, 2, args.validate_batch)
    worst = validate(args, vx, vy)
    print(f"validated: one step on cuda matches numpy (worst rel. error {worst:.1e})")

    x = rng.standard_normal((args.batch, 1, 256, 256)).astype(np.float32)
    y = rng.integers(0, 2, args.batch)
    cupy_events = lambda: (cupy.cuda.Event(), cupy.cuda.Event())  # noqa: E731
    times = {"tinycnn eager": time_events(training_step(paper_net(hidden=args.hidden, backend="cuda"), x, y),
                                          args.repeats, args.warmup, cupy_events)}
    run, _, inputs, _ = gpu_model.training_step(cuda, args.batch, args.hidden, 256)
    times["tinycnn graph"] = time_events(lambda: run(*inputs), args.repeats, args.warmup, cupy_events)
    if torch_available():
        import torch

        if torch.cuda.is_available():
            torch_events = lambda: (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))  # noqa: E731
            for name, tf32 in (("torch TF32", True), ("torch FP32", False)):
                times[name] = time_events(torch_step(args, x, y, tf32), args.repeats, args.warmup, torch_events)
        else:
            print("torch: installed without CUDA, not compared")
    else:
        print("torch: not installed, not compared")
    if args.numpy_repeats:
        times["numpy"] = host_times(training_step(paper_net(hidden=args.hidden, backend="numpy"), x, y),
                                    args.numpy_repeats)

    print(f"paper_net(hidden={args.hidden}), batch {args.batch}, 256x256x1, SGD momentum {MOMENTUM}; "
          f"{cuda.device_name()}")
    med = {}
    for name, t in times.items():
        med[name] = statistics.median(t)
        print(f"{name:<14} {med[name] * 1e3:10.2f} ms/step  (min {min(t) * 1e3:.2f}, max {max(t) * 1e3:.2f}, "
              f"n={len(t)})  {args.batch / med[name]:9.1f} images/s")
    for ours in ("tinycnn eager", "tinycnn graph"):
        for theirs in ("torch TF32", "torch FP32", "numpy"):
            if theirs in med:
                print(f"{ours} / {theirs}: {med[ours] / med[theirs]:.2f} (below 1: ours is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
