"""Seam score of a tiled generation: how much stronger intensity jumps are across tile borders than inside.

``seam_score = mean |I(p+1) - I(p)| over neighbour pairs straddling a tile border
             / mean |I(p+1) - I(p)| over neighbour pairs inside tiles``

in y and x, over all stains and sections of level 0 of an OME-Zarr output. A seamless image scores ~1;
tiles generated independently (``teramind generate --no-halo``) score higher when their contents disagree.

The score only sees jumps *across* a border. A tile generated alone fades towards the background fill on
both sides of its border (dark bands, no jump), which lowers the score; so a second number goes with it:

``band_ratio = mean intensity within `band` px of an inner tile border / mean intensity elsewhere``

(~1 without bands, < 1 for dark bands; pixels near the region's own edges are left out of both means).
Read band by band (one row of tiles at a time), so memory does not grow with the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SeamScore:
    score: float
    border_gradient: float  # mean |gradient| across tile borders
    interior_gradient: float  # mean |gradient| inside tiles
    tile_size: int
    border_pairs: int
    interior_pairs: int
    band_ratio: float  # mean intensity near inner tile borders / elsewhere (~1: no bands)
    band: int  # px on each side of a border counted as "near"


def _near_borders(length: int, tile_size: int, band: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks along one axis: within `band` px of an inner tile border, and within `band` px of the region edge."""
    position = np.arange(length)
    offset = position % tile_size
    after_border = (offset < band) & (position >= tile_size)  # a border lies `offset` px before
    before_border = (tile_size - 1 - offset < band) & (position - offset + tile_size < length)  # ... just after
    edge = (position < band) | (position >= length - band)
    return (after_border | before_border) & ~edge, edge


def _accumulate(diff: np.ndarray, border_index: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> None:
    """Add |diff| along the last axis to border (index 0) and interior (index 1) sums."""
    on_border = np.zeros(diff.shape[-1], dtype=bool)
    on_border[border_index] = True
    absdiff = np.abs(diff)
    rows = int(np.prod(diff.shape[:-1]))
    sums[0] += absdiff[..., on_border].sum(dtype=np.float64)
    sums[1] += absdiff[..., ~on_border].sum(dtype=np.float64)
    counts[0] += rows * int(on_border.sum())
    counts[1] += rows * int((~on_border).sum())


def seam_score_array(image, tile_size: int, band: int = 8) -> SeamScore:
    """Seam score and border-band ratio of a ``(..., H, W)`` array-like (zarr or numpy), read one tile row at a time."""
    height, width = image.shape[-2], image.shape[-1]
    sums, counts = np.zeros(2), np.zeros(2, dtype=np.int64)
    row_near, row_edge = _near_borders(height, tile_size, band)
    col_near, col_edge = _near_borders(width, tile_size, band)
    band_sums, band_counts = np.zeros(2), np.zeros(2, dtype=np.int64)  # [near inner borders, elsewhere]
    x_borders = np.arange(tile_size - 1, width - 1, tile_size)  # pair (x, x+1) straddles a border
    for y0 in range(0, height, tile_size):
        y1 = min(y0 + tile_size + 1, height)  # one extra row to see the border below
        strip = np.asarray(image[..., y0:y1, :]).astype(np.int16)
        inner = strip[..., : min(tile_size, height - y0), :]
        rows = slice(y0, y0 + inner.shape[-2])
        near = row_near[rows, None] | col_near[None, :]
        counted = ~(row_edge[rows, None] | col_edge[None, :])
        per_pixel = inner.reshape(-1, *inner.shape[-2:]).sum(axis=0, dtype=np.int32)  # over stains and sections
        layers = int(np.prod(inner.shape[:-2]))
        for k, where in enumerate((near & counted, ~near & counted)):
            band_sums[k] += per_pixel[where].sum(dtype=np.int64)
            band_counts[k] += layers * int(where.sum())
        _accumulate(np.diff(inner, axis=-1), x_borders, sums, counts)
        vertical = np.swapaxes(np.diff(strip, axis=-2), -1, -2)  # pairs along y on the last axis
        last = vertical.shape[-1] - 1
        border = np.array([tile_size - 1]) if y1 - y0 == tile_size + 1 else np.array([], dtype=int)
        _accumulate(vertical[..., : last + 1], border, sums, counts)
    border_mean = sums[0] / max(counts[0], 1)
    interior_mean = sums[1] / max(counts[1], 1)
    return SeamScore(
        score=float(border_mean / interior_mean) if interior_mean > 0 else float("nan"),
        border_gradient=float(border_mean),
        interior_gradient=float(interior_mean),
        tile_size=tile_size,
        border_pairs=int(counts[0]),
        interior_pairs=int(counts[1]),
        band_ratio=float((band_sums[0] / band_counts[0]) / (band_sums[1] / band_counts[1]))
        if band_counts.all() and band_sums[1] > 0
        else float("nan"),
        band=band,
    )


def seam_score(path: str, tile_size: int | None = None) -> SeamScore:
    """Seam score of level 0 of an OME-Zarr written by ``teramind generate`` (tile size from its record)."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no OME-Zarr image here") from err
    ome = group.attrs.get("ome") or {}
    multiscales = ome.get("multiscales") or group.attrs.get("multiscales")
    if not multiscales:
        raise ValueError(f"{path}: not an OME-Zarr image (no multiscales metadata)")
    if tile_size is None:
        run = (group.attrs.get("teramind") or {}).get("run") or {}
        tile_size = int(run.get("tile_size") or (run.get("scheduler_config") or {}).get("tile_size") or 256)
    return seam_score_array(group[multiscales[0]["datasets"][0]["path"]], tile_size)


