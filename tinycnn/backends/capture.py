"""A training step recorded once and replayed: the kernel backends' CUDA graphs.

``backend.capture(step)`` returns a callable that runs ``step(*inputs)``. On "cuda"
and "cuda-emu" (``kernel_backend.KernelBackend``) the calls go like this:

1. The first call runs the step as usual, but every array the ops allocate comes
   from a ``StepArena`` that remembers it, in call order. The inputs are copied into
   buffers the captured step owns, so their addresses never change either.
2. Every later call runs the step's Python code as a *dry pass*: the ops compute
   their grids and arguments, take the same arena arrays in the same order, and hand
   their launches to a list instead of the device. Values that change from step to
   step (dropout seeds, the learning rate, Adam's bias corrections) go to the
   backend's dynamic scalars (``KernelBackend._dynamic``), which the kernels read
   from device memory. The list is checked against the one recorded at the second
   call: same kernels, grids, arrays and fixed scalars. Then the dynamic scalars are
   uploaded and the recorded launches replay: on a GPU as one CUDA graph launch
   (captured once, from the raw launch list alone, so nothing else can leak into
   the capture), on cuda-emu by running the list. If a dry pass launches something
   else, its own list runs instead, launch by launch, and the step is still exact.

So a replayed step allocates nothing, issues one graph launch, and never waits for
the host; cuda-emu runs the very same launch lists, so CI tests the mechanism.

What a step may do: launch kernels through the backend's ops only (a CuPy operation
of its own would not be replayed), read no device value on the host, keep no array it
allocates beyond the next call (the arena hands it out again), and be called with
inputs of one shape (calls with other shapes, such as an epoch's last, smaller
batch, run eagerly, outside the arena).
"""

from __future__ import annotations

import numpy as np


class StepArena:
    """The arrays one step allocates, handed out again, in the same order, to every
    later call of the step (``take``); a request that differs from the recorded one
    (shape or dtype) gets a fresh array and marks the call as diverged."""

    def __init__(self, allocate):
        self._allocate = allocate
        self.buffers: list = []
        self.recording = True
        self.position = 0
        self.diverged = False

    def start(self, recording: bool) -> None:
        self.recording, self.position, self.diverged = recording, 0, False

    def take(self, shape, dtype):
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        if self.recording:
            buf = self._allocate(shape, dtype)
            self.buffers.append(buf)
            return buf
        i, self.position = self.position, self.position + 1
        if i < len(self.buffers):
            buf = self.buffers[i]
            if tuple(buf.shape) == shape and buf.dtype == dtype:
                return buf
        self.diverged = True
        return self._allocate(shape, dtype)


class CapturedStep:
    """The callable ``KernelBackend.capture`` returns (see the module docstring).

    ``replays`` counts the calls that ran as one recorded launch list (a CUDA graph on
    the GPU), ``fallbacks`` those whose dry pass launched something else."""

    def __init__(self, backend, step):
        self.backend, self.step = backend, step
        self.inputs = None
        self.key = None
        self.arena = None
        self.launches = None
        self.graph = None
        self.calls = self.replays = self.fallbacks = 0

    def __call__(self, *inputs):
        be = self.backend
        key = tuple((tuple(a.shape), np.dtype(a.dtype)) for a in inputs)
        if self.inputs is None:
            self.key = key
            self.inputs = [be._allocate(shape, dtype) for shape, dtype in key]
            self.arena = StepArena(be._allocate)
        if key != self.key:
            return self.step(*inputs)  # another shape: an eager step of its own
        for dst, src in zip(self.inputs, inputs):
            be._copy(dst, src)
        be._dyn_next = 0  # dynamic scalars in call order: the same slots every call
        self.calls += 1
        if self.calls == 1:
            self.arena.start(recording=True)
            with be._stepping(self.arena):
                return self.step(*self.inputs)
        self.arena.start(recording=False)
        launches = []
        with be._stepping(self.arena, launches):
            out = self.step(*self.inputs)
        be._upload_dynamic()
        if self.launches is None and not self.arena.diverged:
            self.launches, self.graph = launches, be._make_graph(launches)
        if not self.arena.diverged and be._same_launches(launches, self.launches):
            be._launch_graph(self.graph)
            self.replays += 1
        else:
            for launch in launches:
                be._run(*launch)
            self.fallbacks += 1
        return out
