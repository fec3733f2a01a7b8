"""CanvasBuffers: model input canvas tensors reused from batch to batch of the tile sampler.

A batch's canvases are a few MiB each; a fresh tensor of that size is fresh pages every time (the kernel zeroes
them on first touch), which costs about as much as filling them. The sampler takes a buffer for each canvas batch
it reads and hands it back once the batch is stepped; the next read (in the prefetch thread, while the model runs,
or in turn) fills it again. A buffer that a tensor kept by the step still views (a solver that keeps its input as
history, e.g. UniPC's ``last_sample``, when x_t is a view of the canvases) is not handed back: it stays with that
tensor until the write-behind thread has written it.
"""

from __future__ import annotations

import threading

import torch


class CanvasBuffers:
    """A bounded, thread-safe pool of canvas tensors keyed by shape and device."""

    def __init__(self, capacity: int = 4):
        # the offsets of a step (up to two) for the batch in flight and the one read ahead
        self.capacity = capacity
        self._free: list[torch.Tensor] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A float32 tensor of ``shape`` on ``device`` with arbitrary contents."""
        with self._lock:
            for j, buffer in enumerate(self._free):
                if tuple(buffer.shape) == shape and buffer.device == device:
                    return self._free.pop(j)
        return torch.empty(shape, device=device)

    def give_back(self, buffers: list[torch.Tensor], kept: list[torch.Tensor]) -> None:
        """``buffers`` are no longer read, except those whose storage a tensor of ``kept`` shares."""
        kept_storages = {t.untyped_storage().data_ptr() for t in kept}
        with self._lock:
            for buffer in buffers:
                if buffer.untyped_storage().data_ptr() not in kept_storages and len(self._free) < self.capacity:
                    self._free.append(buffer)
