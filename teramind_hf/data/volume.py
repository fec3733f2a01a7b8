"""The common in-memory form every reader returns: a stack of tissue sections.

`SpatialVolume.genes` is `(G, Z, Hb, Wb)` float32 transcript counts summed on a grid of
`gene_bin` x `gene_bin` image pixels (the model's gene grid); `images` is `(2, Z, H, W)` uint8
(stain 0 DAPI, stain 1 PolyT) with `H = Hb * gene_bin`, or None when there are no images.
Z indexes sections (tissue slices 100-200 um apart), not confocal planes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .panel import GenePanel, apply_alignment

TRANSCRIPT_COLUMNS = ("x", "y", "z", "gene")


@dataclass
class SpatialVolume:
    """Binned gene counts (and optionally DAPI/PolyT images) of Z sections on one pixel grid."""

    genes: np.ndarray
    panel: GenePanel
    gene_bin: int = 16
    images: np.ndarray | None = None
    um_per_px: float | None = None

    def __post_init__(self) -> None:
        self.genes = np.asarray(self.genes, dtype=np.float32)
        if self.genes.ndim != 4:
            raise ValueError(f"SpatialVolume.genes must be (G, Z, Hb, Wb), got shape {self.genes.shape}")
        if self.genes.shape[0] != len(self.panel):
            raise ValueError(
                f"SpatialVolume.genes has {self.genes.shape[0]} genes on axis 0 but the panel has {len(self.panel)}"
            )
        if not np.isfinite(self.genes).all() or (self.genes < 0).any():
            raise ValueError("SpatialVolume.genes: counts must be finite and non-negative")
        if self.gene_bin < 1:
            raise ValueError(f"SpatialVolume.gene_bin must be >= 1, got {self.gene_bin}")
        if self.images is not None:
            self.images = _check_images(self.images, self.genes.shape, self.gene_bin)

    @property
    def num_slices(self) -> int:
        return int(self.genes.shape[1])

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(Hb, Wb): the gene grid size."""
        return int(self.genes.shape[2]), int(self.genes.shape[3])

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) in image pixels."""
        hb, wb = self.grid_shape
        return hb * self.gene_bin, wb * self.gene_bin

    def aligned_to(self, panel: GenePanel, **align_kwargs) -> "SpatialVolume":
        """This volume with its gene axis reordered to `panel` (missing genes are zeros)."""
        alignment = panel.align(self.panel, **align_kwargs)
        return replace(self, genes=apply_alignment(self.genes, alignment), panel=panel)


def _check_images(images: np.ndarray, genes_shape: tuple[int, ...], gene_bin: int) -> np.ndarray:
    """Validate `(2, Z, H, W)` uint8 images against the gene grid."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"SpatialVolume.images must be uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[0] != 2:
        raise ValueError(f"SpatialVolume.images must be (2, Z, H, W) (DAPI, PolyT), got shape {images.shape}")
    _, z, hb, wb = genes_shape
    if images.shape[1] != z:
        raise ValueError(f"z mismatch: genes have Z={z} slices but images have Z={images.shape[1]}")
    if images.shape[2:] != (hb * gene_bin, wb * gene_bin):
        raise ValueError(
            f"SpatialVolume.images (H, W)={images.shape[2:]} do not match the gene grid "
            f"{(hb, wb)} x gene_bin {gene_bin} = {(hb * gene_bin, wb * gene_bin)}"
        )
    return images


