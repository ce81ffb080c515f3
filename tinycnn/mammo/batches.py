"""Batches on their way to the backend: a loader thread that gathers and transforms the
samples of each batch a few batches ahead and hands them to the backend's own copier
(``backend.batch_copier()``: tinycnn/backends/staging.py, cuda_staging.py on a GPU),
so the device never waits for the data and never reads a buffer being refilled."""

from __future__ import annotations

import queue
import threading


from .data import augment


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
