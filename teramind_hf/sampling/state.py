"""State backends of the tile sampler: what each tile holds between steps, and how far it got.

The state of a tile after step ``i`` is its ``x_t``, the solver history it needs at step ``i + 1`` (see
:mod:`teramind_hf.sampling.solver_state`) and its progress record. Two *parities* of buffers alternate: step
``i`` reads parity ``i % 2`` and writes parity ``(i + 1) % 2``, so a canvas of step ``i`` reads only what every
tile wrote at step ``i - 1``, whatever the order, batch or process that ran the tiles, and a step interrupted
half-way can be redone from the unchanged parity.

* :class:`MemoryState`: torch tensors holding every z chunk (the in-memory pipeline);
* :class:`ZarrState`: zarr arrays (``MemoryStore``, a local folder or an fsspec URL) holding one z chunk at a
  time (chunks are sampled one after another), one zarr chunk per tile, plus the progress record
  ``progress[z chunk, row, col]`` (-1: nothing, 0: initial noise written, ``i + 1``: step ``i`` written).
  A tile's data chunks are written before its record, and zarr writes each chunk object atomically (local:
  temporary file + rename), so after SIGKILL a tile is either recorded with complete data or redone; a
  resumed run reproduces the uninterrupted bytes.
"""

from __future__ import annotations

import numpy as np
import torch

from .grid import TileGrid
from .solver_state import Slot


class TileState:
    """Common interface (see module doc); ``k`` is the z chunk index in the grid."""

    persistent = False  # progress survives the process (resume)

    def __init__(self, grid: TileGrid, slots: list[Slot], stains: int):
        self.grid, self.slots, self.stains = grid, list(slots), stains
        self.slot_index = {s: j for j, s in enumerate(self.slots)}

    def snapshot(self) -> np.ndarray | None:
        """The progress record (z chunks, rows, cols), or None if nothing was recorded yet."""
        return None

    # subclasses implement: read_x, write_x, read_history, write_history, mark, latents, set_latents


class MemoryState(TileState):
    """Tensors for every z chunk: ``x`` ``(2, chunks, stains, slices, H, W)`` and history per slot."""

    def __init__(self, grid: TileGrid, slots: list[Slot], stains: int):
        super().__init__(grid, slots, stains)
        shape = (len(grid.chunk_starts), stains, grid.num_slices, grid.height, grid.width)
        self.x = torch.zeros(2, *shape)
        self.history = torch.zeros(2, len(self.slots), *shape) if self.slots else None
        self.progress = np.full((len(grid.chunk_starts), grid.rows, grid.cols), -1, dtype=np.int32)

    def read_x(self, parity: int, k: int, ys: slice, xs: slice) -> torch.Tensor:
        return self.x[parity, k, :, :, ys, xs]

    def write_x(self, parity: int, k: int, row: int, col: int, value: torch.Tensor) -> None:
        ys, xs = self.grid.tile_slices(row, col)
        self.x[parity, k, :, :, ys, xs] = value

    def read_history(self, parity: int, k: int, row: int, col: int, slots: list[Slot]) -> dict[Slot, torch.Tensor]:
        ys, xs = self.grid.tile_slices(row, col)
        return {s: self.history[parity, self.slot_index[s], k, :, :, ys, xs] for s in slots}

    def write_history(self, parity: int, k: int, row: int, col: int, values: dict[Slot, torch.Tensor]) -> None:
        ys, xs = self.grid.tile_slices(row, col)
        for s, v in values.items():
            self.history[parity, self.slot_index[s], k, :, :, ys, xs] = v

    def mark(self, k: int, row: int, col: int, stage: int) -> None:
        self.progress[k, row, col] = stage

    def snapshot(self) -> np.ndarray | None:
        return self.progress.copy() if self.progress.max() >= 0 else None

    def latents(self, parity: int, chunks: list[int]) -> torch.Tensor:
        return self.x[parity, chunks]

    def set_latents(self, parity: int, chunks: list[int], value: torch.Tensor) -> None:
        self.x[parity, chunks] = value.to(self.x.dtype).cpu()


