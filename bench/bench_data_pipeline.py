"""Does the data pipeline keep the GPU fed? One training step of paper_net on the CUDA
backend, timed two ways in the same run:

- preloaded: the same batch, already on the device, every step (the GPU's own pace);
- pipeline:  the trainer's BatchLoader (gather + the six transforms on a background
             thread) and the host-to-device copy of every batch, as in training.

    python -m bench.bench_data_pipeline [--image-size 256] [--hidden 1024] [--batch 32] [--steps 30]

The loader's first batch is first checked against the samples it names (validate,
then time). Each is timed with CUDA events around a run of steps after warm-up, and the script
prints ms/step for both and their ratio; the target is pipeline <= 1.10 x preloaded.
Exits cleanly (status 0, a message) where there is no GPU or no CuPy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np

from tinycnn import backends
from tinycnn.mammo.data import augment
from tinycnn.mammo.data.synthetic import generate
from tinycnn.mammo.data.preprocess import normalise
from tinycnn.model import paper_net
from tinycnn.optim import make_optimizer
from tinycnn.mammo.train import TrainConfig, Trainer

TARGET = 1.10


def timed(cp, fn, steps):
    """ms per call: CUDA events on the GPU; the host clock on the CPU dry run."""
    if cp is None:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t0) * 1000 / steps
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(steps):
        fn()
    stop.record()
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / steps


def validate_loader(trainer, be, images, labels, samples) -> None:
    """Validate, then time: the loader's first batch, on the backend, is exactly the
    gathered (ROI, transform) samples it names, with their labels."""
    loader = trainer.loader(0)
    try:
        x, y, y_host = next(iter(loader))
        idx = loader.batches[0]
        expected = augment.gather(images, samples[idx])
        if not (np.array_equal(be.to_numpy(x), expected) and np.array_equal(y_host, labels[samples[idx, 0]])
                and np.array_equal(be.to_numpy(y), y_host)):
            raise SystemExit("validation failed: the loader's batch differs from the samples it names")
    finally:
        loader.close()
    print("validated: the loader's first batch equals its samples, gathered and transformed on the host")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_data_pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rois", type=int, default=64, help="synthetic ROIs per class to draw batches from")
    p.add_argument("--backend", default="cuda", help="cuda (the measurement); numpy etc. only to dry-run the script")
    args = p.parse_args(argv)
    try:
        be = backends.get(args.backend)
        cp = None
        if args.backend == "cuda":
            import cupy as cp
    except (backends.BackendUnavailable, ImportError) as e:
        print(f"skipped: no {args.backend} backend here ({e})")
        return 0

    t0 = time.time()
    images, labels, _, _ = generate(args.rois, args.rois, size=args.image_size, seed=0)
    images = np.stack([normalise(im) for im in images])
    samples = augment.expand(np.arange(len(labels)))
    print(f"{len(samples)} samples of {args.image_size}x{args.image_size} ({time.time() - t0:.1f} s to render)")

    net = paper_net(hidden=args.hidden, in_size=args.image_size, backend=args.backend, seed=0)
    n_test = args.batch
    config = TrainConfig(epochs=1, batch_size=args.batch, optimizer="sgd", lr=1e-3, seed=0)
    with tempfile.TemporaryDirectory() as out:
        # the trainer's own step (forward, loss read-back and NaN check, backward, update)
        trainer = Trainer(net, make_optimizer("sgd", net, 1e-3), images, labels, samples, samples[:n_test],
                          config, out, progress=False, log=lambda *a: None)
        warm = 5
        validate_loader(trainer, be, images, labels, samples)

        x0, y0 = be.asarray(augment.gather(images, samples[:args.batch])), labels[samples[:args.batch, 0]]
        y0_dev = be.asarray(y0, dtype=np.int32)
        for _ in range(warm):
            trainer.train_step(x0, y0_dev, y0)
        preloaded = timed(cp, lambda: trainer.train_step(x0, y0_dev, y0), args.steps)

        # batches of the trainer's loader: gather + transforms + device copy on its worker thread
        def epochs():
            epoch = 0
            while True:
                loader = trainer.loader(epoch)
                try:
                    yield from loader
                finally:
                    loader.close()
                epoch += 1

        stream = epochs()

        def pipeline_step():
            trainer.train_step(*next(stream))

        try:
            for _ in range(warm):
                pipeline_step()
            pipeline = timed(cp, pipeline_step, args.steps)
        finally:
            stream.close()

    ratio = pipeline / preloaded
    print(f"paper_net {args.image_size}px hidden {args.hidden} batch {args.batch} on {be.device_name()}"
          + ("" if cp is not None else " (CPU dry run: host clock)"))
    print(f"preloaded batch : {preloaded:8.2f} ms/step")
    print(f"data pipeline   : {pipeline:8.2f} ms/step  ({ratio:.3f} x preloaded; target <= {TARGET:.2f})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
