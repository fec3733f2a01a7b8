"""What `TeraMindPipeline.__call__` accepts besides a gene array: a `SpatialVolume` or a points DataFrame."""

from __future__ import annotations

from typing import Any

import numpy as np

POINT_GENE_COLUMNS = ("gene", "feature_name")
POINT_SECTION_COLUMNS = ("z", "section")


def as_gene_input(
    genes: Any, gene_names: list[str] | None, um_per_px: float | None, gene_bin: int, tile_size: int
) -> tuple[Any, list[str] | None]:
    """(gene array, gene names) for the pipeline.

    * a `SpatialVolume`: its binned genes (zero-padded at the bottom/right to whole tiles) and panel (its
      `gene_bin` must be the model's);
    * a points DataFrame (pandas or dask) with x, y in microns, a gene column (`gene` or `feature_name`) and a
      section column (`z` or `section`; none = one section): binned at `um_per_px` on the model's gene grid,
      from coordinate 0, on a canvas padded to whole tiles;
    * anything else is returned unchanged.
    """
    from ..data.volume import SpatialVolume

    if isinstance(genes, SpatialVolume):
        if genes.gene_bin != gene_bin:
            raise ValueError(f"the SpatialVolume has gene_bin={genes.gene_bin} px but the model's gene grid is {gene_bin} px")
        return _pad_to_tiles(genes.genes, tile_size // gene_bin), list(gene_names) if gene_names is not None else list(genes.panel.genes)
    frame = genes.compute() if hasattr(genes, "compute") and hasattr(genes, "columns") else genes
    if not hasattr(frame, "columns") or not hasattr(frame, "iloc"):
        return genes, gene_names
    volume = _bin_points(frame, um_per_px, gene_bin, tile_size)
    return volume.genes, list(volume.panel.genes)


def _pad_to_tiles(genes: np.ndarray, tile_bins: int) -> np.ndarray:
    _, _, hb, wb = genes.shape
    pad_h, pad_w = -hb % tile_bins, -wb % tile_bins
    return np.pad(genes, ((0, 0), (0, 0), (0, pad_h), (0, pad_w))) if pad_h or pad_w else genes


def _bin_points(frame, um_per_px: float | None, gene_bin: int, tile_size: int):
    from ..data.ingest.engine import DEFAULT_MAX_STORE_BYTES, check_coordinates, check_grid
    from ..data.readers.table import read_points

    if um_per_px is None:
        raise ValueError("genes is a points DataFrame: pass um_per_px (microns per image pixel of its x, y)")
    columns = list(frame.columns)
    gene_key = next((c for c in POINT_GENE_COLUMNS if c in columns), None)
    if gene_key is None or "x" not in columns or "y" not in columns:
        raise ValueError(f"points DataFrame: expected columns x, y (microns), gene or feature_name; found {columns}")
    z_key = next((c for c in POINT_SECTION_COLUMNS if c in columns), None)
    extent = []
    for axis in ("y", "x"):
        px = check_coordinates(frame[axis].to_numpy(), axis, "points DataFrame") / um_per_px
        if len(px) and px.min() < 0:
            raise ValueError(f"points DataFrame: column {axis!r} has negative coordinates (min {px.min() * um_per_px:.6g} um)")
        extent.append(max(-(-int(np.floor(px.max()) + 1) // tile_size) * tile_size, tile_size) if len(px) else tile_size)
    sections = int(frame[z_key].max()) + 1 if z_key is not None and len(frame) else 1
    check_grid((frame[gene_key].nunique(), sections, extent[0] // gene_bin, extent[1] // gene_bin),
               DEFAULT_MAX_STORE_BYTES, "points DataFrame", f"coordinates up to {extent[0]} x {extent[1]} px")
    return read_points(
        frame, gene_key=gene_key, z_key=z_key, units="um", um_per_px=um_per_px, gene_bin=gene_bin, shape=tuple(extent)
    )
