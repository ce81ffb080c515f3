"""One training step of paper_net() on the NumPy reference, beside the same network in
PyTorch on the CPU (when installed), in the same run.

    python bench/bench_step_numpy.py [--batch 32] [--hidden 1024] [--repeats 5]

Validates first (the torch mirror's logits equal ours), then times forward + loss +
backward + SGD-momentum update with the host clock (CPU work is synchronous), after one
warm-up step, and prints the median and spread of each and their ratio.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.torch_net import check_mirror, torch_available, torch_mirror  # noqa: E402
from tinycnn.model import paper_net  # noqa: E402
from tinycnn.optim import SGD  # noqa: E402


def time_steps(step, repeats: int) -> list[float]:
    step()  # warm-up: first-touch allocation, BLAS thread start
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def numpy_step(net, x, y):
    opt = SGD(net.parameters(), lr=1e-3, momentum=0.9, backend=net.backend)

    def step():
        logits = net.forward(x, train=True)
        _, dlogits = net.backend.softmax_cross_entropy(logits, y)
        net.backward(dlogits)
        opt.step()

    return step


def torch_step(tnet, x, y):
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.SGD(tnet.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(tnet(xt), yt).backward()
        opt.step()

    return step


def describe(times: list[float]) -> str:
    return f"{statistics.median(times):7.3f} s (min {min(times):.3f}, max {max(times):.3f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, args.size, args.size), dtype=np.float32)
    y = rng.integers(0, 2, args.batch)
    net = paper_net(hidden=args.hidden, in_size=args.size, seed=0)

    print(f"paper_net training step: batch {args.batch}, {args.size}x{args.size}, hidden {args.hidden}, "
          f"SGD momentum; {datetime.date.today()}")
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; NumPy {np.__version__}")
    has_torch = torch_available()
    if has_torch:
        import torch

        tnet = torch_mirror(net)
        err = check_mirror(net, tnet, x[:2])
        print(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads); "
              f"mirror validated: logits rel. error {err:.1e}")

    t_np = time_steps(numpy_step(net, x, y), args.repeats)
    print(f"numpy  {describe(t_np)}  {args.batch / statistics.median(t_np):6.1f} images/s")
    if has_torch:
        t_torch = time_steps(torch_step(tnet, x, y), args.repeats)
        print(f"torch  {describe(t_torch)}  {args.batch / statistics.median(t_torch):6.1f} images/s")
        print(f"numpy / torch = {statistics.median(t_np) / statistics.median(t_torch):.2f}x")
    else:
        print("torch  not installed: no comparison")
    return 0


if __name__ == "__main__":
    sys.exit(main())
