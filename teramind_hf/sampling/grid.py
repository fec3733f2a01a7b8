"""TileGrid: the geometry of tiled Tera-MIND sampling, in one place.

A region of ``height x width`` px at ``origin`` (px, in the gene source) is cut into ``tile``-px tiles. Each
denoising step evaluates the model on a *canvas* per tile: the tile plus a ``halo`` (half a ``patch``) taken
from the neighbours at the same step, ``fill_value`` outside the region; the model's collage path predicts
the tile alone. A canvas under a grid offset ``(dy, dx)`` (``0 <= d < patch``, see
:mod:`teramind_hf.sampling.schedule`) is one patch larger in each shifted axis, so the tile is covered by the
output patches of the shifted patch grid and cropped from them. Image z chunks of ``num_slices`` slices start
at ``start`` and move by ``num_slices``; each is conditioned on ``gene_slices`` gene sections around it.

Tiles are grouped into *work units* of ``unit_tiles x unit_tiles`` tiles: the unit split across processes (a
sharded output can then have one writer per shard). Tile ``(r, c)`` has the *global* index
``(origin_y / tile + r, origin_x / tile + c)``, which seeds its initial noise, so a sub-region of a larger run
draws the same noise there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def z_chunks(start: int, stop: int, num_slices: int = 2) -> list[int]:
    """First image slice of each chunk: ``num_slices``-slice chunks from ``start`` (the last may overhang)."""
    return list(range(start, stop, num_slices))


def gene_window_range(chunk_start: int, num_slices: int = 2, gene_slices: int = 4) -> tuple[int, int]:
    """Gene sections ``[lo, hi)`` conditioning the chunk starting at ``chunk_start`` (may reach past either end)."""
    margin = (gene_slices - num_slices) // 2
    return chunk_start - margin, chunk_start + num_slices + margin


def gene_window(genes: torch.Tensor, chunk_start: int, num_slices: int = 2, gene_slices: int = 4) -> torch.Tensor:
    """Gene sections conditioning a chunk, zero-padded past the stack ends: ``(G, gene_slices, Hb, Wb)``."""
    lo, hi = gene_window_range(chunk_start, num_slices, gene_slices)
    z = genes.shape[1]
    window = genes[:, max(lo, 0) : min(hi, z)]
    return F.pad(window, (0, 0, 0, 0, max(0, -lo), max(0, hi - z)))


@dataclass(frozen=True)
class CanvasBox:
    """A canvas in region px (may reach outside the region) and where the tile sits in the model output."""

    y0: int
    x0: int
    height: int
    width: int
    crop_y: int  # first output row of the tile (the output starts half a patch inside the canvas)
    crop_x: int


@dataclass(frozen=True)
class TileGrid:
    """Tiles, halos, patches, z chunks and gene windows of one region (see module doc)."""

    height: int
    width: int
    origin: tuple[int, int] = (0, 0)
    start: int = 0
    stop: int = 2
    tile: int = 256
    halo: int = 32
    patch: int = 64
    fill_value: float = -1.0
    gene_bin: int = 16
    num_slices: int = 2
    gene_slices: int = 4
    unit_tiles: int = 1
    unit_origin: tuple[int, int] = (0, 0)  # a tile (row, col) where units start (shard alignment)

    def __post_init__(self) -> None:
        if self.tile % self.patch or self.tile <= 0:
            raise ValueError(f"tile ({self.tile} px) must be a positive multiple of the patch ({self.patch} px)")
        if 2 * self.halo != self.patch:
            raise ValueError(f"halo must be half a patch ({self.patch // 2} px) for the collage path, got {self.halo}")
        if self.patch % self.gene_bin or self.halo % self.gene_bin:
            raise ValueError(f"patch ({self.patch}) and halo ({self.halo}) must be multiples of gene_bin ({self.gene_bin})")
        for name, value in (("height", self.height), ("width", self.width), ("origin y", self.origin[0]), ("origin x", self.origin[1])):
            if value % self.tile or value < 0 or (name in ("height", "width") and value == 0):
                raise ValueError(
                    f"region {name} = {value} px is not a whole number of {self.tile}-px tiles "
                    f"(region {self.height}x{self.width} px at {self.origin})"
                )
        if not 0 <= self.start < self.stop:
            raise ValueError(f"slices must satisfy 0 <= start < stop, got {self.start}, {self.stop}")
        if self.unit_tiles < 1:
            raise ValueError(f"unit_tiles must be >= 1, got {self.unit_tiles}")

    @classmethod
    def for_model(cls, model_config, height: int, width: int, **kwargs) -> "TileGrid":
        """A grid with the model's patch, gene bin and slice counts."""
        return cls(height=height, width=width, patch=model_config.sample_size, gene_bin=model_config.gene_bin,
                   num_slices=model_config.num_slices, gene_slices=model_config.gene_slices, **kwargs)

    # ------------------------------------------------------------------ tiles
    @property
    def rows(self) -> int:
        return self.height // self.tile

    @property
    def cols(self) -> int:
        return self.width // self.tile

    @property
    def chunk_starts(self) -> list[int]:
        return z_chunks(self.start, self.stop, self.num_slices)

    @property
    def canvas(self) -> int:
        """Edge of the official (unshifted) canvas: tile + 2 halos."""
        return self.tile + 2 * self.halo

    def tiles(self) -> list[tuple[int, int]]:
        return [(r, c) for r in range(self.rows) for c in range(self.cols)]

    def tile_slices(self, row: int, col: int) -> tuple[slice, slice]:
        """The tile's pixels in region px."""
        t = self.tile
        return slice(row * t, (row + 1) * t), slice(col * t, (col + 1) * t)

    def global_index(self, row: int, col: int) -> tuple[int, int]:
        """The tile's index in the tile grid of the whole gene source (seeds its noise)."""
        return self.origin[0] // self.tile + row, self.origin[1] // self.tile + col

    def work_units(self) -> list[list[tuple[int, int]]]:
        """Blocks of ``unit_tiles x unit_tiles`` tiles with borders at ``unit_origin`` + multiples of
        ``unit_tiles`` (raster order, clipped at the region edge): the unit split across processes."""
        u = self.unit_tiles

        def spans(n: int, origin: int) -> list[tuple[int, int]]:
            starts = sorted({0, *range(origin % u, n, u)})
            return list(zip(starts, starts[1:] + [n]))

        return [
            [(r, c) for r in range(r0, r1) for c in range(c0, c1)]
            for r0, r1 in spans(self.rows, self.unit_origin[0])
            for c0, c1 in spans(self.cols, self.unit_origin[1])
        ]

    @staticmethod
    def band_order(tiles: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """``tiles`` in bands of two tile rows, column by column: consecutive tiles are neighbours, so a batch
        of four canvases is a 2 x 2 block whose canvases share patches (encoder reuse), not a row segment."""
        return sorted(tiles, key=lambda tile: (tile[0] // 2, tile[1], tile[0] % 2))

    # ------------------------------------------------------------------ canvases
    def check_offset(self, offset: tuple[int, int]) -> tuple[int, int]:
        """An offset reduced to ``[0, patch)`` (a shift by a whole patch is the same grid); gene-bin aligned."""
        dy, dx = (int(offset[0]) % self.patch, int(offset[1]) % self.patch)
        if dy % self.gene_bin or dx % self.gene_bin:
            raise ValueError(f"grid offset {tuple(offset)} px must be a multiple of gene_bin ({self.gene_bin} px)")
        return dy, dx

    def canvas_box(self, row: int, col: int, offset: tuple[int, int] = (0, 0)) -> CanvasBox:
        """The canvas of tile (row, col) under the patch grid moved by ``offset``.

        Unshifted, the canvas is the tile plus a halo and its output patches are the tile's own. Shifted by
        ``d`` in an axis, the output patch borders lie at ``d`` mod patch, so the tile needs one more output
        patch: the canvas starts ``patch - d`` px earlier and is one patch longer; the tile starts
        ``patch - d`` px into the output.
        """
        dy, dx = self.check_offset(offset)
        ey, ex = (self.patch if dy else 0), (self.patch if dx else 0)
        return CanvasBox(
            y0=row * self.tile - self.halo + dy - ey, x0=col * self.tile - self.halo + dx - ex,
            height=self.canvas + ey, width=self.canvas + ex, crop_y=ey - dy, crop_x=ex - dx,
        )

    def inside(self, box: CanvasBox) -> tuple[slice, slice, tuple[int, int, int, int]]:
        """(rows, cols) of the box inside the region and the F.pad amounts (left, right, top, bottom) that
        put the part outside the region back (filled with ``fill_value`` / zero genes)."""
        ya, yb = max(box.y0, 0), min(box.y0 + box.height, self.height)
        xa, xb = max(box.x0, 0), min(box.x0 + box.width, self.width)
        pad = (xa - box.x0, box.x0 + box.width - xb, ya - box.y0, box.y0 + box.height - yb)
        return slice(ya, yb), slice(xa, xb), pad

    def patch_ids(self, k: int, row: int, col: int, offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """``(p1, p2)`` int64 ids of the canvas's patches on the patch grid of ``offset`` (encoder reuse).

        Canvases under one offset are cut on one patch grid (tiles are whole patches), so a patch at the same
        region position of the same z chunk ``k`` gets the same id in every canvas that contains it, whatever the
        tile; ids of different offsets are not comparable (one model call runs one offset).
        """
        box = self.canvas_box(row, col, offset)
        # patch rows/cols from -2 (a shifted canvas starts less than 1.5 patches before the region) upwards
        first_row, first_col = box.y0 // self.patch + 2, box.x0 // self.patch + 2
        rows, cols = self.height // self.patch + 4, self.width // self.patch + 4
        ys = torch.arange(first_row, first_row + box.height // self.patch)
        xs = torch.arange(first_col, first_col + box.width // self.patch)
        return (k * rows + ys[:, None]) * cols + xs[None, :]

    def gene_box(self, box: CanvasBox) -> tuple[int, int, int, int]:
        """The canvas in gene bins: (y0, x0, height, width), region coordinates."""
        b = self.gene_bin
        return box.y0 // b, box.x0 // b, box.height // b, box.width // b

    def gene_sections(self, chunk_start: int) -> tuple[int, int]:
        """Gene sections ``[lo, hi)`` conditioning a chunk (may reach past either end of the stack)."""
        return gene_window_range(chunk_start, self.num_slices, self.gene_slices)

    # ------------------------------------------------------------------ dependency cone
    def reach_per_step(self) -> int:
        """How far (px) one step's result at a pixel can depend on the state and genes around it.

        The collage path predicts each output patch from the 2x2 input patches around it, so an output pixel
        depends only on the ``2 patch``-px window containing it, whose near edge is at least ``halo`` px and
        whose far edge at most ``2 patch - halo`` px away; a grid offset moves the window, not its size. The
        solver update is per pixel (its history too), so ``2 patch - halo`` px per step bounds the cone.
        """
        return 2 * self.patch - self.halo

    def margin_tiles(self, num_steps: int) -> int:
        """Tiles of margin an exact sub-region needs around it: the cone of ``num_steps`` steps, in tiles."""
        return -(-num_steps * self.reach_per_step() // self.tile)


def exact_region(
    region: tuple[int, int, int, int], extent: tuple[int, int], margin_px: int, tile: int
) -> tuple[int, int, int, int]:
    """The region to compute so that ``region`` (y0, x0, h, w) equals the run over ``extent`` (H, W) there:
    ``region`` grown by ``margin_px`` rounded up to whole tiles, clipped at the extent (whose edges hold the
    fill exactly as in the full run)."""
    y0, x0, h, w = region
    m = -(-margin_px // tile) * tile
    ya, xa = max(y0 - m, 0), max(x0 - m, 0)
    yb, xb = min(y0 + h + m, extent[0]), min(x0 + w + m, extent[1])
    return ya, xa, yb - ya, xb - xa
