"""Batches on their way to the backend: a loader thread that gathers and transforms the
samples of each batch a few batches ahead, and the copier that moves them to the
backend's memory (HostCopier; CudaStaging on a GPU: pinned buffers, a copy stream of
its own and events that order every reuse), so the device never waits for the data
and never reads a buffer being refilled."""

from __future__ import annotations

import queue
import threading

import numpy as np

from .data import augment


def device_copier(backend, slots: int = 6):
    """What moves the loader's batches to the backend: a callable (x, y) -> backend
    arrays for the loader's worker thread, with acquire(x) and release(x) for the
    training loop around the step that reads them (HostCopier, CudaStaging)."""
    if getattr(backend, "name", "") == "cuda":
        return CudaStaging(backend, slots)
    return HostCopier(backend)


class HostCopier:
    """Batches for a backend whose ops wait for nothing: copies in, nothing to order."""

    def __init__(self, backend):
        self.backend = backend

    def __call__(self, x, y):
        return self.backend.asarray(x), self.backend.asarray(y, dtype=np.int32)

    def acquire(self, x) -> None:
        pass

    def release(self, x) -> None:
        pass


class CudaStaging:
    """Batches for the GPU, race-free by construction. A ring of `slots` pinned host and
    device buffer pairs: the worker fills a slot's pinned buffer and copies it on a copy
    stream of its own (overlapping the step in progress), recording `ready`; the
    training loop's stream waits for `ready` before the step reads the slot (acquire)
    and records `done` after it (release); the worker writes a slot again only once
    `done` has passed. Memory from a pool could be handed to the next copy while the
    step still reads it; these buffers are never freed, and every reuse is ordered."""

    class Slot:
        def __init__(self, cupy, pinned, x, y):
            self.host_x, self.host_y = pinned(x.shape, np.float32), pinned(y.shape, np.int32)
            self.x, self.y = cupy.empty(x.shape, np.float32), cupy.empty(y.shape, np.int32)
            self.ready = self.done = None
            self.free = threading.Event()
            self.free.set()

    def __init__(self, backend, slots: int):
        import cupy
        import cupyx

        self.cupy, self.pinned = cupy, lambda shape, dtype: cupyx.empty_pinned(shape, dtype=dtype)
        self.stream = None  # created on the worker thread, where it is used
        self.slots: list = [None] * slots
        self.next = 0
        self.by_array: dict = {}

    def __call__(self, x, y):
        i, self.next = self.next, (self.next + 1) % len(self.slots)
        slot = self.slots[i]
        if slot is None or slot.host_x.shape != x.shape or slot.host_y.shape != y.shape:
            slot = self.slots[i] = self.Slot(self.cupy, self.pinned, x, y)
        slot.free.wait()  # the training loop released it (its ring is longer than the loader's queue)
        slot.free.clear()
        if slot.done is not None:
            slot.done.synchronize()  # the step that read it has run
        if slot.ready is not None:
            slot.ready.synchronize()  # its last copy has left the pinned buffer
        np.copyto(slot.host_x, x)
        np.copyto(slot.host_y, y)
        if self.stream is None:
            self.stream = self.cupy.cuda.Stream(non_blocking=True)
        slot.x.set(slot.host_x, stream=self.stream)
        slot.y.set(slot.host_y, stream=self.stream)
        slot.ready = self.stream.record()
        self.by_array[id(slot.x)] = slot
        return slot.x, slot.y

    def acquire(self, x) -> None:
        self.cupy.cuda.get_current_stream().wait_event(self.by_array[id(x)].ready)

    def release(self, x) -> None:
        slot = self.by_array[id(x)]
        slot.done = self.cupy.cuda.get_current_stream().record()
        slot.free.set()


class BatchLoader:
    """Builds batches (gather + transform + copy to the backend) on a background thread,
    a few batches ahead, so the device never waits for the data. Yields
    (x on the backend, y on the backend, y on the host)."""

    def __init__(self, images, labels, samples, order, batch_size, start_batch=0, depth=3, to_device=None):
        self.images, self.labels, self.samples = images, labels, samples
        self.to_device = to_device or (lambda x, y: (x, y))
        self.batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)][start_batch:]
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, daemon=True)
        self.thread.start()

    def _fill(self):
        try:
            for idx in self.batches:
                s = self.samples[idx]
                y = self.labels[s[:, 0]]
                item = (*self.to_device(augment.gather(self.images, s), y), y)
                while not self.stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as e:  # hand the error to the consumer
            self.queue.put(e)

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for _ in range(len(self.batches)):
            item = self.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