class ZarrState(TileState):
    """Zarr step buffers of one z chunk at a time and the progress record (see module doc).

    ``group`` is an open zarr group (``zarr.open_group(MemoryStore())``, a folder or an fsspec URL); the arrays
    are created by :meth:`create` once and reopened as they are on resume.
    """

    persistent = True

    def __init__(self, grid: TileGrid, slots: list[Slot], stains: int, group):
        super().__init__(grid, slots, stains)
        self.group = group
        self.x = (group["x_a"], group["x_b"])
        self.history = group["history"] if self.slots else None
        self.progress = group["progress"]

    @staticmethod
    def create(group, grid: TileGrid, slots: list[Slot], stains: int) -> None:
        """The buffers (float32, one zarr chunk per tile and slot) and, last, the progress record: its presence
        means the buffers exist."""
        buffer = (1, stains, grid.num_slices, grid.height, grid.width)
        chunk = (1, stains, grid.num_slices, grid.tile, grid.tile)
        for name in ("x_a", "x_b"):
            group.create_array(name, shape=buffer, chunks=chunk, dtype="float32", fill_value=0.0, compressors=None)
        if slots:
            group.create_array("history", shape=(2, len(slots), *buffer[1:]), chunks=(1, 1, *chunk[1:]),
                               dtype="float32", fill_value=0.0, compressors=None)  # fmt: skip
        # one record per tile, sharded by work unit (its owner is the only writer): ~190 k objects for a whole
        # brain instead of ~3 M. The step buffers stay one object per tile: a sharded buffer would rewrite its
        # whole shard for every tile written, at every step.
        # zarr shards start at index 0: a unit grid offset from it (exact mode) keeps one object per tile instead
        u = grid.unit_tiles
        aligned = all(o % u == 0 for o in grid.unit_origin)
        shards = None if u == 1 or not aligned else (1, min(u, grid.rows), min(u, grid.cols))
        group.create_array("progress", shape=(len(grid.chunk_starts), grid.rows, grid.cols), chunks=(1, 1, 1),
                           shards=shards, dtype="int32", fill_value=-1, compressors=None)  # fmt: skip
        group.attrs["history_slots"] = [s.name for s in slots]

    def read_x(self, parity: int, k: int, ys: slice, xs: slice) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.x[parity][0, :, :, ys, xs]))

    def write_x(self, parity: int, k: int, row: int, col: int, value: torch.Tensor) -> None:
        ys, xs = self.grid.tile_slices(row, col)
        self.x[parity][0, :, :, ys, xs] = value.numpy()

    def read_history(self, parity: int, k: int, row: int, col: int, slots: list[Slot]) -> dict[Slot, torch.Tensor]:
        ys, xs = self.grid.tile_slices(row, col)
        return {s: torch.from_numpy(np.asarray(self.history[parity, self.slot_index[s], :, :, ys, xs])) for s in slots}

    def write_history(self, parity: int, k: int, row: int, col: int, values: dict[Slot, torch.Tensor]) -> None:
        ys, xs = self.grid.tile_slices(row, col)
        for s, v in values.items():
            self.history[parity, self.slot_index[s], :, :, ys, xs] = v.numpy()

    def mark(self, k: int, row: int, col: int, stage: int) -> None:
        self.progress[k, row, col] = stage

    def snapshot(self) -> np.ndarray | None:
        progress = np.asarray(self.progress[...])
        return progress if progress.max() >= 0 else None

    def latents(self, parity: int, chunks: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.x[parity][...]))

    def set_latents(self, parity: int, chunks: list[int], value: torch.Tensor) -> None:
        self.x[parity][...] = value.to(torch.float32).cpu().numpy()


def open_zarr_state(location, grid: TileGrid, slots: list[Slot], stains: int, create: bool) -> ZarrState:
    """A :class:`ZarrState` at ``location`` (a zarr store or URL); ``create`` makes the arrays if absent."""
    import zarr

    group = zarr.open_group(location, mode="a")
    if create and "progress" not in group:
        ZarrState.create(group, grid, slots, stains)
    recorded = group.attrs.get("history_slots", [])
    if recorded != [s.name for s in slots]:
        raise ValueError(f"step store at {location} holds solver history {recorded}, this run needs {[s.name for s in slots]}")
    return ZarrState(grid, slots, stains, group)
