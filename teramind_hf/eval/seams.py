"""Seam score of a tiled generation: how much stronger intensity jumps are across tile borders than inside.

``seam_score = mean |I(p+1) - I(p)| over neighbour pairs straddling a tile border
             / mean |I(p+1) - I(p)| over neighbour pairs inside tiles``

in y and x, over all stains and sections of level 0 of an OME-Zarr output. A seamless image scores ~1;
tiles generated independently (``teramind generate --no-halo``) score higher when their contents disagree.

The score only sees jumps *across* a border. A tile generated alone fades towards the background fill on
both sides of its border (dark bands, no jump), which lowers the score; so a second number goes with it:

``band_ratio = mean intensity within `band` px of an inner tile border / mean intensity elsewhere``

(~1 without bands, < 1 for dark bands; pixels near the region's own edges are left out of both means).
Read band by band (one row of tiles at a time), so memory does not grow with the image. The score is the
grid-line border score of `eval.grid` at period = tile size, phase 0 (where the run's tiles lie). Next to it,
``worst_phase_score`` is the package's one border measure (:func:`.grid.worst_phase_border_score`: the worst 2-D
phase at period = tile size), the number `eval report`, the tests and the benchmarks quote.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import StepProfile, worst_phase_border_score


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
    worst_phase_score: float  # border score at the worst 2-D phase, period = tile size (eval.grid)
    worst_phases: tuple[int, int]  # (phase_y, phase_x) where it lies


def _near_borders(length: int, tile_size: int, band: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks along one axis: within `band` px of an inner tile border, and within `band` px of the region edge."""
    position = np.arange(length)
    offset = position % tile_size
    after_border = (offset < band) & (position >= tile_size)  # a border lies `offset` px before
    before_border = (tile_size - 1 - offset < band) & (position - offset + tile_size < length)  # ... just after
    edge = (position < band) | (position >= length - band)
    return (after_border | before_border) & ~edge, edge


def seam_score_array(image, tile_size: int, band: int = 8) -> SeamScore:
    """Seam score and border-band ratio of a ``(..., H, W)`` array-like (zarr or numpy), read one tile row at a time."""
    height, width = image.shape[-2], image.shape[-1]
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 2:
        raise ValueError(f"tile_size (--tile-size) must be a whole number of px >= 2, got {tile_size!r}")
    if tile_size >= height and tile_size >= width:
        raise ValueError(f"tile_size (--tile-size) {tile_size} px leaves no inner tile border in a {height} x {width} px image")
    steps = StepProfile.empty(tuple(image.shape))
    row_near, row_edge = _near_borders(height, tile_size, band)
    col_near, col_edge = _near_borders(width, tile_size, band)
    band_sums, band_counts = np.zeros(2), np.zeros(2, dtype=np.int64)  # [near inner borders, elsewhere]
    for y0 in range(0, height, tile_size):
        rows = min(tile_size, height - y0)
        strip = np.asarray(image[..., y0 : min(y0 + rows + 1, height), :])  # one extra row: the border below
        steps.add_block(strip, y0, 0, rows, width)
        inner = strip[..., :rows, :]
        rows_here = slice(y0, y0 + rows)
        near = row_near[rows_here, None] | col_near[None, :]
        counted = ~(row_edge[rows_here, None] | col_edge[None, :])
        per_pixel = inner.reshape(-1, *inner.shape[-2:]).sum(axis=0, dtype=np.float64)  # over stains and sections
        layers = int(np.prod(inner.shape[:-2]))
        for k, where in enumerate((near & counted, ~near & counted)):
            band_sums[k] += per_pixel[where].sum()
            band_counts[k] += layers * int(where.sum())
    border_sum, border_pairs, interior_sum, interior_pairs = steps.split(tile_size, 0)
    border_mean = border_sum / max(border_pairs, 1)
    interior_mean = interior_sum / max(interior_pairs, 1)
    worst_phase_score, worst_phases = worst_phase_border_score(steps, tile_size)
    return SeamScore(
        score=float(border_mean / interior_mean) if interior_mean > 0 else float("nan"),
        border_gradient=float(border_mean),
        interior_gradient=float(interior_mean),
        tile_size=tile_size,
        border_pairs=int(border_pairs),
        interior_pairs=int(interior_pairs),
        band_ratio=float((band_sums[0] / band_counts[0]) / (band_sums[1] / band_counts[1]))
        if band_counts.all() and band_sums[1] > 0
        else float("nan"),
        band=band,
        worst_phase_score=worst_phase_score,
        worst_phases=worst_phases,
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


