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
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.steps import cpu_description, describe, host_times, torch_training_step, training_step  # noqa: E402
from bench.torch_net import check_mirror, torch_available, torch_mirror  # noqa: E402
from tinycnn.model import paper_net  # noqa: E402


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
    print(f"CPU: {cpu_description()}; NumPy {np.__version__}")
    has_torch = torch_available()
    if has_torch:
        import torch

        tnet = torch_mirror(net)
        err = check_mirror(net, tnet, x[:2])
        print(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads); "
              f"mirror validated: logits rel. error {err:.1e}")

    t_np = host_times(training_step(net, x, y), args.repeats)
    print(f"numpy  {describe(t_np)}  {args.batch / statistics.median(t_np):6.1f} images/s")
    if has_torch:
        t_torch = host_times(torch_training_step(tnet, x, y), args.repeats)
        print(f"torch  {describe(t_torch)}  {args.batch / statistics.median(t_torch):6.1f} images/s")
        print(f"numpy / torch = {statistics.median(t_np) / statistics.median(t_torch):.2f}x")
    else:
        print("torch  not installed: no comparison")
    return 0


if __name__ == "__main__":
    sys.exit(main())
