"""OME-Zarr (NGFF 0.5, zarr v3) output of generated morphology: ``c, z, y, x`` uint8 with a pyramid.

Level 0 is written tile by tile while sampling (one zarr chunk per (stain, section, tile), so processes never
write the same object); the coarser levels are 2x2 means in y, x (z is kept: sections are 100-200 um apart)
built after the last step, chunk by chunk, split across processes like the tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

STAIN_NAMES = ("DAPI", "PolyT")
NGFF_VERSION = "0.5"
from ..constants import DEFAULT_SECTION_SPACING_UM
from ..constants import MERSCOPE_UM_PER_PX as DEFAULT_UM_PER_PX


@dataclass(frozen=True)
class PhysicalScale:
    """Voxel size in micrometres and the region's offset (for the NGFF translation)."""

    um_per_px: float = DEFAULT_UM_PER_PX
    section_spacing_um: float = DEFAULT_SECTION_SPACING_UM
    origin_px: tuple[int, int, int] = (0, 0, 0)  # (first section, y0, x0) of the region in the source


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
                            y0 * scale.um_per_px + shift,
                            x0 * scale.um_per_px + shift,
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
    colors = ("0000FF", "FFFFFF")
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


def create_image(group, shape: tuple[int, int, int, int], tile_size: int, scale: PhysicalScale) -> list:
    """Create the pyramid arrays (chunks ``(1, 1, tile, tile)``) and the NGFF metadata in ``group``."""
    shapes = pyramid_shapes(shape, tile_size)
    arrays = []
    for level, level_shape in enumerate(shapes):
        arrays.append(
            group.create_array(
                str(level),
                shape=level_shape,
                chunks=(1, 1, min(tile_size, level_shape[2]), min(tile_size, level_shape[3])),
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


def level_chunks(shape: tuple[int, int, int, int], chunk: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(stain, section, chunk row, chunk col) of every chunk of a level, in raster order."""
    c, z, h, w = shape
    rows, cols = -(-h // chunk[0]), -(-w // chunk[1])
    return [(s, k, r, q) for s in range(c) for k in range(z) for r in range(rows) for q in range(cols)]


def build_level(source, target, jobs: Iterable[tuple[int, int, int, int]]) -> None:
    """Write the given chunks of ``target`` as 2x2 means of ``source`` (the next finer level)."""
    ch, cw = target.chunks[2], target.chunks[3]
    for s, k, r, q in jobs:
        y0, x0 = r * ch, q * cw
        y1, x1 = min(y0 + ch, target.shape[2]), min(x0 + cw, target.shape[3])
        fine = source[s, k, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1]
        target[s, k, y0:y1, x0:x1] = downsample_2x(fine)
