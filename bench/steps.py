"""What the benchmark scripts share: one training step of a tinycnn network or of its
PyTorch mirror, host-clock timing and its one-line summary, the CPU's name and the
commit being measured.

A step is forward (train mode) + mean softmax cross-entropy + backward + one
SGD-momentum update, the same work on every backend and in PyTorch.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time

import numpy as np

from tinycnn.optim import SGD

LR, MOMENTUM = 1e-3, 0.9


def training_step(net, x, y, lr: float = LR, momentum: float = MOMENTUM):
    """A closure running one training step of `net` on the batch x (N, 1, H, W), y (N,);
    it returns (loss, logits) as arrays of the net's backend. The batch is moved to the
    backend once, here, so a device backend times no host transfers."""
    be = net.backend
    opt = SGD(net.parameters(), lr=lr, momentum=momentum, backend=be)
    xd, yd = be.asarray(x), be.asarray(y, dtype=np.int32)

    def step():
        logits = net.forward(xd, train=True)
        loss, dlogits = be.softmax_cross_entropy(logits, yd)
        net.backward(dlogits)
        opt.step()
        return loss, logits

    return step


def torch_training_step(tnet, x, y, lr: float = LR, momentum: float = MOMENTUM):
    """The same step for a torch.nn.Module (bench/torch_net.torch_mirror) on the CPU."""
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(np.asarray(y, dtype=np.int64))
    opt = torch.optim.SGD(tnet.parameters(), lr=lr, momentum=momentum)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(tnet(xt), yt).backward()
        opt.step()

    return step


def host_times(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call of `fn` by the host clock, after `warmup` untimed calls
    (first-touch pages, thread pools, JIT compilation). Only for synchronous (CPU) work."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def cpu_description() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def describe(times: list[float]) -> str:
    """Median and range of step times, in seconds."""
    return f"{statistics.median(times):7.3f} s (min {min(times):.3f}, max {max(times):.3f})"


def git_commit() -> str:
    """The short commit of this tree, marked when it has uncommitted changes; 'unknown' without git."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
