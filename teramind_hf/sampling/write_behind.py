"""Write-behind: a step's writes run in one background thread while the next batch is read and its model runs.

The sampler hands each batch's writes (x_{t-1}, history, output tiles, then the batch's progress records, in that
order in one job) to :class:`WriteBehind`. Jobs run one at a time in submission order, at most ``max_pending`` are
queued (the caller waits for the oldest beyond that, so memory stays bounded), and the first error of a job is
raised in the caller at the next :meth:`submit` or at :meth:`drain`. The sampler drains before a step ends, so
every write of step ``i`` is done before step ``i + 1`` (or another process, after the barrier) reads it, and a
progress record is written only after its data: resume after SIGKILL stays exact.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable


class WriteBehind:
    """One background writer thread with a bounded queue (see module doc); a context manager."""

    def __init__(self, max_pending: int = 2):
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teramind-write-behind")
        self._pending: deque[Future] = deque()

    def submit(self, job: Callable[[], None]) -> None:
        while len(self._pending) >= self.max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(job))

    def drain(self) -> None:
        """Wait for every job; raise the first error."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:  # already failing: let the queued jobs finish, keep the original error
            self._pool.shutdown(wait=True)
