"""One training step of paper_net() on our CUDA kernels beside the NumPy reference, in
the same run.

    python -m bench.bench_step_cuda [--batch 64] [--hidden 1024] [--repeats 20] [--numpy-repeats 2]

Validate, then time: one step from the same seeded weights on both backends first
(loss, logits, every gradient and updated parameter must agree with NumPy), then
forward + loss + backward + SGD-momentum update timed with CUDA events after
warm-up steps (kernel compilation, allocator growth), and NumPy with the host clock
(CPU work is synchronous). Prints the median and spread of each and the speedup.
Exits cleanly (status 0, a message) where there is no GPU or no CuPy. Run from the
repository root.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

from bench.steps import MOMENTUM, host_times, training_step
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


def time_cuda(step, repeats: int, warmup: int) -> list[float]:
    import cupy

    for _ in range(warmup):
        step()
    cupy.cuda.get_current_stream().synchronize()
    times = []
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    for _ in range(repeats):
        start.record()
        step()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_step_cuda", description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=20, help="timed CUDA steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed CUDA steps first")
    ap.add_argument("--numpy-repeats", type=int, default=2, help="timed NumPy steps (slow)")
    ap.add_argument("--validate-batch", type=int, default=4, help="batch of the validation step")
    args = ap.parse_args(argv)

    try:
        cuda = backends.get("cuda")
    except backends.BackendUnavailable as e:
        print(f"skipped: {e}")
        return 0

    rng = np.random.default_rng(0)
    vx = rng.standard_normal((args.validate_batch, 1, 256, 256)).astype(np.float32)
    vy = rng.integers(0, 2, args.validate_batch)
    worst = validate(args, vx, vy)
    print(f"validated: one step on cuda matches numpy (worst rel. error {worst:.1e})")

    x = rng.standard_normal((args.batch, 1, 256, 256)).astype(np.float32)
    y = rng.integers(0, 2, args.batch)
    t_cuda = time_cuda(training_step(paper_net(hidden=args.hidden, backend="cuda"), x, y), args.repeats, args.warmup)
    t_np = host_times(training_step(paper_net(hidden=args.hidden, backend="numpy"), x, y), args.numpy_repeats)

    def show(name, device, t):
        med = statistics.median(t)
        print(f"{name:<6} {med * 1e3:10.2f} ms/step  (min {min(t) * 1e3:.2f}, max {max(t) * 1e3:.2f}, "
              f"n={len(t)})  {args.batch / med:9.1f} images/s  [{device}]")
        return med

    print(f"paper_net(hidden={args.hidden}), batch {args.batch}, 256x256x1, SGD momentum {MOMENTUM}")
    m_cuda = show("cuda", cuda.device_name(), t_cuda)
    m_np = show("numpy", backends.get("numpy").device_name(), t_np)
    print(f"speedup of cuda over numpy: {m_np / m_cuda:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
