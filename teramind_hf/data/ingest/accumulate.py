"""BinAccumulator: transcript counts of many batches summed into a zarr gene store, each touched chunk read, added
and written once per flush, in bounded memory."""

from __future__ import annotations

import numpy as np

DEFAULT_BUFFER_BINS = 4_000_000  # (bin, count) pairs summed in memory before a flush: 4M x 16 B = 64 MB


class BinAccumulator:
    """Sums transcripts of many batches into a zarr `genes` array (G, Z, Hb, Wb) with chunks (G, 1, cb, cb).

    Each transcript gets a key ordered by store chunk, then by position inside the chunk, so a flush visits every
    touched chunk once: read, add, write. Pending (key, count) pairs are compacted (summed per key) when they
    pass `buffer_bins`, and flushed when compaction does not halve them.
    """

    def __init__(self, array, buffer_bins: int = DEFAULT_BUFFER_BINS):
        self.array, self.buffer_bins = array, buffer_bins
        g, self.num_slices, self.hb, self.wb = array.shape
        self.num_genes, self.cb = g, array.chunks[2]
        self.chunk_rows, self.chunk_cols = -(-self.hb // self.cb), -(-self.wb // self.cb)
        self.per_chunk = g * self.cb * self.cb
        self._keys: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self.pending = 0
        self.max_pending = 0
        self.flushes = 0

    def add(self, bin_rows: np.ndarray, bin_cols: np.ndarray, sections: np.ndarray, genes: np.ndarray,
            counts: np.ndarray | None) -> int:
        """Add transcripts at in-grid bins (callers drop the rest); returns how many were added."""
        cb = self.cb
        chunk = (sections * self.chunk_rows + bin_rows // cb) * self.chunk_cols + bin_cols // cb
        local = (genes * cb + bin_rows % cb) * cb + bin_cols % cb
        keys = chunk * self.per_chunk + local
        weights = np.ones(len(keys)) if counts is None else np.asarray(counts, dtype=np.float64)
        self._keys.append(keys)
        self._weights.append(weights)
        self.pending += len(keys)
        self.max_pending = max(self.max_pending, self.pending)
        if self.pending > self.buffer_bins:
            self._compact()
            if self.pending > self.buffer_bins // 2:
                self.flush()
        return len(keys)

    def _compact(self) -> None:
        keys = np.concatenate(self._keys)
        self._keys = []
        order = np.argsort(keys)
        keys = keys[order]
        weights = np.concatenate(self._weights)[order]
        self._weights, order = [], None
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        self._keys, self._weights = [keys[starts]], [np.add.reduceat(weights, starts)]
        self.pending = len(starts)

    def flush(self) -> None:
        """Add every pending count into the store (each touched chunk once)."""
        if not self.pending:
            return
        self._compact()
        keys, weights = self._keys[0], self._weights[0]
        chunk_ids = keys // self.per_chunk
        starts = np.flatnonzero(np.r_[True, chunk_ids[1:] != chunk_ids[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        cb = self.cb
        for s, e in zip(starts, ends):
            chunk = int(chunk_ids[s])
            col_chunk = chunk % self.chunk_cols
            row_chunk = (chunk // self.chunk_cols) % self.chunk_rows
            z = chunk // (self.chunk_cols * self.chunk_rows)
            block = np.bincount(keys[s:e] % self.per_chunk, weights=weights[s:e], minlength=self.per_chunk)
            block = block.reshape(self.num_genes, cb, cb)
            r0, c0 = row_chunk * cb, col_chunk * cb
            r1, c1 = min(r0 + cb, self.hb), min(c0 + cb, self.wb)
            current = self.array[:, z, r0:r1, c0:c1]
            self.array[:, z, r0:r1, c0:c1] = (current + block[:, : r1 - r0, : c1 - c0]).astype(np.float32)
        self._keys, self._weights, self.pending = [], [], 0
        self.flushes += 1
