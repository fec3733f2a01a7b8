"""The official Tera-MIND tile format (reader and writer).

Gene tiles: one pydata `sparse.COO` per tile saved with `sparse.save_npz`, shape
`(H, W, Z * gene_slots)` in `(z g)` order (slot = z * gene_slots + g; the official files use
500 slots per section, the real genes in slots 0..228 in the order of `GenePanel.official_mouse()`).
File name `{r0}_{r1}_{c0}_{c1}_{r0m}_{r1m}_{c0m}_{c1m}.npz`: the tile covers rows r0..r1 and
columns c0..c1 of the section canvas; the stored array covers the tile plus `margin` (128) px on
each side clipped to the canvas, rows r0m..r1m, columns c0m..c1m. Pixel resolution, no binning.
Images: a zarr ZipStore `{same name}.zip` holding a `(2 * Z, H, W)` uint8 array over the same
margin bounds, DAPI slices then PolyT slices. Genes and images live in two folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..panel import GenePanel
from ..volume import SpatialVolume, bin_transcripts

TILE_SIZE = 256
TILE_MARGIN = 128
GENE_SLOTS = 500
_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)$")


@dataclass(frozen=True)
class TileBounds:
    """Core bounds (r0, r1, c0, c1) of a tile and the margin bounds of its stored array."""

    core: tuple[int, int, int, int]
    stored: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return "_".join(str(v) for v in self.core + self.stored)

    @classmethod
    def parse(cls, path: Path) -> "TileBounds":
        match = _NAME.match(path.stem)
        if not match:
            raise ValueError(
                f"{path}: tile file name must be r0_r1_c0_c1_r0m_r1m_c0m_c1m (8 integers), got {path.name!r}"
            )
        v = tuple(int(x) for x in match.groups())
        return cls(core=v[:4], stored=v[4:])


def tile_grid(height: int, width: int, tile_size: int = TILE_SIZE, margin: int = TILE_MARGIN) -> list[TileBounds]:
    """All tiles of a `height` x `width` canvas, row-major, margins clipped to the canvas."""
    tiles = []
    for r0 in range(0, height, tile_size):
        for c0 in range(0, width, tile_size):
            r1, c1 = min(r0 + tile_size, height), min(c0 + tile_size, width)
            stored = (max(r0 - margin, 0), min(r1 + margin, height), max(c0 - margin, 0), min(c1 + margin, width))
            tiles.append(TileBounds((r0, r1, c0, c1), stored))
    return tiles


def write_official_tiles(
    out_dir: str | Path,
    images: np.ndarray | None,
    transcripts: pd.DataFrame,
    *,
    shape: tuple[int, int] | None = None,
    slot_panel: GenePanel | None = None,
    tile_size: int = TILE_SIZE,
    margin: int = TILE_MARGIN,
    gene_slots: int = GENE_SLOTS,
) -> Path:
    """Write `out_dir/gene/*.npz` and (with images) `out_dir/img/*.zip` in the official layout.

    `transcripts` has x (column), y (row) in pixels, z (section) and gene; each transcript adds 1
    at pixel (floor(y), floor(x)) in slot `z * gene_slots + slot_panel.index(gene)`. `images` is
    `(2, Z, H, W)` uint8; without images give `shape=(H, W)`.
    """
    import sparse
    import zarr

    slot_panel = GenePanel.official_mouse() if slot_panel is None else slot_panel
    if images is not None:
        _, num_slices, height, width = images.shape
    elif shape is not None:
        (height, width), num_slices = shape, int(transcripts["z"].max()) + 1
    else:
        raise ValueError("write_official_tiles: pass images or shape=(H, W)")
    lookup = {g.upper(): i for i, g in enumerate(slot_panel.genes)}
    slot = transcripts["gene"].astype(str).str.upper().map(lookup)
    if slot.isna().any():
        unknown = sorted(set(transcripts["gene"][slot.isna()]))[:10]
        raise ValueError(f"write_official_tiles: genes not in the {len(slot_panel)}-slot panel: {unknown}")
    rows = np.floor(transcripts["y"].to_numpy()).astype(np.int64)
    cols = np.floor(transcripts["x"].to_numpy()).astype(np.int64)
    channel = transcripts["z"].to_numpy().astype(np.int64) * gene_slots + slot.to_numpy().astype(np.int64)
    gene_dir, img_dir = Path(out_dir) / "gene", Path(out_dir) / "img"
    gene_dir.mkdir(parents=True, exist_ok=True)
    if images is not None:
        img_dir.mkdir(parents=True, exist_ok=True)
    for tile in tile_grid(height, width, tile_size, margin):
        r0m, r1m, c0m, c1m = tile.stored
        inside = (rows >= r0m) & (rows < r1m) & (cols >= c0m) & (cols < c1m)
        coords = np.stack([rows[inside] - r0m, cols[inside] - c0m, channel[inside]])
        tile_shape = (r1m - r0m, c1m - c0m, num_slices * gene_slots)
        coo = sparse.COO(coords, np.ones(coords.shape[1], dtype=np.int32), shape=tile_shape)  # sums duplicates
        sparse.save_npz(gene_dir / f"{tile.name}.npz", coo)
        if images is not None:
            stack = images[:, :, r0m:r1m, c0m:c1m].reshape(2 * num_slices, r1m - r0m, c1m - c0m)
            store = zarr.storage.ZipStore(img_dir / f"{tile.name}.zip", mode="w")
            array = zarr.create_array(store, shape=stack.shape, dtype=np.uint8, chunks=stack.shape, zarr_format=2)
            array[...] = stack
            store.close()
    return Path(out_dir)


def read_official_tiles(
    gene_dir: str | Path,
    image_dir: str | Path | None = None,
    *,
    region: tuple[int, int, int, int] | None = None,
    panel: GenePanel | None = None,
    slot_panel: GenePanel | None = None,
    gene_slots: int = GENE_SLOTS,
    gene_bin: int = 16,
    um_per_px: float | None = 0.108,
) -> SpatialVolume:
    """Assemble the tiles covering `region` = (r0, r1, c0, c1) canvas pixels into a volume.

    Default region: the bounding box of all tiles. `slot_panel` names the gene slots (default
    the official 229 mouse panel); `panel` picks and orders the genes returned (default
    `slot_panel`). Region sizes must be multiples of `gene_bin`; bins start at the region
    origin. Tiles absent from the folder leave zeros (the official release omits some).
    """
    gene_dir = Path(gene_dir)
    paths = sorted(gene_dir.glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"{gene_dir}: no gene tiles (*.npz) found")
    tiles = [(p, TileBounds.parse(p)) for p in paths]
    slot_panel = GenePanel.official_mouse() if slot_panel is None else slot_panel
    panel = slot_panel if panel is None else panel
    slots = _slots_for(panel, slot_panel, gene_slots)
    region = _check_region(region, tiles, gene_bin)
    R0, R1, C0, C1 = region
    hit = [(p, t) for p, t in tiles if _overlap(t.core, region) is not None]
    if not hit:
        raise ValueError(f"empty region: no tile in {gene_dir} intersects region (r0, r1, c0, c1)={region}")
    num_slices = None
    parts = []
    images = None
    for path, tile in hit:
        coo = _load_gene_tile(path, tile, gene_slots)
        z_here = coo.shape[2] // gene_slots
        if num_slices is None:
            num_slices = z_here
        elif z_here != num_slices:
            raise ValueError(f"z mismatch: {path.name} holds {z_here} sections, earlier tiles {num_slices}")
        a0, a1, b0, b1 = _overlap(tile.core, region)
        r0m, _, c0m, _ = tile.stored
        sub = coo[a0 - r0m : a1 - r0m, b0 - c0m : b1 - c0m]
        parts.append((sub.coords[0] + a0 - R0, sub.coords[1] + b0 - C0, sub.coords[2], sub.data))
        if image_dir is not None:
            if images is None:
                images = np.zeros((2, num_slices, R1 - R0, C1 - C0), dtype=np.uint8)
            block = _load_image_tile(Path(image_dir) / f"{path.stem}.zip", tile, num_slices)
            images[:, :, a0 - R0 : a1 - R0, b0 - C0 : b1 - C0] = block[:, :, a0 - r0m : a1 - r0m, b0 - c0m : b1 - c0m]
    rows, cols, channel, data = (np.concatenate(x) for x in zip(*parts))
    slot_to_gene = np.full(gene_slots, -1, dtype=np.int64)
    slot_to_gene[slots] = np.arange(len(slots))
    genes = bin_transcripts(
        rows, cols, channel // gene_slots, slot_to_gene[channel % gene_slots], data,
        num_genes=len(panel), num_slices=num_slices,
        grid_shape=((R1 - R0) // gene_bin, (C1 - C0) // gene_bin), gene_bin=gene_bin,
    )
    return SpatialVolume(genes=genes, panel=panel, gene_bin=gene_bin, images=images, um_per_px=um_per_px)


def _slots_for(panel: GenePanel, slot_panel: GenePanel, gene_slots: int) -> np.ndarray:
    if len(slot_panel) > gene_slots:
        raise ValueError(f"slot_panel has {len(slot_panel)} genes, more than gene_slots={gene_slots}")
    unknown = [g for g in panel.genes if g not in slot_panel]
    if unknown:
        raise ValueError(f"read_official_tiles: unknown genes (not in the {len(slot_panel)}-slot panel): {unknown[:10]}")
    return np.array([slot_panel.index(g) for g in panel.genes], dtype=np.int64)


def _check_region(
    region: tuple[int, int, int, int] | None, tiles: list[tuple[Path, TileBounds]], gene_bin: int
) -> tuple[int, int, int, int]:
    if region is None:
        cores = np.array([t.core for _, t in tiles])
        region = (int(cores[:, 0].min()), int(cores[:, 1].max()), int(cores[:, 2].min()), int(cores[:, 3].max()))
    r0, r1, c0, c1 = (int(v) for v in region)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"empty region: (r0, r1, c0, c1)={region} has no pixels (need r1 > r0 and c1 > c0)")
    if (r1 - r0) % gene_bin or (c1 - c0) % gene_bin:
        raise ValueError(f"region (r0, r1, c0, c1)={region}: height and width must be multiples of gene_bin={gene_bin}")
    return r0, r1, c0, c1


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    r0, r1, c0, c1 = max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
    return (r0, r1, c0, c1) if r1 > r0 and c1 > c0 else None


def _load_gene_tile(path: Path, tile: TileBounds, gene_slots: int):
    import sparse

    coo = sparse.load_npz(path)
    r0m, r1m, c0m, c1m = tile.stored
    if coo.ndim != 3 or coo.shape[:2] != (r1m - r0m, c1m - c0m) or coo.shape[2] % gene_slots:
        raise ValueError(
            f"{path}: gene tile shape {coo.shape} does not match its name: expected "
            f"({r1m - r0m}, {c1m - c0m}, Z * {gene_slots})"
        )
    if coo.nnz and ((coo.data < 0).any() or not np.isfinite(coo.data).all()):
        raise ValueError(f"{path}: gene tile has negative or NaN counts")
    return coo


def _load_image_tile(path: Path, tile: TileBounds, num_slices: int) -> np.ndarray:
    import zarr

    if not path.is_file():
        raise FileNotFoundError(f"{path}: image tile missing (expected a zarr ZipStore beside the gene tile name)")
    store = zarr.storage.ZipStore(path, mode="r")
    try:
        stack = zarr.open_array(store, mode="r")[...]
    finally:
        store.close()
    r0m, r1m, c0m, c1m = tile.stored
    if stack.ndim != 3 or stack.shape[1:] != (r1m - r0m, c1m - c0m):
        raise ValueError(f"{path}: image tile shape {stack.shape}, expected (2*Z, {r1m - r0m}, {c1m - c0m})")
    if stack.shape[0] != 2 * num_slices:
        raise ValueError(
            f"z mismatch: {path} holds {stack.shape[0]} image slices, expected 2 * Z = {2 * num_slices} "
            f"(DAPI then PolyT) for the gene tile's Z={num_slices}"
        )
    if stack.dtype != np.uint8:
        raise ValueError(f"{path}: image tile dtype {stack.dtype}, expected uint8")
    return stack.reshape(2, num_slices, *stack.shape[1:])
