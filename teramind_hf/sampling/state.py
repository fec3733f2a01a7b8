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
  A tile's data chunks are written before its record, so after SIGKILL a tile is either recorded with complete
  data or redone. The data chunks may be overwritten in place (local folders, :mod:`.chunk_files`): a chunk
  cut short by SIGKILL belongs to a tile whose step is not recorded, in the parity that step writes and that
  nothing reads before every tile has finished the step; the redone step rewrites it from the other parity,
  which it never writes. Record chunks are replaced atomically. A resumed run reproduces the uninterrupted bytes.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np
import torch

from .chunk_files import ChunkFiles, chunk_io
from .grid import TileGrid
from .solver_state import Slot


class TileState:
    """Common interface (see module doc); ``k`` is the z chunk index in the grid."""

    persistent = False  # progress survives the process (resume)
    device = torch.device("cpu")  # where x_t and the history live, and the solver steps them

    def __init__(self, grid: TileGrid, slots: list[Slot], stains: int):
        self.grid, self.slots, self.stains = grid, list(slots), stains
        self.slot_index = {s: j for j, s in enumerate(self.slots)}

    def snapshot(self) -> np.ndarray | None:
        """The progress record (z chunks, rows, cols), or None if nothing was recorded yet."""
        return None

    def read_x_into(self, parity: int, k: int, ys: slice, xs: slice, out: torch.Tensor) -> None:
        """Copy x_t of region pixels ``(ys, xs)`` into ``out`` (a CPU tensor, e.g. a view of a batch of canvases)."""
        out.copy_(self.read_x(parity, k, ys, xs))

    def read_history_into(self, parity: int, k: int, row: int, col: int, out: dict[Slot, torch.Tensor]) -> None:
        """Copy a tile's history of the slots in ``out`` into ``out``'s tensors (e.g. views of a batch)."""
        for s, value in self.read_history(parity, k, row, col, list(out)).items():
            out[s].copy_(value)

    def begin_step(self) -> None:
        """A new step starts: what was read before may have been rewritten (by any process)."""

    def mark_many(self, k: int, tiles: list[tuple[int, int]], stage: int) -> None:
        """Record ``stage`` for ``tiles`` of chunk ``k`` (after their data are written)."""
        for row, col in tiles:
            self.mark(k, row, col, stage)

    # subclasses implement: read_x, write_x, read_history, write_history, mark, latents, set_latents


class MemoryState(TileState):
    """Tensors for every z chunk: ``x`` ``(2, chunks, stains, slices, H, W)`` and history per slot, float32 on
    ``device`` (default the CPU; an accelerator keeps a small region's whole step on it)."""

    def __init__(self, grid: TileGrid, slots: list[Slot], stains: int, device=None):
        super().__init__(grid, slots, stains)
        self.device = torch.device(device if device is not None else "cpu")
        shape = self.shape(grid, stains)
        self.x = torch.zeros(2, *shape, device=self.device)
        self.history = torch.zeros(2, len(self.slots), *shape, device=self.device) if self.slots else None
        self.progress = np.full((len(grid.chunk_starts), grid.rows, grid.cols), -1, dtype=np.int32)

    @staticmethod
    def shape(grid: TileGrid, stains: int) -> tuple[int, ...]:
        """One step buffer: ``(chunks, stains, slices, H, W)``."""
        return (len(grid.chunk_starts), stains, grid.num_slices, grid.height, grid.width)

    @classmethod
    def nbytes(cls, grid: TileGrid, slots: list[Slot], stains: int) -> int:
        """Bytes of x_t (two parities) and the history (two parities per slot), float32."""
        return 2 * (1 + len(slots)) * 4 * math.prod(cls.shape(grid, stains))

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
        self.x[parity, chunks] = value.to(device=self.device, dtype=self.x.dtype)


