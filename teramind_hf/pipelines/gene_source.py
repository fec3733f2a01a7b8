"""Lazy gene input for tera-scale generation: read only the sections and bins one tile canvas needs.

A gene source is ``(G, Z, Hb, Wb)`` transcript counts binned on ``gene_bin`` px, with its gene names:

* a zarr group (v2/v3, local path or fsspec URL) holding a ``genes`` array and ``gene_names`` in its
  attributes (the layout ``teramind_hf.data.datasets.create_training_store`` writes; ``um_per_px`` and
  ``section_spacing_um`` attributes, if present, give the physical scale);
* a zarr array alone (no names: G must equal the model panel);
* an ``.npy`` file (memory-mapped; no names) or an ``.npz`` with ``genes`` and optionally ``gene_names``
  (an ``.npz`` member is loaded whole: use zarr or ``.npy`` for large inputs).

Reads are aligned to the model's panel by name with the pipeline's own ``align_genes_to_model``, so the
canvases equal those the in-memory :class:`TeraMindPipeline` builds for the same region.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .genes import align_genes_to_model, check_counts
from ..data.store import CheckedArray
from ..sampling.grid import gene_window_range


@dataclass
class GeneSource:
    """A lazily read gene array plus its panel and physical-scale metadata."""

    genes: Any  # array-like (G, Z, Hb, Wb) supporting basic slicing: zarr.Array, np.memmap, np.ndarray
    gene_names: list[str] | None
    location: str
    attrs: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(n) for n in self.genes.shape)

    @property
    def num_sections(self) -> int:
        return self.shape[1]

    def read(self, sections: tuple[int, int], bins_y: tuple[int, int], bins_x: tuple[int, int]) -> torch.Tensor:
        """Counts ``(G, sections, bins_y, bins_x)`` for in-range index ranges, as float32."""
        block = np.asarray(self.genes[:, sections[0] : sections[1], bins_y[0] : bins_y[1], bins_x[0] : bins_x[1]])
        return torch.from_numpy(block.astype(np.float32, copy=False))


def open_gene_source(location: str | Path | Any) -> GeneSource:
    """Open ``location`` (see module doc) without reading the counts."""
    if not isinstance(location, (str, Path)):
        genes = location
        if getattr(genes, "ndim", None) != 4:
            raise ValueError(f"genes must be a 4-D array (G, Z, Hb, Wb), got {type(genes).__name__}")
        return GeneSource(genes=genes, gene_names=None, location="<array>")
    text = str(location)
    is_url = "://" in text
    if not is_url and not Path(text).exists():
        raise FileNotFoundError(f"gene source not found: {text}")
    if text.endswith(".npy"):
        return GeneSource(genes=_check_4d(_load_npy(text), text), gene_names=None, location=text)
    if text.endswith(".npz"):
        with _load_npy(text) as archive:
            if "genes" not in archive:
                raise ValueError(f"{text}: .npz has no 'genes' member (found {sorted(archive.files)})")
            names = [str(n) for n in archive["gene_names"]] if "gene_names" in archive else None
            return GeneSource(genes=_check_4d(archive["genes"], text), gene_names=names, location=text)
    return _open_zarr_source(text)


def _load_npy(path: str):
    """np.load (memory-mapped .npy, or an .npz archive) without pickle; a damaged file gets an error naming it."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False) if path.endswith(".npy") else np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # bad header, truncated data, object arrays (pickle), not a zip
        raise ValueError(f"{path}: not a readable {'.npy' if path.endswith('.npy') else '.npz'} gene array ({err})") from err


def _open_zarr_source(location: str) -> GeneSource:
    import zarr

    from ..data.store import DamagedDataError, open_member, open_zarr, store_attributes

    try:
        node = open_zarr(location, "zarr store, .npy or .npz gene source")
    except DamagedDataError:
        raise
    except Exception as err:  # zarr raises several types for a path that holds no zarr store at all
        raise ValueError(f"{location}: not a zarr store, .npy or .npz gene source ({err})") from err
    if isinstance(node, zarr.Array):
        return GeneSource(genes=_check_4d(CheckedArray(node, location), location), gene_names=None, location=location)
    try:
        genes = open_member(node, "genes", location)
    except KeyError:
        raise ValueError(f"{location}: zarr group has no 'genes' array (G, Z, Hb, Wb)") from None
    attrs = store_attributes(node.attrs, location)
    names = attrs.pop("gene_names", None)
    return GeneSource(genes=_check_4d(genes, location), gene_names=names, location=location, attrs=attrs)


def _check_4d(array: Any, location: str) -> Any:
    if len(array.shape) != 4:
        raise ValueError(f"{location}: genes must be 4-D (G, Z, Hb, Wb), got shape {tuple(array.shape)}")
    return array


@dataclass
class RegionGenes:
    """The model-aligned gene canvases of one region, read lazily tile by tile.

    Outside the region the canvas holds zero counts, and sections past either end of the stack are zero,
    exactly as the in-memory pipeline pads the region's gene tensor.
    """

    source: GeneSource
    model_config: Any
    origin_bins: tuple[int, int]  # region top-left in gene bins
    size_bins: tuple[int, int]  # region height, width in gene bins
    min_gene_overlap: float = 0.5

    def __post_init__(self) -> None:
        # validates the panel once (named error on too small an overlap) before any tile is read
        probe = torch.zeros(self.source.shape[0], 1, 1, 1)
        _, self.alignment = align_genes_to_model(probe, self.source.gene_names, self.model_config, self.min_gene_overlap)

    def canvas(self, chunk_start: int, y_bins: int, x_bins: int, size_bins: int, width_bins: int | None = None) -> torch.Tensor:
        """Aligned counts ``(G_model, gene_slices, size, width)`` of the box whose top-left bin is
        ``(y_bins, x_bins)`` in region coordinates (may reach outside the region; square if no width)."""
        cfg = self.model_config
        width_bins = size_bins if width_bins is None else width_bins
        lo, hi = gene_window_range(chunk_start, cfg.num_slices, cfg.gene_slices)
        z = self.source.num_sections
        (oy, ox), (hb, wb) = self.origin_bins, self.size_bins
        y0, y1 = max(y_bins, 0), min(y_bins + size_bins, hb)
        x0, x1 = max(x_bins, 0), min(x_bins + width_bins, wb)
        z0, z1 = max(lo, 0), min(hi, z)
        block = self.source.read((z0, z1), (oy + y0, oy + y1), (ox + x0, ox + x1))
        check_counts(block, argument=f"genes in {self.source.location}")
        block, _ = align_genes_to_model(block, self.source.gene_names, cfg, self.min_gene_overlap)
        pad = (x0 - x_bins, x_bins + width_bins - x1, y0 - y_bins, y_bins + size_bins - y1, z0 - lo, hi - z1)
        return F.pad(block, pad)