def check_transcripts(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate a transcripts table (x, y, z, gene [, count]); errors name `source` and the field."""
    missing = [c for c in TRANSCRIPT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; expected columns x, y, z, gene (optional count), "
            f"found {list(table.columns)}"
        )
    for col in ("x", "y", "z"):
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"{source}: column {col!r} has {int(bad.sum())} missing/non-numeric/NaN values")
    if table["gene"].isna().any():
        raise ValueError(f"{source}: column 'gene' has {int(table['gene'].isna().sum())} missing values")
    if "count" in table.columns:
        counts = pd.to_numeric(table["count"], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(counts) | (counts < 0)
        if bad.any():
            raise ValueError(
                f"{source}: column 'count' has {int(bad.sum())} negative or NaN values (expected counts >= 0)"
            )
    return table


def panel_for_transcripts(
    genes: pd.Series, panel: GenePanel | None, source: str, drop_unknown: bool
) -> tuple[GenePanel, np.ndarray]:
    """The panel to bin onto and each transcript's gene index (-1 = dropped).

    Without `panel` the data's own genes are used, sorted by name. With `panel`, transcripts of
    genes not in it raise a ValueError naming them, unless `drop_unknown` is set.
    """
    names = genes.astype(str)
    if panel is None:
        if not len(names):
            raise ValueError(f"{source}: no transcripts (no rows after the header), so no gene panel; expected at least one transcript")
        panel = GenePanel(sorted(pd.unique(names)))
    lookup = {g.upper(): i for i, g in enumerate(panel.genes)}
    codes, uniques = pd.factorize(names)
    unique_index = np.array([lookup.get(u.upper(), -1) for u in uniques], dtype=np.int64)
    unknown = [u for u, i in zip(uniques, unique_index) if i < 0]
    if unknown and not drop_unknown:
        shown = ", ".join(map(repr, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise ValueError(
            f"{source}: {len(unknown)} unknown gene(s) not in the {len(panel)}-gene panel: {shown} "
            f"(pass drop_unknown=True to ignore them)"
        )
    gene_index = unique_index[codes] if len(codes) else np.zeros(0, dtype=np.int64)
    return panel, gene_index


def bin_transcripts(
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    sections: np.ndarray,
    gene_index: np.ndarray,
    counts: np.ndarray | None,
    *,
    num_genes: int,
    num_slices: int,
    grid_shape: tuple[int, int],
    gene_bin: int,
    max_bytes: int | None = None,
    source: str = "transcripts",
) -> np.ndarray:
    """Sum transcripts into `(G, Z, Hb, Wb)` float32; pixel (r, c) falls in bin (r//bin, c//bin).

    Transcripts outside the grid, of unknown genes (index -1) or of sections outside
    `0..num_slices-1` are dropped. A grid needing more than `max_bytes` (default: the machine's memory) is
    refused before anything is allocated.
    """
    check_gene_bin(gene_bin)
    hb, wb = grid_shape
    # bincount builds the grid in float64, then the float32 copy: 12 bytes per bin while both are alive
    check_dense_size(
        (num_genes, num_slices, hb, wb), 12, f"{source}: binning on {gene_bin}-px bins (genes, sections, bins_y, bins_x)",
        max_bytes, "check that the coordinates are pixels of this image (not microns or another frame) and that no "
        "stray transcript lies far outside the tissue",
    )
    rb = np.floor(np.asarray(rows_px, dtype=np.float64) / gene_bin).astype(np.int64)
    cb = np.floor(np.asarray(cols_px, dtype=np.float64) / gene_bin).astype(np.int64)
    z = np.asarray(sections).astype(np.int64)
    g = np.asarray(gene_index, dtype=np.int64)
    keep = (rb >= 0) & (rb < hb) & (cb >= 0) & (cb < wb) & (z >= 0) & (z < num_slices) & (g >= 0)
    flat = ((g[keep] * num_slices + z[keep]) * hb + rb[keep]) * wb + cb[keep]
    weights = None if counts is None else np.asarray(counts, dtype=np.float64)[keep]
    total = num_genes * num_slices * hb * wb
    binned = np.bincount(flat, weights=weights, minlength=total)
    return binned.astype(np.float32).reshape(num_genes, num_slices, hb, wb)


def check_gene_bin(gene_bin, argument: str = "gene_bin") -> int:
    """A gene bin must be a positive whole number of pixels."""
    if isinstance(gene_bin, bool) or not isinstance(gene_bin, (int, np.integer)) or gene_bin < 1:
        raise ValueError(f"{argument} must be a positive whole number of pixels, got {gene_bin!r}")
    return int(gene_bin)


def physical_memory_bytes() -> int:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no limit known
        return 2**63


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1024 or unit == "PB":
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PB"


def check_dense_size(
    shape: tuple[int, ...], bytes_per_element: int, source: str, max_bytes: int | None = None, advice: str = ""
) -> None:
    """Refuse, before allocating, a dense array of ``shape`` that needs more than ``max_bytes`` (default: the
    machine's physical memory): far-away coordinates (wrong units, one stray point) otherwise mean a grid of
    terabytes and an out-of-memory kill instead of an error."""
    need = bytes_per_element * float(np.prod([float(s) for s in shape]))
    limit = physical_memory_bytes() if max_bytes is None else max_bytes
    if need > limit:
        what = "this machine's memory" if max_bytes is None else "the limit"
        raise ValueError(
            f"{source}: needs a dense {tuple(int(s) for s in shape)} array of {_human(need)}, more than {what} "
            f"({_human(limit)}){'; ' + advice if advice else ''}"
        )
