"""Batches on their way to the GPU, race-free by construction: ``CudaStaging``, what
``backend.batch_copier()`` gives on "cuda" (staging.py says what a copier does).

Pinned host buffers make the host-to-device copies asynchronous, a copy stream of its
own lets them overlap the step in progress, and events order every reuse of a buffer
between the loader's thread and the training loop's stream.
"""

from __future__ import annotations

import threading

import numpy as np


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
