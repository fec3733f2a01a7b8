"""OME-Zarr (NGFF 0.5, zarr v3) output of generated morphology: ``c, z, y, x`` uint8 with a pyramid.

Level 0 is written tile by tile while sampling, one zarr chunk per (stain, section, tile). With ``shard_tiles``
the chunks are grouped into zarr v3 shards of ``(stains, 2 sections, shard_tiles x shard_tiles tiles)``: one
object per sampling work unit (a z chunk's block of tiles), so the ~12 M chunk files of a whole brain become
~190 k shard objects. zarr-python rewrites a whole shard to update one of its chunks (atomically on a local
store), and concurrent partial writes to one shard lose data, so each shard must have exactly one writer: the
process that owns the work unit. The coarser levels are 2x2 means in y, x (z is kept: sections are 100-200 um
apart) built after the last step, one write block (shard, else chunk) at a time from the matching block of
the finer level (never a whole level in memory), blocks split across processes like the work units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from ..constants import DEFAULT_SECTION_SPACING_UM, STAIN_NAMES
from ..constants import MERSCOPE_UM_PER_PX as DEFAULT_UM_PER_PX

NGFF_VERSION = "0.5"


@dataclass(frozen=True)
class PhysicalScale:
    """Voxel size in micrometres and the region's offset (for the NGFF translation)."""

    um_per_px: float = DEFAULT_UM_PER_PX
    section_spacing_um: float = DEFAULT_SECTION_SPACING_UM
    origin_px: tuple[int, int, int] = (0, 0, 0)  # (first section, y0, x0) of the region in the source
    # micrometre position (y, x) of the source's pixel (0, 0) (the gene store's `origin_um`); zeros when unknown
    origin_um: tuple[float, float] = (0.0, 0.0)


def pyramid_shapes(shape: tuple[int, int, int, int], tile_size: int) -> list[tuple[int, int, int, int]]:
    """Shapes of the levels: halve y, x while both are even and the level is larger than one tile."""
    shapes = [tuple(shape)]
    c, z, h, w = shape
    while h % 2 == 0 and w % 2 == 0 and max(h, w) > tile_size:
        h, w = h // 2, w // 2
        shapes.append((c, z, h, w))
    return shapes


def multiscales_metadata(
    shapes: list[tuple[int, int, int, int]], scale: PhysicalScale, name: str = "teramind"
) -> dict[str, Any]:
    """The ``ome`` attribute of an NGFF 0.5 image group (multiscales with physical scale, omero channels)."""
    z0, y0, x0 = scale.origin_px
    datasets = []
    for level in range(len(shapes)):
        factor = 2**level
        px = scale.um_per_px * factor
        # a level-l pixel centre sits (factor - 1) / 2 fine pixels from the first fine pixel centre
        shift = (factor - 1) / 2 * scale.um_per_px
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, scale.section_spacing_um, px, px]},
                    {
                        "type": "translation",
                        "translation": [
                            0.0,
                            z0 * scale.section_spacing_um,
                            scale.origin_um[0] + y0 * scale.um_per_px + shift,
                            scale.origin_um[1] + x0 * scale.um_per_px + shift,
                        ],
                    },
                ],
            }
        )
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    # DAPI blue, PolyT green: drawn additively (napari, neuroglancer), a white PolyT would hide the DAPI
    colors = ("0000FF", "00FF00")
    return {
        "version": NGFF_VERSION,
        "multiscales": [
            {"name": name, "axes": axes, "datasets": datasets, "type": "mean", "metadata": {"method": "2x2 mean in y, x"}}
        ],
        "omero": {
            "channels": [
                {"label": label, "color": colors[i], "active": True, "window": {"min": 0, "max": 255, "start": 0, "end": 255}}
                for i, label in enumerate(STAIN_NAMES[: shapes[0][0]])
            ],
            "rdefs": {"model": "color"},
        },
    }


def create_image(
    group, shape: tuple[int, int, int, int], tile_size: int, scale: PhysicalScale, shard_tiles: int | None = None,
    shard_slices: int = 2,
) -> list:
    """Create the pyramid arrays (chunks ``(1, 1, tile, tile)``, optionally sharded) and the NGFF metadata.

    ``shard_tiles``: shards of ``(all stains, shard_slices sections, shard_tiles * tile px, same)`` at every
    level (clipped to the level), aligned to the sampling work units (z chunks of ``shard_slices`` sections and
    blocks of ``shard_tiles x shard_tiles`` tiles). None: unsharded, one object per chunk.
    """
    if shard_tiles is not None and shard_tiles < 1:
        raise ValueError(f"shard_tiles must be >= 1 (tiles per shard side) or None, got {shard_tiles}")
    shapes = pyramid_shapes(shape, tile_size)
    arrays = []
    for level, level_shape in enumerate(shapes):
        c, z, h, w = level_shape
        chunks = (1, 1, min(tile_size, h), min(tile_size, w))
        shards = None
        if shard_tiles is not None:
            # whole chunks per shard side, no larger than the level needs
            shards = (c, min(shard_slices, z), *(min(shard_tiles, -(-n // k)) * k for n, k in zip((h, w), chunks[2:])))
        arrays.append(
            group.create_array(
                str(level),
                shape=level_shape,
                chunks=chunks,
                shards=shards,
                dtype="uint8",
                fill_value=0,
                dimension_names=("c", "z", "y", "x"),
            )
        )
    group.attrs["ome"] = multiscales_metadata(shapes, scale)
    return arrays


def downsample_2x(block: np.ndarray) -> np.ndarray:
    """2x2 mean in the last two axes of a uint8 block, rounding halves up."""
    h, w = block.shape[-2] // 2, block.shape[-1] // 2
    pairs = block.astype(np.uint16).reshape(*block.shape[:-2], h, 2, w, 2)
    return ((pairs.sum(axis=(-3, -1)) + 2) // 4).astype(np.uint8)


def write_block(array) -> tuple[int, int, int, int]:
    """The unit one writer owns: the shard of a sharded array, else the chunk."""
    return tuple(array.shards or array.chunks)


def level_blocks(array) -> list[tuple[int, int, int, int]]:
    """Index (along c, z, y, x) of every write block of a level, in raster order."""
    counts = [-(-n // b) for n, b in zip(array.shape, write_block(array))]
    return [tuple(int(i) for i in index) for index in np.ndindex(*counts)]


def build_level(source, target, jobs: Iterable[tuple[int, int, int, int]]) -> None:
    """Write the given write blocks of ``target`` as 2x2 means of ``source`` (the next finer level): each
    block is read from the matching fine region and written whole (one object write per shard)."""
    block = write_block(target)
    for index in jobs:
        (c0, c1), (z0, z1), (y0, y1), (x0, x1) = (
            (i * b, min((i + 1) * b, n)) for i, b, n in zip(index, block, target.shape)
        )
        fine = source[c0:c1, z0:z1, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1]
        target[c0:c1, z0:z1, y0:y1, x0:x1] = downsample_2x(fine)
