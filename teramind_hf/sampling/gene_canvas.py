"""Gene canvases read once per z chunk.

A tile's gene canvas (the model-panel counts under its image canvas, zero outside the region) does not change
between steps. :class:`GeneCanvases` reads, for one z chunk, the block of bins covering every canvas of the
tiles this process samples (under every grid offset of the run) in one read from the gene source, aligns it
to the model panel once, and hands out each tile's canvas as a view of that block for all the steps.

Memory bound: one block per z chunk in flight, ``G x gene_slices x (rows_here * tile + 2 (halo + patch)) / bin
x (W + 2 (halo + patch)) / bin`` float32, where ``rows_here`` are the tile rows of this process's work units
(a contiguous band: units are split across processes in raster order). For 229 genes, 4 gene sections and a
whole 11000 x 8000 px section on one process that is ~1.1 GB; N processes each hold about 1/N of it.
"""

from __future__ import annotations

import torch

from .grid import TileGrid


class GeneCanvases:
    """Per z chunk gene blocks of a region (see module doc).

    ``reader.canvas(chunk_start, y_bins, x_bins, height_bins, width_bins)`` returns aligned counts
    ``(G_model, gene_slices, height, width)`` for a box in region bins, zero outside the region
    (:class:`teramind_hf.pipelines.gene_source.RegionGenes`).
    """

    def __init__(self, reader, grid: TileGrid, offsets: set[tuple[int, int]], halo: bool = True):
        self.reader, self.grid, self.halo = reader, grid, halo
        self.offsets = sorted({grid.check_offset(o) for o in offsets} | {(0, 0)})
        self.blocks: dict[int, tuple[torch.Tensor, int, int]] = {}
        self.reads = 0

    def load(self, k: int, tiles: list[tuple[int, int]]) -> None:
        """Read chunk ``k``'s block for ``tiles`` (once; later calls for the same chunk do nothing)."""
        if k in self.blocks or not tiles:
            return
        boxes = [self.grid.gene_box(self.grid.canvas_box(r, c, o)) for r, c in tiles for o in self.offsets]
        y0, x0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        y1, x1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
        block = self.reader.canvas(self.grid.chunk_starts[k], y0, x0, y1 - y0, x1 - x0)
        self.reads += 1
        self.blocks[k] = (block, y0, x0)

    def release(self, k: int) -> None:
        self.blocks.pop(k, None)

    def canvas(self, k: int, row: int, col: int, offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """The gene canvas of tile (row, col) of chunk ``k`` under ``offset`` (a view unless ``halo=False``)."""
        block, by, bx = self.blocks[k]
        y, x, h, w = self.grid.gene_box(self.grid.canvas_box(row, col, offset))
        canvas = block[..., y - by : y - by + h, x - bx : x - bx + w]
        if not self.halo:  # naive tiling: the tile alone, as if it were a one-tile region
            halo_bins = self.grid.halo // self.grid.gene_bin
            inside = torch.zeros_like(canvas)
            inside[..., halo_bins:-halo_bins, halo_bins:-halo_bins] = 1
            canvas = canvas * inside
        return canvas