class ZarrState(TileState):
    """Zarr step buffers of one z chunk at a time and the progress record (see module doc).

    ``group`` is an open zarr group (``zarr.open_group(MemoryStore())``, a folder or an fsspec URL); the arrays
    are created by :meth:`create` once and reopened as they are on resume. Chunks are read and written whole
    (:mod:`.chunk_files`: plain files for uncompressed local arrays). Tiles of x_t read during a step are kept
    in a least-recently-used cache of ``cache_tiles`` tiles, cleared by :meth:`begin_step`: within a step the
    parity it reads does not change, so each tile is read about once per step instead of once per canvas that
    overlaps it (default: three tile rows of a work unit and their neighbours, what raster order revisits).
    """

    persistent = True

    def __init__(self, grid: TileGrid, slots: list[Slot], stains: int, group, cache_tiles: int | None = None):
        super().__init__(grid, slots, stains)
        self.group = group
        self.x = (group["x_a"], group["x_b"])
        self.history = group["history"] if self.slots else None
        self.progress = group["progress"]
        self._x_chunks = tuple(chunk_io(a) for a in self.x)
        self._history_chunks = chunk_io(self.history) if self.slots else None
        self._progress_chunks = chunk_io(self.progress)
        self._progress_blocks: dict[tuple[int, ...], np.ndarray] = {}  # progress chunks this process wrote (sole writer)
        width = grid.cols if grid.unit_tiles == 1 else min(grid.unit_tiles, grid.cols)
        self.cache_tiles = cache_tiles if cache_tiles is not None else 3 * (width + 2)
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._spare_tiles: list[np.ndarray] = []  # arrays of the last step's cached tiles, refilled by the next reads
        self._cache_lock = threading.Lock()  # written tiles leave the cache from the write-behind thread

    @staticmethod
    def create(group, grid: TileGrid, slots: list[Slot], stains: int) -> None:
        """The buffers (float32, uncompressed, one zarr chunk per tile and slot) and, last, the progress record:
        its presence means the buffers exist."""
        buffer = (1, stains, grid.num_slices, grid.height, grid.width)
        chunk = (1, stains, grid.num_slices, grid.tile, grid.tile)
        for name in ("x_a", "x_b"):
            group.create_array(name, shape=buffer, chunks=chunk, dtype="float32", fill_value=0.0, compressors=None)
        if slots:
            group.create_array("history", shape=(2, len(slots), *buffer[1:]), chunks=(1, 1, *chunk[1:]),
                               dtype="float32", fill_value=0.0, compressors=None)
        # one record chunk per work unit (its owner is the only writer): ~190 k objects for a whole brain instead
        # of ~3 M, each rewritten whole by its owner. The step buffers stay one object per tile.
        # a unit grid offset from the chunk grid (exact mode) keeps one record object per tile instead
        u = grid.unit_tiles
        aligned = all(o % u == 0 for o in grid.unit_origin)
        chunks = (1, min(u, grid.rows), min(u, grid.cols)) if aligned else (1, 1, 1)
        group.create_array("progress", shape=(len(grid.chunk_starts), grid.rows, grid.cols), chunks=chunks,
                           dtype="int32", fill_value=-1, compressors=None)
        group.attrs["history_slots"] = [s.name for s in slots]

    def begin_step(self) -> None:
        with self._cache_lock:
            # no read of the last step is in flight any more: its tiles' arrays take the next step's reads
            whole = (self.stains, self.grid.num_slices, self.grid.tile, self.grid.tile)
            self._spare_tiles = [t for t in self._cache.values() if t.shape == whole and t.flags.c_contiguous and t.flags.writeable]
            self._cache.clear()

    def _tile(self, parity: int, row: int, col: int) -> np.ndarray:
        key = (parity, row, col)
        with self._cache_lock:
            tile = self._cache.get(key)
            if tile is not None:
                self._cache.move_to_end(key)
                return tile
            spare = self._spare_tiles.pop() if self._spare_tiles else None
        if spare is not None and isinstance(self._x_chunks[parity], ChunkFiles):
            self._x_chunks[parity].read_into((0, 0, 0, row, col), spare[None])
            tile = spare
        else:
            tile = self._x_chunks[parity].read((0, 0, 0, row, col))[0]
        with self._cache_lock:
            self._cache[key] = tile
            if len(self._cache) > self.cache_tiles:
                self._cache.popitem(last=False)
        return tile

    def read_x(self, parity: int, k: int, ys: slice, xs: slice) -> torch.Tensor:
        out = np.empty((self.stains, self.grid.num_slices, ys.stop - ys.start, xs.stop - xs.start), dtype=np.float32)
        self._copy_x(parity, ys, xs, out)
        return torch.from_numpy(out)

    def read_x_into(self, parity: int, k: int, ys: slice, xs: slice, out: torch.Tensor) -> None:
        self._copy_x(parity, ys, xs, out.numpy())

    def _copy_x(self, parity: int, ys: slice, xs: slice, out: np.ndarray) -> None:
        """Region pixels ``(ys, xs)`` of x_t assembled from the (cached) tiles that hold them."""
        t = self.grid.tile
        for row in range(ys.start // t, (ys.stop - 1) // t + 1):
            y0, y1 = max(ys.start, row * t), min(ys.stop, (row + 1) * t)
            for col in range(xs.start // t, (xs.stop - 1) // t + 1):
                x0, x1 = max(xs.start, col * t), min(xs.stop, (col + 1) * t)
                tile = self._tile(parity, row, col)
                out[:, :, y0 - ys.start : y1 - ys.start, x0 - xs.start : x1 - xs.start] = tile[
                    :, :, y0 - row * t : y1 - row * t, x0 - col * t : x1 - col * t
                ]

    def write_x(self, parity: int, k: int, row: int, col: int, value: torch.Tensor) -> None:
        with self._cache_lock:
            self._cache.pop((parity, row, col), None)
        self._x_chunks[parity].write((0, 0, 0, row, col), value.cpu().numpy()[None], in_place=True)

    def read_history(self, parity: int, k: int, row: int, col: int, slots: list[Slot]) -> dict[Slot, torch.Tensor]:
        return {
            s: torch.from_numpy(self._history_chunks.read((parity, self.slot_index[s], 0, 0, row, col))[0, 0]) for s in slots
        }

    def read_history_into(self, parity: int, k: int, row: int, col: int, out: dict[Slot, torch.Tensor]) -> None:
        for s, value in out.items():
            self._history_chunks.read_into((parity, self.slot_index[s], 0, 0, row, col), value.numpy()[None, None])

    def write_history(self, parity: int, k: int, row: int, col: int, values: dict[Slot, torch.Tensor]) -> None:
        for s, v in values.items():
            self._history_chunks.write((parity, self.slot_index[s], 0, 0, row, col), v.cpu().numpy()[None, None], in_place=True)

    def mark(self, k: int, row: int, col: int, stage: int) -> None:
        self.mark_many(k, [(row, col)], stage)

    def mark_many(self, k: int, tiles: list[tuple[int, int]], stage: int) -> None:
        if not isinstance(self._progress_chunks, ChunkFiles):
            rows, cols = zip(*tiles)
            self.progress.set_coordinate_selection(([k] * len(tiles), list(rows), list(cols)), stage)
            return
        ck, cr, cc = self.progress.chunks
        touched: dict[tuple[int, ...], np.ndarray] = {}
        for row, col in tiles:
            coords = (k // ck, row // cr, col // cc)
            block = touched.get(coords)
            if block is None:
                block = self._progress_blocks.get(coords)
                if block is None:  # first write of this chunk by this process: what is stored (resume)
                    block = np.array(self._progress_chunks.read(coords))
                touched[coords] = self._progress_blocks[coords] = block
            block[k % ck, row % cr, col % cc] = stage
        for coords, block in touched.items():
            # in place: a chunk of a few int32 records goes out in one write() call, which a killed process cannot
            # leave half done, and this process is its only writer; the tiles' data were written before
            self._progress_chunks.write(coords, block, in_place=True)

    def snapshot(self) -> np.ndarray | None:
        progress = np.asarray(self.progress[...])
        return progress if progress.max() >= 0 else None

    def latents(self, parity: int, chunks: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.x[parity][...]))

    def set_latents(self, parity: int, chunks: list[int], value: torch.Tensor) -> None:
        self.begin_step()
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
